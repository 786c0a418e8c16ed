"""Corrupt or non-finite training state: clear errors naming the file or step, never a NaN model,
a metrics.jsonl that is strict JSON with every step once, and auto-resume past a damaged checkpoint."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import InMemoryDataset, random_rows, train_cli_resuming, write_config
from safetensors.torch import load_file, save_file

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.checkpoint import verify_checkpoint, write_manifest
from axr.train.health import NonFiniteError, check_step
from axr.train.loop import TrainingData, train
from axr.train.progress import Progress, metrics_line, truncate_metrics
from axr.train.state_file import load_state, save_state

KEYS = {
    "adapter": "lora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_target_linear": True,
    "micro_batch_size": 2,
    "max_steps": 3,
    "save_steps": 1,
    "learning_rate": 1e-3,
    "sample_packing": False,
}


def _strict(text: str) -> list[dict]:
    """Every line parsed as strict JSON (bare NaN/Infinity refused)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.jsonl holds bare {constant}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _steps(output_dir: Path) -> list[int]:
    return [record["step"] for record in _strict((output_dir / "metrics.jsonl").read_text())]


def _train(tmp_path, tiny_llama_dir, output_dir, **keys):
    keys = {**KEYS, **keys}
    config = load_config(
        write_config(tmp_path / f"{output_dir.name}.toml", tiny_llama_dir, output_dir, **keys)
    )
    return train(config, data=TrainingData(InMemoryDataset(random_rows(8))))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama_dir):
    """A finished 3-step LoRA run with checkpoint-1 and checkpoint-2."""
    tmp_path = tmp_path_factory.mktemp("run")
    result = _train(tmp_path, tiny_llama_dir, tmp_path / "run")
    return result.output_dir


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def test_a_checkpoint_carries_a_manifest_of_every_file(run):
    folder = run / "checkpoint-2"
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {path.name for path in folder.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert _steps(run) == [1, 2, 3]


def test_nan_weights_in_a_checkpoint_stop_the_resumed_run(tmp_path, tiny_llama_dir, run):
    planted = _copy(run / "checkpoint-1", tmp_path, "planted")
    weights = load_file(str(planted / "adapter_model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(planted / "adapter_model.safetensors"))
    write_manifest(planted)  # as if it had been saved that way: the manifest agrees, the values do not
    output = tmp_path / "resumed"
    with pytest.raises(
        ConfigError, match=rf"planted/adapter_model\.safetensors holds NaN or infinite values in {name}"
    ):
        _train(tmp_path, tiny_llama_dir, output, resume_from_checkpoint=str(planted))
    assert not (output / "adapter_model.safetensors").exists()


def _nan_moments(run: Path, tmp_path: Path) -> Path:
    """checkpoint-1 with NaN Adam moments: the loss of the next step is finite, its update is not."""
    planted = _copy(run / "checkpoint-1", tmp_path, "planted")
    state = load_state(planted / "optimizer.safetensors")
    for entry in state["state"].values():
        entry["exp_avg"].fill_(float("nan"))
    save_state(state, planted / "optimizer.safetensors")
    write_manifest(planted)
    return planted


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        # step 2 writes NaN into the weights; step 3's loss is NaN and stops the run
        ({"save_strategy": "no"}, r"training stopped at step 3: non-finite loss nan and gradient norm nan\."),
        # the checkpoint after step 2 would hold NaN weights
        ({}, r"step 2: \d+ trainable weight tensor\(s\) hold NaN .* the checkpoint was not saved"),
        # step 2 is the last: the final model would hold NaN weights
        (
            {"max_steps": 2},
            r"step 2: \d+ trainable weight tensor\(s\) hold NaN .* the final model was not saved",
        ),
    ],
    ids=["loss", "checkpoint", "final-model"],
)
def test_non_finite_training_stops_and_saves_no_nan_model(tmp_path, tiny_llama_dir, run, keys, message):
    planted = _nan_moments(run, tmp_path)
    output = tmp_path / "resumed"
    with pytest.raises(NonFiniteError, match=message):
        _train(tmp_path, tiny_llama_dir, output, resume_from_checkpoint=str(planted), **keys)
    assert not (output / "adapter_model.safetensors").exists()
    assert not list(output.glob("checkpoint-*"))
    records = _strict((output / "metrics.jsonl").read_text())
    assert records[0]["step"] == 2
    assert math.isfinite(records[0]["loss"])
    if "save_strategy" in keys:
        assert records[-1]["step"] == 3
        assert records[-1]["loss"] is None
        assert records[-1]["nonfinite"] == ["loss", "grad_norm"]


def test_a_truncated_checkpoint_file_is_an_error_naming_it_through_the_cli(tmp_path, tiny_llama_dir, run):
    planted = _copy(run / "checkpoint-1", tmp_path, "planted")
    weights = planted / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = train_cli_resuming(tmp_path, tiny_llama_dir, planted, **KEYS)
    assert done.returncode == 2, done.stderr
    assert f"resume_from_checkpoint: {weights} has 1000 bytes" in done.stderr
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("target", ["adapter_model.safetensors", "optimizer.safetensors"])
def test_a_truncated_file_under_a_matching_manifest_is_named(tmp_path, tiny_llama_dir, run, target):
    planted = _copy(run / "checkpoint-1", tmp_path, "planted")
    (planted / target).write_bytes((planted / target).read_bytes()[:1000])
    write_manifest(planted)
    with pytest.raises(ConfigError, match=rf"planted/{target} is not a readable safetensors file"):
        _train(tmp_path, tiny_llama_dir, tmp_path / "out", resume_from_checkpoint=str(planted))


def test_auto_resume_falls_back_past_a_corrupt_newest_checkpoint(tmp_path, tiny_llama_dir, run, capfd):
    copy = _copy(run, tmp_path)
    damaged = copy / "checkpoint-2" / "optimizer.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    # The same checkpoint named explicitly is an error, not a fallback.
    with pytest.raises(ConfigError, match=r"checkpoint-2/optimizer\.safetensors does not match the sha256"):
        _train(tmp_path, tiny_llama_dir, tmp_path / "out", resume_from_checkpoint=str(copy / "checkpoint-2"))

    result = _train(tmp_path, tiny_llama_dir, copy, auto_resume_from_checkpoints=True)
    err = capfd.readouterr().err
    assert f"axr: warning: skipping checkpoint {copy / 'checkpoint-2'}: " in err
    assert "optimizer.safetensors does not match the sha256" in err
    assert "resuming at step 1" in err
    assert len(result.losses) == 2  # steps 2 and 3
    assert _steps(copy) == [1, 2, 3]


def test_resume_after_a_kill_during_a_checkpoint_write_lists_each_step_once(tmp_path, tiny_llama_dir, run):
    copy = _copy(run, tmp_path)
    # Killed while writing checkpoint-2: its staging folder lacks the manifest, metrics.jsonl has run ahead
    # of the last checkpoint and ends in a torn line.
    shutil.rmtree(copy / "checkpoint-2")
    staging = _copy(run / "checkpoint-2", copy, "checkpoint-2.tmp")
    (staging / "manifest.json").unlink()
    with (copy / "metrics.jsonl").open("a") as stream:
        stream.write('{"step": 4, "loss": 1.2, "lr"')
    (copy / "adapter_model.safetensors").unlink()
    result = _train(tmp_path, tiny_llama_dir, copy, auto_resume_from_checkpoints=True)
    assert len(result.losses) == 2
    assert _steps(copy) == [1, 2, 3]
    assert (copy / "checkpoint-2" / "manifest.json").exists()
    assert not staging.exists()
    assert (copy / "adapter_model.safetensors").exists()


def test_metrics_lines_are_strict_json(tmp_path):
    line = metrics_line({"step": 7, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-3})
    assert _strict(line) == [
        {"step": 7, "loss": None, "grad_norm": None, "lr": 1e-3, "nonfinite": ["loss", "grad_norm"]}
    ]
    # An older axr's bare NaN, a later step and a torn line: cut back to step 2, NaN made strict.
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": NaN}\n{"step": 3, "loss": 1.0}\n{"step": 4, "lo'
    )
    truncate_metrics(path, 2)
    assert _strict(path.read_text()) == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": None, "nonfinite": ["loss"]},
    ]
    truncate_metrics(path, 0)  # a fresh run starts the file empty
    assert path.read_text() == ""


