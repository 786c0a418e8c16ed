"""`bf16`/`fp16` resolve as Axolotl documents: auto → bf16 where supported, else fp16 on GPU, fp32 on CPU."""

from __future__ import annotations

import pytest
import torch

from axr.config import resolve_precision, validate_config
from axr.errors import ConfigError


def config(**keys):
    return validate_config({"base_model": "m", **keys})


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a CUDA device exists; the test sets whether it has bf16."""

    def make(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)

    return make


def test_auto_is_fp32_on_cpu():
    assert config().bf16 == "auto"
    assert resolve_precision(config(), "cpu") == "fp32"


def test_auto_is_bf16_on_a_gpu_that_has_it(gpu):
    gpu(bf16=True)
    assert resolve_precision(config(), "cuda") == "bf16"
    assert resolve_precision(config(), "cuda:1") == "bf16"


def test_auto_falls_back_to_fp16_on_an_older_gpu(gpu):
    gpu(bf16=False)
    assert resolve_precision(config(), "cuda") == "fp16"


def test_fp16_false_with_auto_falls_back_to_fp32(gpu):
    gpu(bf16=False)
    assert resolve_precision(config(fp16=False), "cuda") == "fp32"


def test_explicit_fp16_wins_over_auto(gpu):
    gpu(bf16=True)
    assert resolve_precision(config(fp16=True), "cuda") == "fp16"


def test_explicit_bf16(gpu):
    assert resolve_precision(config(bf16=True), "cpu") == "bf16"
    assert resolve_precision(config(bf16="full"), "cpu") == "bf16"
    gpu(bf16=False)
    with pytest.raises(ConfigError, match="does not support bf16"):
        resolve_precision(config(bf16=True), "cuda")


def test_bf16_false_and_fp16_unset_is_fp32(gpu):
    gpu(bf16=True)
    assert resolve_precision(config(bf16=False), "cuda") == "fp32"


def test_fp16_on_cpu_is_an_error():
    with pytest.raises(ConfigError, match="fp16 = true needs a GPU"):
        resolve_precision(config(fp16=True), "cpu")


def test_real_device_check_agrees_with_torch():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision(config(), "cuda") == expected
