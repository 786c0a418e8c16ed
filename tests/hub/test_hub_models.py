"""Models, tokenizers and adapters by hub id, through the loopback hub into HF_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from axr.config import load_config
from axr.errors import ConfigError
from axr.testing.hub_server import HubServer
from hub_support import MODEL_ID
from train.helpers import write_config


def _fetched(hub: HubServer) -> set[str]:
    return {
        request.path.rsplit("/", 1)[-1]
        for request in hub.requests
        if request.method == "GET" and "/resolve/" in request.path
    }


def test_a_hub_model_loads_from_the_cache_with_only_the_files_it_needs(fake_hub, hf_home, tmp_path):
    from axr.data.preprocess import tokenizer_dir_for
    from axr.models.load import Precision, load_model, load_tokenizer

    config = load_config(write_config(tmp_path / "c.toml", MODEL_ID, tmp_path / "out"))  # type: ignore[arg-type]
    tokenizer_dir = tokenizer_dir_for(config)
    assert _fetched(fake_hub) >= {"tokenizer.json", "config.json"}
    assert "model.safetensors" not in _fetched(fake_hub), "preprocessing needs no weights"
    snapshots = hf_home / "hub" / "models--axr-test--tiny-llama" / "snapshots"
    assert tokenizer_dir.parent == snapshots

    tokenizer, _ = load_tokenizer(config)
    model = load_model(config, tokenizer, precision=Precision("float32", "no"), attention="eager")
    assert model.config.num_hidden_layers == 2
    assert "model.safetensors" in _fetched(fake_hub)
    assert "pytorch_model.bin" not in _fetched(fake_hub)
    assert "README.md" not in _fetched(fake_hub)
    assert (tokenizer_dir / "model.safetensors").is_file()


def test_revision_and_ignore_patterns_choose_what_is_fetched(fake_hub, hf_home, tiny_model_files, tmp_path):
    from axr.models.load import model_config_of

    config_json = json.loads(tiny_model_files["config.json"])
    older = {**config_json, "max_position_embeddings": 512}
    sha = fake_hub.add_repo(
        "model", MODEL_ID, {**tiny_model_files, "config.json": json.dumps(older).encode()}, revision="v0.1"
    )
    pinned = write_config(
        tmp_path / "c.toml",
        MODEL_ID,  # type: ignore[arg-type]
        tmp_path / "out",
        revision_of_model="v0.1",
        base_model_ignore_patterns=["tokenizer.model", "generation_config.json"],
    )
    assert model_config_of(load_config(pinned)).max_position_embeddings == 512
    snapshot = hf_home / "hub" / "models--axr-test--tiny-llama" / "snapshots" / sha
    assert (snapshot / "config.json").is_file()
    assert (snapshot / "tokenizer.json").is_file()
    assert not (snapshot / "tokenizer.model").exists()
    assert not (snapshot / "generation_config.json").exists()
    latest = write_config(tmp_path / "d.toml", MODEL_ID, tmp_path / "out")  # type: ignore[arg-type]
    assert model_config_of(load_config(latest)).max_position_embeddings == 4096


def test_pickle_only_hub_models_are_refused_without_the_opt_in(
    fake_hub, tiny_model_files, tmp_path, monkeypatch
):
    from axr.hub import model_folder

    files = {name: body for name, body in tiny_model_files.items() if not name.endswith(".safetensors")}
    fake_hub.add_repo("model", "axr-test/pickled", files)
    with pytest.raises(
        ConfigError,
        match=r"base_model: 'axr-test/pickled' has no safetensors weights on the hub.*ALLOW_PICKLE_WEIGHTS=1",
    ):
        model_folder("axr-test/pickled", "base_model", weights=True)
    assert "pytorch_model.bin" not in _fetched(fake_hub)
    monkeypatch.setenv("AXR_ALLOW_PICKLE_WEIGHTS", "1")
    folder = Path(model_folder("axr-test/pickled", "base_model", weights=True))
    assert (folder / "pytorch_model.bin").read_bytes() == b"not to be downloaded"


def test_unknown_repos_and_revisions_name_the_key(fake_hub, tmp_path):
    from axr.hub import model_folder

    with pytest.raises(ConfigError, match=r"^tokenizer_config: no hub model 'axr-test/nope'"):
        model_folder("axr-test/nope", "tokenizer_config")
    with pytest.raises(
        ConfigError, match=r"^base_model: the hub model 'axr-test/tiny-llama' has no revision 'v9'"
    ):
        model_folder(MODEL_ID, "base_model", revision="v9")


def test_a_hub_adapter_is_fetched_for_lora_model_dir(fake_hub, tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from axr.hub import adapter_folder
    from axr.testing.hub_server import files_of_folder

    adapter_dir = tmp_path / "adapter"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LoraConfig(r=2, target_modules=["q_proj"])
    )
    model.save_pretrained(adapter_dir)
    fake_hub.add_repo("model", "axr-test/tiny-lora", files_of_folder(adapter_dir))
    folder = Path(adapter_folder("axr-test/tiny-lora"))
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors"
    ).read_bytes()


def _cli(args: list[str], env_updates: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, **env_updates}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "axr.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return done, time.monotonic() - started


def test_offline_a_cached_model_works_and_an_uncached_one_fails_at_once(fake_hub, hf_home, tmp_path):
    from axr.hub import model_folder
    from axr.testing.hub_server import alpaca_rows, jsonl_bytes

    online = model_folder(MODEL_ID, "base_model", weights=True)
    fake_hub.stop()
    data = tmp_path / "rows.jsonl"
    data.write_bytes(jsonl_bytes(alpaca_rows(6)))
    offline_env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_ENDPOINT": "http://127.0.0.1:9"}

    def config(name: str, model: str) -> Path:
        path = tmp_path / name
        path.write_text(
            f'base_model = "{model}"\nsequence_len = 128\ndataset_prepared_path = "{tmp_path / "prepared"}"\n'
            f'[[datasets]]\npath = "{data}"\ntype = "alpaca"\n'
        )
        return path

    done, _ = _cli(["preprocess", str(config("cached.toml", MODEL_ID))], offline_env)
    assert done.returncode == 0, done.stderr
    failed, seconds = _cli(["preprocess", str(config("missing.toml", "axr-test/never-fetched"))], offline_env)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "axr: error: base_model: 'axr-test/never-fetched' is not in the local cache and the hub is offline"
    ]
    assert seconds < 30  # the whole CLI process: interpreter start and imports; no network retries

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        started = time.monotonic()
        assert model_folder(MODEL_ID, "base_model", weights=True) == online
        with pytest.raises(
            ConfigError, match=r"^base_model: 'axr-test/never-fetched' is not in the local cache"
        ):
            model_folder("axr-test/never-fetched", "base_model")
        assert time.monotonic() - started < 5
    finally:
        del os.environ["HF_HUB_OFFLINE"]
