"""GGUF files as base_model: where they resolve, the errors, and (slow) the conversion itself with the
real SmolLM2 file: a plain folder that plain transformers and the native data path load, made once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axr.config import load_config
from axr.errors import ConfigError
from axr.hub import model_source
from axr.models.gguf import MARKER, cache_root, file_digest, model_dir


def config_with(tmp_path: Path, **keys: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("".join(f'{key} = "{value}"\n' for key, value in keys.items()))
    return path


def test_a_plain_folder_or_hub_id_is_left_alone(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert model_dir(str(tmp_path / "model")) == str(tmp_path / "model")
    assert model_dir("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_errors_name_the_key_and_the_files_there(tmp_path):
    with pytest.raises(ConfigError, match=r"base_model: the GGUF file '.*missing\.gguf' does not exist"):
        model_dir(str(tmp_path / "missing.gguf"))
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "a.Q4_0.gguf").write_bytes(b"")
    (folder / "b.Q8_0.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"base_model: .*downloads has no config.json but holds GGUF files "
                       r"\(GGUF files there: a\.Q4_0\.gguf, b\.Q8_0\.gguf\); set base_model to the file, "
                       r"or gguf_file to its name"):  # fmt: skip
        model_dir(str(folder))
    with pytest.raises(
        ConfigError, match=r"gguf_file: .*downloads/c\.gguf does not exist \(GGUF files there"
    ):
        model_dir(str(folder), gguf_file="c.gguf")
    with pytest.raises(
        ConfigError, match=r"gguf_file: base_model must be the local folder holding 'a\.gguf'"
    ):
        model_dir(str(folder / "a.Q4_0.gguf"), gguf_file="a.gguf")
    cfg = load_config(
        config_with(tmp_path, base_model=str(folder), tokenizer_config=str(tmp_path / "t.gguf"))
    )
    with pytest.raises(ConfigError, match=r"tokenizer_config: the GGUF file"):
        model_source(cfg, "tokenizer_config")


def test_cache_root_follows_axr_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("AXR_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("AXR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "axr"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "axr"


@pytest.mark.slow
def test_conversion_is_a_plain_model_folder_with_the_chat_template(smollm2_gguf, smollm2_dir, axr_cache):
    from transformers import AutoConfig, AutoTokenizer

    assert smollm2_dir.parent == axr_cache / "gguf"
    assert smollm2_dir.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    marker = json.loads((smollm2_dir / MARKER).read_text())
    assert marker["sha256"] == file_digest(smollm2_gguf)
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500_000_000  # float32 weights
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama"
    assert getattr(config, "quantization_config", None) is None
    # The template lives in tokenizer_config.json only: the native data path reads it there.
    assert not (smollm2_dir / "chat_template.jinja").exists()
    template = json.loads((smollm2_dir / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|im_start|>" in template
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert len(tokenizer) == 49152
    assert tokenizer.chat_template == template
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_every_way_of_naming_the_file_reuses_one_conversion(smollm2_gguf, smollm2_dir, tmp_path):
    # A fresh process (so no in-process memo): the file, or its folder with gguf_file, gives the
    # converted folder at once, and says so on stderr.
    script = (
        "import sys; from axr.models.gguf import model_dir; "
        "print(model_dir(sys.argv[1])); print(model_dir(sys.argv[2], gguf_file=sys.argv[3]))"
    )
    argv = [sys.executable, "-c", script, str(smollm2_gguf), str(smollm2_gguf.parent), smollm2_gguf.name]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == [str(smollm2_dir), str(smollm2_dir)]
    assert done.stderr.count("GGUF converted earlier, reused") == 1  # once per file and process
    assert "converting" not in done.stderr
    # A copy under another name has the same bytes: the same conversion.
    copy = tmp_path / "renamed.gguf"
    copy.symlink_to(smollm2_gguf)
    assert model_dir(str(copy)) == str(smollm2_dir)