def test_an_infinite_gradient_norm_stops_training_unless_the_loss_scaler_skips_it(tmp_path):
    record = {"step": 5, "loss": 1.5, "grad_norm": float("inf")}
    progress = Progress(total_steps=9, initial_step=4, metrics_path=tmp_path / "metrics.jsonl", enabled=True)
    # fp16: the GradScaler skips a step whose gradients overflowed and lowers its scale; not an error.
    check_step(record, progress, loss_scaling=True)
    assert not (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(NonFiniteError, match=r"training stopped at step 5: non-finite gradient norm inf\. "):
        check_step(record, progress, loss_scaling=False)
    # The stopping step is on file even when logging_steps would have skipped it.
    assert _strict((tmp_path / "metrics.jsonl").read_text()) == [
        {"step": 5, "loss": 1.5, "grad_norm": None, "nonfinite": ["grad_norm"]}
    ]


def test_the_manifest_catches_added_missing_and_misdescribed_files(tmp_path, run):
    folder = _copy(run / "checkpoint-1", tmp_path, "planted")
    verify_checkpoint(folder)
    (folder / "notes.txt").write_text("added later")
    with pytest.raises(ConfigError, match=r"planted/notes\.txt is not in the checkpoint's manifest\.json"):
        verify_checkpoint(folder)
    (folder / "notes.txt").unlink()
    (folder / "scheduler.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"planted/scheduler\.safetensors is missing \(listed in"):
        verify_checkpoint(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["../../outside"] = {"bytes": 1, "sha256": "0"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ConfigError, match=r"manifest\.json is damaged \('\.\./\.\./outside' is not a path inside"
    ):
        verify_checkpoint(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"planted has no manifest\.json"):
        verify_checkpoint(folder)
