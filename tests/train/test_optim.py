"""Optimizers by name and learning-rate schedules, checked against torch's own schedulers where one exists."""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.optim import build_optimizer, build_scheduler, parameter_groups, supported_optimizers


def config(**keys):
    """A real validated config (written to a YAML file and loaded) with these keys over the base ones."""
    values = {
        "base_model": "m",
        "optimizer": "adamw_torch",
        "learning_rate": 1e-3,
        "weight_decay": 0.1,
        **keys,
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        return load_config(path)


def tiny_model():
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))


def learning_rates(cfg, steps):
    optimizer = build_optimizer(cfg, tiny_model())
    scheduler = build_scheduler(cfg, optimizer, steps)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    "name", ["adamw_torch", "adamw_hf", "adamw_torch_fused", "sgd", "adagrad", "adafactor"]
)
def test_every_builtin_optimizer_steps(name):
    model = tiny_model()
    optimizer = build_optimizer(config(optimizer=name), model)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_weight_decay_skips_biases_and_norms():
    groups = parameter_groups(tiny_model(), 0.1)
    assert [p.ndim for p in groups[0]["params"]] == [2, 2]
    assert groups[0]["weight_decay"] == 0.1
    assert groups[1]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in groups[1]["params"])


def test_adam_hyperparameters_reach_the_optimizer():
    optimizer = build_optimizer(config(adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6), tiny_model())
    assert optimizer.defaults["betas"] == (0.8, 0.95)
    assert optimizer.defaults["eps"] == 1e-6


def test_unknown_optimizer_names_the_key():
    # Refused when the config is validated, before anything is built.
    with pytest.raises(ConfigError, match="optimizer: unknown optimizer 'adamw_nope'"):
        config(optimizer="adamw_nope")
    with pytest.raises(ConfigError, match="optimizer: not supported yet: 'muon'"):
        config(optimizer="muon")


def without_bitsandbytes(monkeypatch):
    """Make bitsandbytes look absent, as on a machine without the bnb extra."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )


def test_bitsandbytes_optimizer_without_the_package_says_how_to_install(monkeypatch):
    without_bitsandbytes(monkeypatch)
    with pytest.raises(ConfigError, match="optimizer: 'paged_adamw_8bit' needs the bitsandbytes"):
        build_optimizer(config(optimizer="paged_adamw_8bit"), tiny_model())
    assert "paged_adamw_8bit" in supported_optimizers()


def test_quantized_base_without_bitsandbytes_says_how_to_install(monkeypatch, tmp_path):
    from helpers import write_config

    from axr.config import load_config
    from axr.models.quantization import check_quantization_supported

    without_bitsandbytes(monkeypatch)
    path = write_config(
        tmp_path / "q.toml",
        tmp_path,
        tmp_path / "out",
        adapter="qlora",
        load_in_4bit=True,
        lora_target_linear=True,
    )
    with pytest.raises(
        ConfigError, match=r"load_in_4bit: quantized base weights need bitsandbytes.*axr\[bnb\]"
    ):
        check_quantization_supported(load_config(path))


def test_cosine_with_warmup_and_min_ratio():
    rates = learning_rates(config(warmup_steps=2, cosine_min_lr_ratio=0.1), 12)
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[2:]))
    # step 11 of 12: progress 9/10 of the cosine from 1 to 0.1
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 10))
    assert rates[11] == pytest.approx(1e-3 * expected)


def test_cosine_constant_ratio_holds_the_minimum():
    rates = learning_rates(config(cosine_min_lr_ratio=0.2, cosine_constant_lr_ratio=0.5), 20)
    assert rates[10:] == pytest.approx([2e-4] * 10)
    assert rates[5] > 2e-4


def test_warmup_ratio_counts_steps_of_the_run():
    rates = learning_rates(config(lr_scheduler="constant", warmup_ratio=0.25), 8)
    assert rates[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert rates[2:] == pytest.approx([1e-3] * 6)


def test_linear_decays_to_zero():
    rates = learning_rates(config(lr_scheduler="linear"), 4)
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_one_cycle_matches_torch():
    rates = learning_rates(config(lr_scheduler="one_cycle", lr_div_factor=10, warmup_steps=3), 10)
    reference_optimizer = torch.optim.SGD(tiny_model().parameters(), lr=1e-3)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        reference_optimizer,
        max_lr=1e-3,
        total_steps=10,
        pct_start=0.3,
        div_factor=10,
        final_div_factor=1e4,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
    expected = []
    for _ in range(10):
        expected.append(reference.get_last_lr()[0])
        reference_optimizer.step()
        reference.step()
    assert rates == pytest.approx(expected)
    assert rates[0] == pytest.approx(1e-4)


def test_unknown_scheduler_names_the_key():
    with pytest.raises(ConfigError, match="lr_scheduler: not supported yet: 'log_sweep'"):
        config(lr_scheduler="log_sweep")
    with pytest.raises(ConfigError, match="lr_scheduler: unknown schedule 'cosine_nope'"):
        config(lr_scheduler="cosine_nope")
