"""Axolotl configs as people write them (2024 and today's style) validate, or fail only because a
feature is not supported yet (or cannot run on this machine): never on a blank, an alias or a known key.

The corpus (tests/config/axolotl_corpus/) names models and datasets by hub id; validating must
not touch the network or the filesystem for them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from axr.config import ledger, load_config, read_config_file
from axr.config.attention import flash_attention_missing
from axr.errors import ConfigError

CORPUS = Path(__file__).parent / "axolotl_corpus"
FILES = sorted(CORPUS.glob("*.y*ml"))

# File → the keys refused as not supported yet (empty: the config validates).
EXPECTED: dict[str, set[str]] = {
    "2024-deepspeed-zero3.yml": set(),
    "2024-dpo.yml": set(),
    "2024-fsdp.yml": set(),
    "2024-llama2-lora.yml": set(),
    "2024-mistral-qlora.yml": set(),
    "2024-pretraining.yml": set(),
    "2024-sharegpt-chat.yml": set(),
    "2024-tinyllama-full.yml": set(),
    "aliases-not-yet.yaml": {
        "overrides_of_model_kwargs",
        "eval_strategy",
        "streaming_multipack_buffer_size",
        "context_parallel_size",
        "activation_offloading",
        "large_head_attention",
        "attn_implementation",
    },
    "aliases-used.yaml": set(),
    "today-eager-cpu.yaml": set(),
    "today-fsdp2-llama.yaml": set(),
    "today-llama3-lora-liger.yaml": set(),
    "today-orpo-kto.yaml": set(),
    "today-qlora-fsdp1-version.yaml": set(),
    "today-qwen3-chat-template.yaml": {"activation_offloading"},
    "today-sdp-flag.yaml": set(),
}
NEEDS_FLASH_ATTENTION = {
    "2024-deepspeed-zero3.yml",
    "2024-mistral-qlora.yml",
    "today-qwen3-chat-template.yaml",
}


def outcome(path: Path) -> tuple[set[str], list[str]]:
    """(keys refused as not supported yet, other problem lines)."""
    try:
        load_config(path)
    except ConfigError as error:
        lines = [line.strip() for line in str(error).splitlines()[1:]]
        refused = {
            line.split(": not supported yet: ", 1)[0] for line in lines if ": not supported yet: " in line
        }
        return refused, [line for line in lines if ": not supported yet: " not in line]
    return set(), []


def test_the_corpus_is_the_one_expected():
    assert sorted(path.name for path in FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_each_config_validates_or_fails_only_on_features_not_supported_yet(path):
    refused, others = outcome(path)
    assert refused == EXPECTED[path.name]
    missing_flash = flash_attention_missing()
    if path.name in NEEDS_FLASH_ATTENTION and missing_flash is not None:
        assert others == [
            f"attn_implementation: flash_attention_2 cannot run on this machine: {missing_flash}; "
            "use attn_implementation: sdpa here"
        ]
    else:
        assert others == []


def _keys_in(path: Path) -> set[str]:
    keys: set[str] = set()
    data = read_config_file(path)
    for key, value in data.items():
        keys.add(key)
        if key == "fsdp_config" and isinstance(value, dict):
            keys.update(f"fsdp_config.{inner}" for inner in value)
        if key in ("datasets", "test_datasets") and isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict):
                    keys.update(f"datasets[].{inner}" for inner in entry)
    return keys


def test_the_corpus_uses_every_old_spelling():
    used = set().union(*(_keys_in(path) for path in FILES))
    spellings = set(ledger.ALIASES) | set(ledger.ATTENTION_FLAGS) | {"gc_steps", "flash_attn_d512"}
    spellings |= {"fsdp_config.version", "datasets[].message_field_role", "datasets[].message_field_content"}
    spellings |= {
        f"fsdp_config.fsdp_{key}"
        for key in ("offload_params", "state_dict_type", "cpu_ram_efficient_loading")
    }
    assert sorted(spellings - used) == []
    values = [read_config_file(path).get("gradient_checkpointing") for path in FILES]
    assert {"offload", "offload_disk"} <= set(values)


def test_validating_never_touches_hub_ids(monkeypatch):
    """Hub ids name models and datasets; validation reads neither the filesystem nor the network for them."""
    hub_ids = set()
    for path in FILES:
        data = read_config_file(path)
        hub_ids.add(data["base_model"])
        hub_ids.update(entry["path"] for entry in data.get("datasets") or [] if isinstance(entry, dict))
    looked_up: list[str] = []
    real_stat = os.stat

    def stat(target, *args, **kwargs):
        looked_up.append(os.fspath(target) if not isinstance(target, int) else "")
        return real_stat(target, *args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("validation opened a network connection")

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for path in FILES:
        outcome(path)
    assert any(name.endswith(".yml") for name in looked_up)  # the files themselves are read
    touched = [name for name in looked_up if any(hub_id in name for hub_id in hub_ids)]
    assert touched == []
