"""Before the schema sees a config: blanks removed, old spellings renamed, ledger-only keys set aside.

* **Blank = unset.** A YAML ``key:`` with nothing after it (None) is dropped at every level
  (top level, ``datasets`` entries, nested tables), so the key's default applies, as in
  Axolotl. TOML has no null: an empty string is a blank for keys whose value cannot be a
  string, and for the keys that always read it so (``adapter``, ``bf16``, a dataset's ``type``).
* **Aliases.** Old spellings (``model_config``, ``dataset_processes``, ``flash_attention: true``,
  FSDP1's ``fsdp_``-prefixed ``fsdp_config`` keys, ...) become the key they mean, with one note
  naming the new key; both spellings set at once is an error.
* **Ledger-only keys** (Axolotl keys axr accepts by name, without a typed field) are checked by
  the ledger and removed before the schema validates the rest.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from axr.config import ledger
from axr.config.schema import AxrConfig, DatasetConfig

# Tables inside the config that are schema models (their keys are schema keys).
_NESTED_TABLES = {"special_tokens", "bnb_config_kwargs", "fsdp_config", "peft"}
_DATASET_LISTS = ("datasets", "test_datasets", "pretraining_dataset")


@dataclass
class Normalized:
    """A config table ready for the schema, and what was found on the way."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    set_aside: dict[str, Any] = field(default_factory=dict)
    """Ledger-only keys that were set (by their path), for ``--explain``."""


def _accepts_str(model: type[BaseModel], key: str) -> bool:
    annotation = model.model_fields[key].annotation
    return _mentions_str(annotation)


def _mentions_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(value, str) and value != "" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_mentions_str(arg) for arg in typing.get_args(annotation))
    return False


def _is_blank(model: type[BaseModel] | None, key: str, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str) and value.strip() == "":
        return model is None or key not in model.model_fields or not _accepts_str(model, key)
    return False


def drop_blanks(table: Mapping[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """``table`` without blank values, at every level the schema models."""
    result: dict[str, Any] = {}
    for key, value in table.items():
        if _is_blank(model, key, value):
            continue
        if model is AxrConfig and key in _NESTED_TABLES and isinstance(value, Mapping):
            nested: type[BaseModel] | None = _nested_model(key)
            value = drop_blanks(value, nested)
            if key == "peft" and isinstance(value.get("loftq_config"), Mapping):
                value["loftq_config"] = drop_blanks(value["loftq_config"], None)
        elif model is AxrConfig and key in _DATASET_LISTS and isinstance(value, list):
            value = [
                drop_blanks(entry, DatasetConfig) if isinstance(entry, Mapping) else entry for entry in value
            ]
        elif model is DatasetConfig and key == "type" and isinstance(value, Mapping):
            value = drop_blanks(value, None)
        result[key] = value
    return result


def _nested_model(key: str) -> type[BaseModel] | None:
    annotation = AxrConfig.model_fields[key].annotation
    for member in typing.get_args(annotation) or (annotation,):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _rename(data: dict[str, Any], old: str, new: str, prefix: str, out: Normalized) -> None:
    if old not in data:
        return
    value = data.pop(old)
    if new in data:
        out.problems.append(
            f"{prefix}{old} and {prefix}{new} are both set: {old} is the old name of {new}; keep only {new}"
        )
        return
    data[new] = value
    out.notes.append(f"{prefix}{old}: old name of {prefix}{new}; read as {new}")


def _attention_flags(data: dict[str, Any], out: Normalized) -> None:
    chosen: tuple[str, str] | None = None
    for flag, implementation in ledger.ATTENTION_FLAGS.items():
        if flag not in data:
            continue
        value = data.pop(flag)
        if value is True and chosen is None:
            chosen = (flag, implementation)
    if chosen is None:
        return
    flag, implementation = chosen
    if "attn_implementation" in data:
        out.problems.append(
            f"{flag} and attn_implementation are both set: {flag} is the old spelling of "
            f"attn_implementation = {implementation!r}; keep only attn_implementation"
        )
        return
    data["attn_implementation"] = implementation
    out.notes.append(f"{flag}: old spelling of attn_implementation: {implementation}; read as that")


def _fsdp_config(table: dict[str, Any], out: Normalized) -> dict[str, Any]:
    result = dict(table)
    if "version" in result:
        _rename(result, "version", "fsdp_version", "fsdp_config.", out)
    for key in list(result):
        if key.startswith("fsdp_") and key != "fsdp_version" and key[5:] in ledger.FSDP_KEYS:
            _rename(result, key, key[5:], "fsdp_config.", out)
    return result


def _split_dataset_entry(entry: dict[str, Any], prefix: str, out: Normalized) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ledger.DATASET_ENTRY and key not in DatasetConfig.model_fields:
            out.set_aside[prefix + key] = value
            continue
        if key == "type" and isinstance(value, Mapping):
            table: dict[str, Any] = {}
            for inner, inner_value in value.items():
                if inner in ledger.DATASET_ENTRY and inner not in DatasetConfig.model_fields:
                    out.set_aside[f"{prefix}type.{inner}"] = inner_value
                else:
                    table[inner] = inner_value
            value = table
        kept[key] = value
    return kept


def normalize(raw: Mapping[str, Any]) -> Normalized:
    """Blanks dropped, aliases applied, ledger-only keys set aside (see the module docstring)."""
    out = Normalized(data={})
    data = drop_blanks(raw, AxrConfig)
    for old, new in ledger.ALIASES.items():
        _rename(data, old, new, "", out)
    _attention_flags(data, out)
    if data.get("gradient_checkpointing") in ("offload", "offload_disk"):
        offload = data.pop("gradient_checkpointing")
        data["gradient_checkpointing"] = True
        data.setdefault("activation_offloading", True if offload == "offload" else "disk")
        out.notes.append(
            f"gradient_checkpointing: {offload!r} is the old spelling of gradient_checkpointing = true "
            "with activation_offloading; read as that"
        )
    if data.get("flash_attn_d512") is True:
        data.pop("flash_attn_d512")
        data.setdefault("large_head_attention", "auto")
        out.notes.append("flash_attn_d512: old spelling of large_head_attention: auto; read as that")
    else:
        data.pop("flash_attn_d512", None)
    gc_steps = data.pop("gc_steps", None)
    if gc_steps is not None and "torch_empty_cache_steps" not in data and "gc_collect_steps" not in data:
        if isinstance(gc_steps, int) and gc_steps > 0:
            data["torch_empty_cache_steps"] = gc_steps
        data["gc_collect_steps"] = gc_steps
        out.notes.append("gc_steps: old name of torch_empty_cache_steps and gc_collect_steps; read as both")
    if data.get("wandb_run_id") and not data.get("wandb_name"):
        # Axolotl names the run after its id when no name is given.
        data["wandb_name"] = data["wandb_run_id"]
    if isinstance(data.get("fsdp_config"), Mapping):
        data["fsdp_config"] = _fsdp_config(dict(data["fsdp_config"]), out)
    for list_key in _DATASET_LISTS:
        entries = data.get(list_key)
        if isinstance(entries, list):
            data[list_key] = [
                _split_dataset_entry(dict(entry), f"{list_key}[{index}].", out)
                if isinstance(entry, Mapping)
                else entry
                for index, entry in enumerate(entries)
            ]
    for key in list(data):
        if key in ledger.TOP_LEVEL and key not in AxrConfig.model_fields:
            out.set_aside[key] = data.pop(key)
    out.data = data
    return out
