"""``hub_model_id`` + ``hub_strategy``: what training uploads, checked on the loopback hub's side."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr.cli import main
from axr.config import load_config
from axr.errors import ConfigError
from axr.testing.hub_server import alpaca_rows, jsonl_bytes
from axr.train.push import HubPush


def _config(tmp_path: Path, model: Path, extra: str) -> Path:
    data = tmp_path / "rows.jsonl"
    data.write_bytes(jsonl_bytes(alpaca_rows(24)))
    path = tmp_path / "push.yml"
    path.write_text(
        f"""base_model: {model}
datasets:
  - path: {data}
    type: alpaca
dataset_prepared_path: {tmp_path / "prepared"}
output_dir: {tmp_path / "out"}
sequence_len: 128
adapter: lora
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
micro_batch_size: 2
max_steps: 4
save_steps: 2
learning_rate: 0.001
hub_model_id: axr-test/pushed
{extra}
"""
    )
    return path


@pytest.mark.slow
def test_hub_strategy_checkpoint_pushes_the_model_at_each_save_and_the_last_checkpoint(
    fake_hub, tmp_path, tiny_llama_dir
):
    assert main(["train", str(_config(tmp_path, tiny_llama_dir, "hub_strategy: checkpoint"))]) == 0
    repo = fake_hub.repos[("model", "axr-test/pushed")]
    assert repo.private
    commits = [(commit.summary, commit.files) for commit in fake_hub.commits]
    assert [summary for summary, _ in commits] == [
        "Training in progress, step 2",
        "Checkpoint at step 2",
        "End of training, step 4",
    ]
    model_files = {"adapter_model.safetensors", "adapter_config.json"}
    assert model_files <= set(commits[0][1])
    assert not any("optimizer" in name or "trainer_state" in name for name in commits[0][1])
    assert all(name.startswith("last-checkpoint/") for name in commits[1][1])
    assert any("optimizer" in name for name in commits[1][1]), "a whole checkpoint, to resume from"
    assert model_files | {"tokenizer.json", "axr_config.json"} <= set(commits[2][1])
    assert not any(name.startswith("checkpoint-") for name in commits[2][1])
    final = (tmp_path / "out" / "adapter_model.safetensors").read_bytes()
    assert repo.revisions["main"].files["adapter_model.safetensors"] == final


@pytest.mark.slow
def test_hub_strategy_end_pushes_once(fake_hub, tmp_path, tiny_llama_dir):
    assert main(["train", str(_config(tmp_path, tiny_llama_dir, "hub_strategy: end"))]) == 0
    assert [commit.summary for commit in fake_hub.commits] == ["End of training, step 4"]


def test_push_settings_are_checked_before_training(fake_hub, tmp_path, tiny_llama_dir, monkeypatch):
    bad = load_config(_config(tmp_path, tiny_llama_dir, "hub_strategy: sometimes"))
    with pytest.raises(ConfigError, match=r"^hub_strategy: 'sometimes' is not one of end, every_save"):
        HubPush.for_config(bad, main_process=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_config(_config(tmp_path, tiny_llama_dir, ""))
    with pytest.raises(
        ConfigError, match=r"^hub_model_id: cannot push to 'axr-test/pushed', the hub is offline"
    ):
        HubPush.for_config(offline, main_process=True)
    assert fake_hub.commits == []


def test_push_dataset_to_hub_uploads_the_store_once_and_a_fresh_machine_downloads_it(
    fake_hub, tmp_path, mistral_tokenizer_dir, capsys
):
    import shutil

    from axr.data.preprocess import preprocess

    data = tmp_path / "rows.jsonl"
    data.write_bytes(jsonl_bytes(alpaca_rows(10)))
    path = tmp_path / "store.yml"
    path.write_text(
        f"base_model: {mistral_tokenizer_dir}\nsequence_len: 128\n"
        f"dataset_prepared_path: {tmp_path / 'prepared'}\n"
        f"datasets:\n  - path: {data}\n    type: alpaca\n"
        "push_dataset_to_hub: axr-test/prepared-alpaca\n"
    )
    built = preprocess(load_config(path), progress=False)
    repo = fake_hub.repos[("dataset", "axr-test/prepared-alpaca")]
    assert repo.private
    assert [commit.summary for commit in fake_hub.commits] == [f"axr prepared dataset {built.fingerprint}"]
    pushed = fake_hub.commits[0].files
    assert f"{built.fingerprint}/train/meta.json" in pushed
    local = {
        f"{built.fingerprint}/{file.relative_to(built.root).as_posix()}": file.read_bytes()
        for file in built.root.rglob("*")
        if file.is_file()
    }
    assert set(local) == set(pushed)
    assert all(repo.revisions["main"].files[name] == body for name, body in local.items())
    assert "pushed to the hub dataset axr-test/prepared-alpaca" in capsys.readouterr().err

    assert preprocess(load_config(path), progress=False).reused
    assert len(fake_hub.commits) == 1, "a fingerprint already on the hub is not pushed again"

    shutil.rmtree(tmp_path / "prepared")
    fresh = preprocess(load_config(path), progress=False)
    assert "downloaded from the hub dataset axr-test/prepared-alpaca" in capsys.readouterr().err
    assert fresh.reused, "the downloaded store is reused, not rebuilt"
    assert fresh.fingerprint == built.fingerprint
    assert (fresh.stores["train"] / "meta.json").read_bytes() == local[f"{built.fingerprint}/train/meta.json"]
    assert len(fake_hub.commits) == 1
