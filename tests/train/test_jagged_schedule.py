"""Jagged learning-rate restarts (Axolotl's jagged_restart_* keys) on top of the configured schedule."""

from __future__ import annotations

import pytest
import torch
from helpers import write_config

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.optim import build_optimizer, build_scheduler, cosine_factor


def rates_of(tmp_path, steps, **keys):
    cfg = load_config(write_config(tmp_path / "jagged.toml", tmp_path / "model", tmp_path / "out", **keys))
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates, scheduler


def test_restarts_drop_to_the_floor_then_warm_up_and_anneal(tmp_path):
    rates, _ = rates_of(
        tmp_path,
        11,
        learning_rate=1e-3,
        lr_scheduler="constant",
        jagged_restart_steps=5,
        jagged_restart_warmup_steps=2,
        jagged_restart_anneal_steps=2,
    )
    half = 0.5 * (1 - 0.001) + 0.001
    # steps:   0    1    2    3    4     5      6     7    8    9     10
    expected = [1.0, 1.0, 1.0, 1.0, half, 0.001, half, 1.0, 1.0, half, 0.001]
    assert rates == pytest.approx([1e-3 * scale for scale in expected], rel=1e-9)


def test_restarts_scale_the_cosine_with_axolotls_defaults(tmp_path):
    keys = {
        "learning_rate": 1e-3,
        "lr_scheduler": "cosine",
        "warmup_steps": 1,
        "cosine_min_lr_ratio": 0.1,
        "jagged_restart_steps": 4,
    }
    rates, _ = rates_of(tmp_path, 12, **keys)
    # Axolotl's defaults: 10 warmup steps after a restart (longer than the cycle here: always warming up
    # from step 4 - 10 < 0 on), 1 anneal step, a floor of cosine_min_lr_ratio.
    for step, rate in enumerate(rates):
        progress = step % 4
        scale = min(1.0, progress / 10) * (1 - 0.1) + 0.1
        base = cosine_factor(step, warmup=1, total=12, min_lr_ratio=0.1)
        assert rate == pytest.approx(1e-3 * base * scale, rel=1e-9), step


def test_jagged_restarts_refuse_one_cycle(tmp_path):
    with pytest.raises(ConfigError, match="jagged_restart_steps: jagged restarts scale a cosine"):
        rates_of(tmp_path, 4, lr_scheduler="one_cycle", jagged_restart_steps=2)
