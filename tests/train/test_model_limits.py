"""What the model allows, checked before heavy work: its context length and whether it needs remote code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import write_config
from transformers import LlamaConfig

from axr.config import load_config
from axr.errors import ConfigError
from axr.models.load import check_sequence_len, context_length
from axr.train.loop import train


def test_an_absurd_sequence_len_fails_at_validate_time(tmp_path, tiny_llama_dir):
    path = write_config(tmp_path / "c.toml", tiny_llama_dir, tmp_path / "out", sequence_len=10**12)
    with pytest.raises(ConfigError, match=r"sequence_len: longer than any model's context: at most 16777216"):
        load_config(path)


def test_sequence_len_beyond_the_model_context_fails_before_preprocessing(tmp_path, tiny_llama_dir):
    # tiny_llama_dir: max_position_embeddings 4096. The dataset does not exist: the context check comes first.
    path = write_config(
        tmp_path / "c.toml",
        tiny_llama_dir,
        tmp_path / "out",
        sequence_len=8192,
        dataset_prepared_path=str(tmp_path / "prepared"),
    )
    with path.open("a") as file:
        file.write(f'[[datasets]]\npath = "{tmp_path / "missing.jsonl"}"\ntype = "alpaca"\n')
    with pytest.raises(
        ConfigError, match=r"sequence_len: 8192 is longer than the 4096 positions .*max_position_emb"
    ):
        train(load_config(path))
    assert not (tmp_path / "prepared").exists()


def test_rope_scaling_in_the_overrides_extends_the_context(tmp_path, tiny_llama_dir):
    base = write_config(tmp_path / "c.toml", tiny_llama_dir, tmp_path / "out").read_text()
    overrides = '[overrides_of_model_config.rope_scaling]\nrope_type = "linear"\nfactor = 2.0\n'
    (tmp_path / "ok.toml").write_text(base + "sequence_len = 8192\n" + overrides)
    (tmp_path / "long.toml").write_text(base + "sequence_len = 8193\n" + overrides)
    check_sequence_len(load_config(tmp_path / "ok.toml"))
    with pytest.raises(
        ConfigError, match=r"8193 is longer than the 8192 positions .*stretched by rope scaling"
    ):
        check_sequence_len(load_config(tmp_path / "long.toml"))


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        (None, 4096),
        ({"rope_type": "dynamic", "factor": 4.0}, 16384),
        # yarn stretches the original length; the config's own max_position_embeddings may already say so
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}, 4096),
        ({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 1024}, 8192),
    ],
)
def test_context_length_counts_rope_scaling(rope, expected):
    config = LlamaConfig(max_position_embeddings=4096)
    if rope is not None:
        config.rope_scaling = rope
    assert context_length(config) == expected


def test_a_model_needing_remote_code_is_refused_naming_the_key(tmp_path):
    model = tmp_path / "custom-model"
    model.mkdir()
    marker = tmp_path / "ran"
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "custom_thing",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomModel",
                },
            }
        )
    )
    (model / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = write_config(tmp_path / "c.toml", model, tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "axr.cli", "train", str(config)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert f"axr: error: trust_remote_code: '{model}' (base_model) needs Python code" in done.stderr
    assert "internal error" not in done.stderr
    assert "hf.co" not in done.stderr
    assert not marker.exists()
