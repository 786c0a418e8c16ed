"""Checkpoints hold no pickles: a planted pickle payload in any checkpoint file never runs."""

from __future__ import annotations

import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from helpers import InMemoryDataset, random_rows, train_cli_resuming, write_config

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.checkpoint import restore_rng_state, rng_state, write_manifest
from axr.train.loop import TrainingData, train
from axr.train.state_file import load_state, save_state

KEYS = {
    "adapter": "lora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_target_linear": True,
    "micro_batch_size": 2,
    "max_steps": 2,
    "save_steps": 1,
    "learning_rate": 1e-3,
    "sample_packing": False,
}


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _config(tmp_path, tiny_llama_dir, name, **keys):
    return load_config(write_config(tmp_path / f"{name}.toml", tiny_llama_dir, tmp_path / name, **keys))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_llama_dir):
    tmp_path = tmp_path_factory.mktemp("checkpoint")
    result = train(
        _config(tmp_path, tiny_llama_dir, "run", **KEYS), data=TrainingData(InMemoryDataset(random_rows(6)))
    )
    folder = result.output_dir / "checkpoint-1"
    assert sorted(path.name for path in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
        "optimizer.safetensors",
        "rng_state_0.safetensors",
        "scheduler.safetensors",
        "trainer_state.json",
    ]
    return folder


def _resume(tmp_path, tiny_llama_dir, folder):
    config = _config(tmp_path, tiny_llama_dir, "resumed", resume_from_checkpoint=str(folder), **KEYS)
    return train(config, data=TrainingData(InMemoryDataset(random_rows(6))))


@pytest.mark.parametrize(
    "target",
    [
        "optimizer.safetensors",
        "scheduler.safetensors",
        "rng_state_0.safetensors",
        "adapter_model.safetensors",
        # Files an older axr (or a hand-made checkpoint) would hold: refused before anything is read.
        "optimizer.pt",
        "rng_state_0.pt",
        "training_args.bin",
    ],
)
def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path, tiny_llama_dir, checkpoint, target):
    planted = tmp_path / "planted"
    shutil.copytree(checkpoint, planted)
    marker = tmp_path / "marker"
    if target.endswith(".safetensors"):
        (planted / target).write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"state": Payload(marker)}, planted / target)
    # The manifest only finds damage: whoever planted the payload can rewrite it, so it is re-sealed here.
    write_manifest(planted)
    with pytest.raises(ConfigError, match=rf"resume_from_checkpoint: \S*planted/{target} ") as error:
        _resume(tmp_path, tiny_llama_dir, planted)
    assert not marker.exists()
    if target.endswith(".safetensors"):
        assert "not a readable safetensors file" in str(error.value)
    else:
        assert "is a pickle file" in str(error.value)


def test_the_refusal_through_the_cli_exits_2(tmp_path, tiny_llama_dir, checkpoint):
    planted = tmp_path / "planted"
    shutil.copytree(checkpoint, planted)
    marker = tmp_path / "marker"
    (planted / "rng_state_0.safetensors").unlink()
    torch.save(Payload(marker), planted / "rng_state_0.pt")
    done = train_cli_resuming(tmp_path, tiny_llama_dir, planted, **KEYS)
    assert done.returncode == 2, done.stderr
    assert "rng_state_0.pt is a pickle file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_missing_rank_rng_file_is_an_error(tmp_path, tiny_llama_dir, checkpoint):
    planted = tmp_path / "planted"
    shutil.copytree(checkpoint, planted)
    (planted / "rng_state_0.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"rng_state_0\.safetensors is missing"):
        _resume(tmp_path, tiny_llama_dir, planted)


def test_a_safetensors_file_not_written_by_axr_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "optimizer.safetensors"))
    with pytest.raises(ConfigError, match="was not written by axr"):
        load_state(tmp_path / "optimizer.safetensors")


def test_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    save_state(optimizer.state_dict(), tmp_path / "optimizer.safetensors")
    loaded = load_state(tmp_path / "optimizer.safetensors")
    original = optimizer.state_dict()
    assert loaded["param_groups"] == original["param_groups"]  # betas stay a tuple, params stay ints
    assert isinstance(loaded["param_groups"][0]["betas"], tuple)
    assert sorted(loaded["state"]) == [0, 1]
    for index, entry in original["state"].items():
        for name, value in entry.items():
            torch.testing.assert_close(loaded["state"][index][name], value, rtol=0, atol=0)
    odd = {"nan": float("nan"), "inf": float("-inf"), "nested": [(1, "a"), {"k": None}]}
    save_state(odd, tmp_path / "odd.safetensors")
    back = load_state(tmp_path / "odd.safetensors")
    assert np.isnan(back["nan"])
    assert back["inf"] == float("-inf")
    assert back["nested"] == odd["nested"]


def test_rng_state_round_trips_to_the_same_draws(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_state(rng_state(), tmp_path / "rng.safetensors")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_state(tmp_path / "rng.safetensors"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_save_refuses_what_would_need_a_pickle(tmp_path):
    with pytest.raises(TypeError, match=r"scheduler\.fn: a function cannot be saved"):
        save_state({"fn": lambda: 0}, tmp_path / "scheduler.safetensors")


def test_pickled_base_weights_are_refused_without_the_opt_in(tmp_path, tiny_llama_dir, monkeypatch):
    planted = tmp_path / "pickled-model"
    planted.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_llama_dir / name).exists():
            shutil.copy(tiny_llama_dir / name, planted / name)
    marker = tmp_path / "marker"
    torch.save({"model.embed_tokens.weight": Payload(marker)}, planted / "pytorch_model.bin")
    monkeypatch.delenv("AXR_ALLOW_PICKLE_WEIGHTS", raising=False)
    config = load_config(
        write_config(tmp_path / "c.toml", planted, tmp_path / "out", tokenizer_config=str(tiny_llama_dir))
    )
    with pytest.raises(ConfigError, match=r"base_model: \S*pytorch_model.bin holds pickled weights"):
        train(config, data=TrainingData(InMemoryDataset(random_rows(4))))
    assert not marker.exists()
