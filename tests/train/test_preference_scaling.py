"""Preference training (rl: dpo) with what SFT already has: QLoRA, exact resume, DDP with accumulation,
and LoRA under FSDP2 and DeepSpeed ZeRO-2/3 (a full fine-tune's frozen reference there is refused).

A tiny random Llama and synthetic chatml.intel pairs whose chosen answers share a pattern the
rejected ones lack. The resumed run and the 2-rank run are fresh processes
(`preference_worker.py`); the runs they are compared with train in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from helpers import write_config  # noqa: E402
from launch import launch_environment, torchrun  # noqa: E402

from axr.config import load_config  # noqa: E402

WORKER = Path(__file__).parent / "preference_worker.py"
WORDS = ["sky", "fruit", "cat", "dog", "tree", "car", "sun", "moon", "river", "stone", "bird", "fish"]
LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True}


def _pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"question": f"Is the {w} good?", "chosen": f"Yes, the {w} is good.", "rejected": f"No no {w} bad."}
        for w in WORDS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config_file(tmp_path: Path, name: str, model: Path, pairs: Path, tables: str = "", **keys: Any) -> Path:
    """A DPO config; ``tables`` is TOML text of tables (an engine's) placed before the datasets."""
    keys = {"rl": "dpo", "sequence_len": 128, "seed": 1, "save_strategy": "no", **keys}
    config = write_config(tmp_path / f"{name}.toml", model, tmp_path / name, **keys)
    datasets = f'[[datasets]]\npath = "{pairs}"\ntype = "chatml.intel"\n'
    config.write_text(config.read_text() + tables + datasets)
    return config


def _run(config: Path, *, processes: int = 0) -> list[dict[str, Any]]:
    """The worker on ``config`` in a fresh process (``processes`` > 0: under torchrun); each rank's record."""
    record = config.with_suffix("")
    launcher = torchrun(processes) if processes else [sys.executable]
    completed = subprocess.run(
        [*launcher, str(WORKER), str(config), str(record)],
        capture_output=True, text=True, timeout=300, env=launch_environment(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    ranks = max(processes, 1)
    return [json.loads(Path(f"{record}.rank{rank}.json").read_text()) for rank in range(ranks)]


def _in_process(config: Path) -> dict[str, Any]:
    """The worker on ``config`` in this process (rank 0 of 1)."""
    from preference_worker import run

    record = config.with_suffix("")
    run(str(config), str(record))
    result: dict[str, Any] = json.loads(Path(f"{record}.rank0.json").read_text())
    return result


def _as_pairs(sequences: list[int]) -> list[int]:
    """The pair numbers of a micro-batch's sequences; fails unless each pair (chosen, rejected) is whole."""
    assert len(sequences) % 2 == 0, sequences
    chosen, rejected = sequences[0::2], sequences[1::2]
    assert all(c % 2 == 0 and r == c + 1 for c, r in zip(chosen, rejected, strict=True)), sequences
    return [c // 2 for c in chosen]


def test_dpo_with_qlora_learns_the_preference(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """A 4-bit base (nf4, bitsandbytes on the CPU) under the LoRA policy; the reference is that base."""
    pytest.importorskip("bitsandbytes")
    config = _config_file(
        tmp_path, "qlora", tiny_llama_dir, _pairs_file(tmp_path),
        **{**LORA, "adapter": "qlora"}, load_in_4bit=True, sample_packing=True,
        micro_batch_size=3, gradient_accumulation_steps=2, max_steps=8, learning_rate=1e-2,
    )  # fmt: skip
    assert load_config(config).load_in_4bit
    got = _in_process(config)
    assert got["quantized_layers"] == 14  # 2 decoder layers x (q, k, v, o, gate, up, down)
    first, last = got["metrics"][0], got["metrics"][-1]
    # Step 1: the LoRA update is still zero, so policy = reference: every margin 0, loss log 2.
    assert (first["rewards/accuracies"], first["rewards/margins"]) == (0.0, 0.0)
    assert got["losses"][0] == pytest.approx(0.693147, abs=1e-5)
    assert got["losses"][-1] < got["losses"][0] - 0.2
    assert last["rewards/accuracies"] > 0.9
    assert last["rewards/chosen"] > last["rewards/rejected"]


def test_dpo_resumes_exactly_in_a_fresh_process(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """Packed pairs, LoRA dropout (RNG), AdamW state, a cosine schedule and gradient accumulation 2;
    checkpoint-2 is mid-epoch (3 steps an epoch) and the run goes on into the second epoch."""
    pairs = _pairs_file(tmp_path)
    keys = {
        **LORA, "lora_dropout": 0.1, "sample_packing": True, "micro_batch_size": 2,
        "gradient_accumulation_steps": 2, "max_steps": 5, "learning_rate": 5e-3, "warmup_steps": 1,
    }  # fmt: skip
    whole = _in_process(
        _config_file(tmp_path, "whole", tiny_llama_dir, pairs, **keys, save_strategy="steps", save_steps=2)
    )
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    [resumed] = _run(
        _config_file(
            tmp_path, "resumed", tiny_llama_dir, pairs, **keys, resume_from_checkpoint=str(checkpoint)
        )
    )
    assert len(resumed["losses"]) == 3
    assert resumed["losses"] == pytest.approx(whole["losses"][2:], rel=1e-6)
    assert resumed["grad_norms"] == pytest.approx(whole["grad_norms"][2:], rel=1e-5)
    # The resumed process trained on exactly the micro-batches the whole run trained on after step 2.
    assert resumed["micro_batches"] == whole["micro_batches"][4:]
    assert len(set(map(tuple, whole["micro_batches"]))) > 1


@pytest.mark.timeout(400)
def test_two_ranks_equal_one_process(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """2 gloo processes x 1 pair x accumulation 2 against 1 process x 1 pair x accumulation 4: the same
    4 pairs in every step (the padded plan deals micro-batches round-robin). Each rank's loss is the
    mean over its pairs, reduced over the ranks, so losses and gradient norms agree up to float32
    summation order (losses to 1e-6 relative, gradient norms to 1e-4, as the SFT engine tests)."""
    pairs = _pairs_file(tmp_path)
    keys = {**LORA, "sample_packing": False, "micro_batch_size": 1, "max_steps": 3, "learning_rate": 5e-3}
    single = _in_process(
        _config_file(tmp_path, "single", tiny_llama_dir, pairs, **keys, gradient_accumulation_steps=4)
    )
    ranks = _run(
        _config_file(tmp_path, "ddp", tiny_llama_dir, pairs, **keys, gradient_accumulation_steps=2),
        processes=2,
    )
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], rel=1e-6)
        assert rank["grad_norms"] == pytest.approx(single["grad_norms"], rel=1e-4)
    assert single["losses"][-1] != single["losses"][0]
    for name in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "logps/rejected"):
        assert [m[name] for m in ranks[0]["metrics"]] == pytest.approx(
            [m[name] for m in single["metrics"]], rel=1e-5, abs=1e-9
        )
    # Every micro-batch holds whole pairs; each step's pairs are split between the ranks, none shared,
    # and together they are the pairs of the 1-process step.
    for step in range(3):
        split = [
            [p for mb in rank["micro_batches"][2 * step : 2 * step + 2] for p in _as_pairs(mb)]
            for rank in ranks
        ]
        assert not set(split[0]) & set(split[1])
        whole = [p for mb in single["micro_batches"][4 * step : 4 * step + 4] for p in _as_pairs(mb)]
        assert sorted(split[0] + split[1]) == sorted(whole)


# ---- DPO under the sharding engines ------------------------------------------------------------

FSDP2 = (
    '[fsdp_config]\nauto_wrap_policy = "TRANSFORMER_BASED_WRAP"\n'
    'transformer_layer_cls_to_wrap = "LlamaDecoderLayer"\nreshard_after_forward = true\n'
)
# name: (top-level keys, tables); each run writes checkpoint-2, which the resume checks start from.
ENGINES: dict[str, tuple[dict[str, Any], str]] = {
    "fsdp2": ({"fsdp_version": 2}, FSDP2),
    "zero2": ({"deepspeed": "zero2"}, ""),
    # The reference log-probs computed once, before training, through the partitioned model.
    "zero3": ({"deepspeed": "zero3", "precompute_ref_log_probs": True}, ""),
}
ENGINE_KEYS = {**LORA, "sample_packing": False, "micro_batch_size": 1, "max_steps": 3, "learning_rate": 5e-3}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Any]:
    """The 1-process run the engines are compared with: accumulation 4, the pairs of 2 ranks x 2."""
    folder = tmp_path_factory.mktemp("dpo_one_process")
    return _in_process(
        _config_file(
            folder,
            "single",
            tiny_llama_dir,
            _pairs_file(folder),
            **ENGINE_KEYS,
            gradient_accumulation_steps=4,
        )
    )


def _engine_run(tmp_path: Path, model: Path, name: str, run_name: str, **more: Any) -> list[dict[str, Any]]:
    keys, tables = ENGINES[name]
    config = _config_file(
        tmp_path, run_name, model, _pairs_file(tmp_path), tables,
        **ENGINE_KEYS, **keys, gradient_accumulation_steps=2, save_strategy="steps", save_steps=2, **more,
    )  # fmt: skip
    return _run(config, processes=2)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(ENGINES))
def test_dpo_under_a_sharding_engine_equals_one_process(
    tmp_path: Path, tiny_llama_dir: Path, one_process: dict[str, Any], name: str
) -> None:
    """DPO with LoRA (reference = the adapter disabled, a forward through the sharded model; under
    ZeRO-3 precomputed before training) on 2 gloo processes under FSDP2, ZeRO-2 and ZeRO-3 equals
    one process on the same pairs: losses to 1e-6 relative, gradient norms to 1e-4, the step's
    metrics (over both ranks' pairs) to 1e-5. FSDP2 and ZeRO-2 then resume from their step-2
    checkpoint in a fresh launch and repeat step 3."""
    ranks = _engine_run(tmp_path, tiny_llama_dir, name, name)
    for rank in ranks:
        assert rank["losses"] == pytest.approx(one_process["losses"], rel=1e-6)
        assert rank["grad_norms"] == pytest.approx(one_process["grad_norms"], rel=1e-4)
    # The adapter learnt: the policy left the reference, so margins and losses moved off log 2.
    assert one_process["losses"][-1] != pytest.approx(0.693147, abs=1e-4)
    assert one_process["metrics"][-1]["rewards/margins"] != 0.0
    # A reward is beta times a difference of float32 log-prob sums of size ~100 (error ~1e-5 each),
    # so near-zero rewards agree to an absolute, not a relative, tolerance.
    for metric in ("rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/rejected"):
        assert [m[metric] for m in ranks[0]["metrics"]] == pytest.approx(
            [m[metric] for m in one_process["metrics"]], rel=1e-5, abs=1e-5
        )
    # The engine really ran (accelerate would silently train whole replicas on CPU otherwise).
    facts = ranks[0]
    if name == "fsdp2":
        assert facts["sharded_dtensors"] == facts["parameters"] > 0
    else:
        assert facts["dtensor_parameters"] == 0
        assert facts["zero_stage"] == int(name[-1])
        # 6 micro-batches per rank, accumulation 2: DeepSpeed stepped its optimizer once per step.
        assert facts["deepspeed_optimizer_steps"] == 3
        assert (facts["zero3_partitioned"] > 0) == (name == "zero3")
    if name == "zero3":
        return
    # A fresh launch resumed from checkpoint-2 (this engine's own files) trains step 3 as the whole run.
    checkpoint = tmp_path / name / "checkpoint-2"
    saved = {p.name for p in checkpoint.iterdir()}
    if name == "zero2":
        assert {"optimizer_0.safetensors", "optimizer_1.safetensors"} <= saved
    else:
        assert "optimizer.safetensors" in saved
    resumed = _engine_run(
        tmp_path, tiny_llama_dir, name, f"{name}_resumed", resume_from_checkpoint=str(checkpoint)
    )
    for rank in resumed:
        assert rank["losses"] == pytest.approx(ranks[0]["losses"][2:], rel=1e-6)
        assert rank["grad_norms"] == pytest.approx(ranks[0]["grad_norms"][2:], rel=1e-5)
    assert resumed[0]["metrics"][-1]["rewards/margins"] == pytest.approx(
        ranks[0]["metrics"][-1]["rewards/margins"], rel=1e-5, abs=1e-5
    )


@pytest.mark.parametrize("name", list(ENGINES))
def test_full_fine_tune_with_a_reference_under_an_engine_is_refused_at_load(
    tmp_path: Path, name: str
) -> None:
    """Without an adapter the reference is a second, frozen model that no engine shards: refused
    when the config is read (``axr validate`` too), before any model loads; what does work loads."""
    from axr.errors import ConfigError

    keys, tables = ENGINES[name]
    pairs = _pairs_file(tmp_path)
    for rl in ("dpo", "kto"):
        full = _config_file(tmp_path, f"full_{rl}", tmp_path, pairs, tables, **keys, rl=rl)
        with pytest.raises(ConfigError, match=f"rl = '{rl}' without adapter and .* not supported yet"):
            load_config(full)
    assert load_config(_config_file(tmp_path, "lora", tmp_path, pairs, tables, **keys, **LORA)).adapter
    assert load_config(_config_file(tmp_path, "orpo", tmp_path, pairs, tables, **keys, rl="orpo")).rl
