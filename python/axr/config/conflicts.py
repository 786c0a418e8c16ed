"""Rules between keys: pairs that cannot be set together, keys that need another.

The rules read plain mappings so they run both on a validated model's dump and
on the raw file contents: when some key has a type error the model cannot be
built, yet the user still gets every conflict in the same report.
Each message names every key involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _is_set(values: Mapping[str, Any], key: str) -> bool:
    value = values.get(key)
    return value is not None and value != "" and value != []


def _is_true(values: Mapping[str, Any], key: str) -> bool:
    return values.get(key) is True


def _number(values: Mapping[str, Any], key: str) -> float | None:
    value = values.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _exclusive(values: Mapping[str, Any], first: str, second: str, why: str) -> list[str]:
    if _is_set(values, first) and _is_set(values, second):
        return [f"{first} and {second} are both set: {why}"]
    return []


def _shard_pair(values: Mapping[str, Any], count_key: str, index_key: str) -> list[str]:
    count, index = _number(values, count_key), _number(values, index_key)
    if index is not None and count is None:
        return [f"{index_key} is set without {count_key}: give the number of shards too"]
    if index is not None and count is not None and index >= count:
        return [f"{index_key} ({index:g}) must be less than {count_key} ({count:g})"]
    return []


def top_level_conflicts(values: Mapping[str, Any]) -> list[str]:
    """Every conflict between top-level keys, one message each."""
    problems: list[str] = []
    problems += _exclusive(values, "warmup_steps", "warmup_ratio", "set one of them")
    problems += _exclusive(values, "eval_steps", "evals_per_epoch", "set one of them")
    problems += _exclusive(values, "save_steps", "saves_per_epoch", "set one of them")
    problems += _exclusive(values, "fsdp", "deepspeed", "use one distributed engine")
    problems += _exclusive(values, "fsdp_config", "deepspeed", "use one distributed engine")
    problems += _exclusive(values, "fsdp_version", "deepspeed", "use one distributed engine")
    val_set_size = _number(values, "val_set_size")
    if _is_set(values, "test_datasets") and val_set_size is not None and val_set_size > 0:
        problems.append(
            "test_datasets and val_set_size > 0 are both set: evaluate on test_datasets or on a "
            "val_set_size split of datasets, not both"
        )
    if val_set_size is not None and val_set_size >= 1 and not val_set_size.is_integer():
        problems.append(
            f"val_set_size ({val_set_size:g}) is 1 or more, so it counts rows and must be a whole number"
        )
    if _is_true(values, "load_in_4bit") and _is_true(values, "load_in_8bit"):
        problems.append("load_in_4bit and load_in_8bit are both true: choose one quantization")
    adapter = values.get("adapter")
    if adapter == "qlora" and not _is_true(values, "load_in_4bit"):
        problems.append('adapter = "qlora" needs load_in_4bit = true (QLoRA trains on a 4-bit base model)')
    if _is_set(values, "relora_steps"):
        if adapter not in ("lora", "qlora"):
            problems.append('relora_steps is set without adapter: ReLoRA needs adapter = "lora" or "qlora"')
        for engine in ("fsdp", "deepspeed"):
            if _is_set(values, engine):
                problems.append(f"relora_steps and {engine} are both set: ReLoRA does not support {engine}")
    bf16 = values.get("bf16")
    if (bf16 is True or bf16 == "full") and _is_true(values, "fp16"):
        problems.append('bf16 and fp16 are both true: choose one mixed precision (or bf16 = "auto")')
    if _is_true(values, "bfloat16") and _is_true(values, "float16"):
        problems.append("bfloat16 and float16 are both true: choose one model dtype")
    if values.get("chat_template") == "jinja" and not _is_set(values, "chat_template_jinja"):
        problems.append('chat_template = "jinja" needs chat_template_jinja (the template text or its path)')
    problems += _shard_pair(values, "dataset_shard_num", "dataset_shard_idx")
    problems += _pretraining_conflicts(values)
    problems += _split_conflicts(values)
    problems += _frozen_reference_conflicts(values)
    return problems


# The rl methods whose loss reads a reference model's log-probs.
REFERENCE_METHODS = ("dpo", "ipo", "kto")


def _frozen_reference_conflicts(values: Mapping[str, Any]) -> list[str]:
    """A full fine-tune's reference is a second, frozen copy of the base model, loaded beside the
    engine: FSDP and ZeRO-3 would not shard it (each rank would hold it whole), ZeRO-3's load would
    partition it with no engine to gather it, and no engine's mixed precision would apply to it."""
    if values.get("rl") not in REFERENCE_METHODS or _is_set(values, "adapter"):
        return []
    engines = [key for key in ("fsdp", "fsdp_config", "deepspeed") if _is_set(values, key)]
    if not engines:
        return []
    return [
        f"rl = {values['rl']!r} without adapter and {engines[0]} are both set: a full fine-tune's frozen "
        f"reference model under {'DeepSpeed' if engines[0] == 'deepspeed' else 'FSDP'} is not supported "
        'yet; use adapter = "lora" or "qlora" (the reference is the adapter disabled), rl = "orpo" or '
        '"simpo" (no reference), or DDP'
    ]


# Dataset types whose long documents can be cut into sequence_len chunks (plain text).
SPLITTABLE_TYPES = ("completion", "pretrain")


def _pretraining_conflicts(values: Mapping[str, Any]) -> list[str]:
    joined = values.get("pretrain_multipack_attn") is False
    if joined and not (_is_set(values, "pretraining_dataset") and _is_true(values, "sample_packing")):
        # Axolotl reads it only where pre-training rows are packed; elsewhere it would change nothing.
        return [
            "pretrain_multipack_attn = false applies to packed pre-training rows: it needs "
            "pretraining_dataset and sample_packing = true"
        ]
    if not _is_set(values, "pretraining_dataset"):
        return []
    problems = []
    if not _is_set(values, "max_steps"):
        problems.append(
            "pretraining_dataset needs max_steps: a pre-training stream has no known length, so the "
            "number of optimizer steps must be given (as Axolotl requires)"
        )
    problems += _exclusive(
        values, "datasets", "pretraining_dataset", "Axolotl trains on pretraining_dataset alone; use one"
    )
    return problems


def _split_conflicts(values: Mapping[str, Any]) -> list[str]:
    if values.get("excess_length_strategy") != "split":
        return []
    problems = []
    for list_key in ("datasets", "test_datasets"):
        entries = values.get(list_key)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            kind = entry.get("type") if isinstance(entry, Mapping) else None
            if kind not in SPLITTABLE_TYPES:
                problems.append(
                    f'excess_length_strategy = "split" applies to completion data only, and '
                    f"{list_key}[{index}] is of type {kind!r}: a chunk would start inside a turn or a "
                    "prompt; use drop or truncate"
                )
    return problems


def dataset_conflicts(values: Mapping[str, Any]) -> list[str]:
    """Every conflict between the keys of one dataset entry, one message each."""
    problems: list[str] = []
    problems += _shard_pair(values, "shards", "shards_idx")
    problems += _shard_pair(values, "dataset_shard_num", "dataset_shard_idx")
    if values.get("chat_template") == "jinja" and not _is_set(values, "chat_template_jinja"):
        problems.append('chat_template = "jinja" needs chat_template_jinja (the template text or its path)')
    return problems
