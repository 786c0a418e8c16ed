"""An Axolotl-style YAML naming model and data by hub id: preprocess, train and infer through the
loopback hub, then train again from the cache with the hub stopped and HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from axr.cli import main
from hub_support import DATASET_ID, MODEL_ID


def _yaml(tmp_path: Path) -> Path:
    path = tmp_path / "lora.yml"
    path.write_text(
        f"""base_model: {MODEL_ID}
datasets:
  - path: {DATASET_ID}
    type: alpaca
test_datasets:
  - path: {DATASET_ID}
    name: numbers_parquet
    split: test
    type: alpaca
dataset_prepared_path: {tmp_path / "prepared"}
output_dir: {tmp_path / "out"}
sequence_len: 128
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
micro_batch_size: 2
max_steps: 2
learning_rate: 0.001
save_strategy: "no"
"""
    )
    return path


@pytest.mark.slow
def test_hub_ids_preprocess_train_and_infer_online_then_offline_from_the_cache(
    fake_hub, hf_home, tmp_path, monkeypatch, capsys
):
    config = _yaml(tmp_path)
    assert main(["preprocess", str(config)]) == 0
    assert main(["train", str(config)]) == 0
    steps = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in steps if "loss" in line] == [1, 2]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    prompt = ["--prompt", "Say the number 3", "--max_new_tokens", "3", "--temperature", "0"]
    assert main(["inference", str(config), *prompt]) == 0
    assert capsys.readouterr().out.strip()
    fetched = [request.path for request in fake_hub.requests if request.method == "GET"]
    assert sum(path.endswith("/model.safetensors") for path in fetched) == 1
    assert not any(path.endswith(".bin") for path in fetched)
    assert any(path.endswith("/parquet/test-00000-of-00001.parquet") for path in fetched)

    fake_hub.stop()
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    again = tmp_path / "out-offline"
    assert main(["train", str(config), f"--output_dir={again}"]) == 0
    assert (again / "adapter_model.safetensors").is_file()
    assert len(list((tmp_path / "prepared").iterdir())) == 1, "the offline run reused the online store"

    missing = tmp_path / "missing.yml"
    missing.write_text(config.read_text().replace(f"base_model: {MODEL_ID}", "base_model: axr-test/other"))
    capsys.readouterr()
    assert main(["train", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        "axr: error: base_model: 'axr-test/other' is not in the local cache and the hub is offline"
    )
