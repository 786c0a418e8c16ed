"""`axr train CONFIG`: builds a missing store, trains on packed bins, exits 2 on config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from axr.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
ALPACA_SAMPLE = REPOSITORY / "examples" / "data" / "alpaca_sample.jsonl"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def alpaca_config(tmp_path: Path, tiny_llama_dir: Path, extra: str = "") -> Path:
    return write(
        tmp_path / "train.toml",
        f"""
base_model = "{tiny_llama_dir}"
sequence_len = 128
sample_packing = true
adapter = "lora"
lora_r = 4
lora_alpha = 8
lora_target_modules = ["q_proj", "v_proj"]
micro_batch_size = 2
max_steps = 3
learning_rate = 1e-3
val_set_size = 0.05
dataset_prepared_path = "{tmp_path / "prepared"}"
output_dir = "{tmp_path / "out"}"
{extra}
[[datasets]]
path = "{ALPACA_SAMPLE}"
type = "alpaca"
""",
    )


def test_train_builds_the_store_and_trains_on_packed_bins(tmp_path, tiny_llama_dir, capsys):
    assert main(["train", str(alpaca_config(tmp_path, tiny_llama_dir)), "--save_strategy=no"]) == 0
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").exists()
    assert (out / "tokenizer.json").exists()
    assert json.loads((out / "axr_config.json").read_text())["save_strategy"] == "no"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2, 3]
    # Packed: a micro-batch of 2 bins of 128 tokens holds many more than 2 alpaca samples' tokens.
    assert all(line["tokens"] > 2 * 60 for line in steps)
    assert [line["step"] for line in lines if "eval_loss" in line] == [3]
    assert list((tmp_path / "prepared").iterdir())  # the store was built on the way


def test_missing_base_model_exits_2_naming_the_key(tmp_path, capsys):
    config = write(
        tmp_path / "bad.toml", 'output_dir = "out"\n[[datasets]]\npath = "x.jsonl"\ntype = "alpaca"\n'
    )
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert "base_model" in error
    assert "Traceback" not in error


def test_unknown_optimizer_exits_2_naming_the_key(tmp_path, tiny_llama_dir, capsys):
    config = alpaca_config(tmp_path, tiny_llama_dir, 'optimizer = "adamw_turbo"')
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert "optimizer" in error
    assert "adamw_turbo" in error
    assert not (tmp_path / "prepared").exists()  # rejected before any work


@pytest.mark.parametrize("override", ["--lr_scheduler=log_sweep", "--flash_attention=true"])
def test_other_config_errors_exit_2(tmp_path, tiny_llama_dir, capsys, override):
    assert main(["train", str(alpaca_config(tmp_path, tiny_llama_dir)), override]) == 2
    assert override.split("=")[0].lstrip("-") in capsys.readouterr().err
