"""bitsandbytes optimizers by their transformers/Axolotl names: the right class and state, and a
checkpoint round trip (safetensors + JSON, no pickle) that continues exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import write_config

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.optim import BITSANDBYTES_OPTIMIZERS, build_optimizer
from axr.train.state_file import load_state, save_state

pytest.importorskip("bitsandbytes")


def config_of(tmp_path, **keys):
    return load_config(write_config(tmp_path / "optim.toml", tmp_path / "model", tmp_path / "out", **keys))


def model_and_batch():
    torch.manual_seed(0)
    # 128 x 128 = 16,384 elements: above bitsandbytes' min_8bit_size (4096), so 8-bit names keep 8-bit state.
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.Tanh(), torch.nn.Linear(128, 4))
    return model, torch.randn(6, 128)


def step(model, optimizer, batch):
    model(batch).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", sorted(BITSANDBYTES_OPTIMIZERS))
def test_bitsandbytes_optimizer_state_round_trips_exactly(tmp_path, name):
    cfg = config_of(tmp_path, optimizer=name, learning_rate=1e-2, weight_decay=0.01)
    model, batch = model_and_batch()
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer).__module__.startswith("bitsandbytes.")
    assert optimizer.args.optim_bits == (8 if "8bit" in name else 32)
    assert optimizer.is_paged == ("paged" in name)
    for _ in range(2):
        step(model, optimizer, batch)
    moments = optimizer.state[model[0].weight]
    assert moments["state1"].dtype == (torch.uint8 if "8bit" in name else torch.float32)

    save_state(optimizer.state_dict(), tmp_path / "optimizer.safetensors")
    twin = copy.deepcopy(model)
    restored = build_optimizer(cfg, twin)
    restored.load_state_dict(load_state(tmp_path / "optimizer.safetensors"))
    for _ in range(2):
        step(model, optimizer, batch)
        step(twin, restored, batch)
    for original, copied in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(original, copied)
    moved = model_and_batch()[0]
    assert not torch.equal(moved[0].weight, model[0].weight)


def test_ademamix_reads_its_extra_betas_from_optim_args(tmp_path):
    cfg = config_of(tmp_path, optimizer="ademamix_8bit", optim_args="beta3=0.999,alpha=8,t_alpha=100")
    optimizer = build_optimizer(cfg, model_and_batch()[0])
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999, 0.999)
    assert group["alpha"] == 8.0
    assert group["t_alpha"] == 100


def test_min_8bit_size_from_optim_args_gives_small_parameters_8bit_state(tmp_path):
    cfg = config_of(tmp_path, optimizer="adamw_8bit", optim_args="min_8bit_size=16")
    model, batch = model_and_batch()
    optimizer = build_optimizer(cfg, model)
    step(model, optimizer, batch)
    assert optimizer.state[model[2].weight]["state1"].dtype == torch.uint8  # 512 elements


def test_malformed_optim_args_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="optim_args: expected key=value pairs"):
        config_of(tmp_path, optimizer="adamw_8bit", optim_args="min_8bit_size")
