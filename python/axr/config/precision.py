"""Resolve ``bf16``/``fp16`` into the one mixed-precision mode a run uses.

Axolotl's rule: ``bf16 = "auto"`` means bf16 where the device supports it;
otherwise fp16 on a GPU (unless ``fp16 = false``), and fp32 on the CPU. An
explicit ``fp16 = true`` with ``bf16`` left on auto asks for fp16.
torch is imported here, on use, so that importing ``axr.config`` stays cheap.
"""

from __future__ import annotations

from typing import Literal

from axr.config.schema import AxrConfig
from axr.errors import ConfigError

PrecisionMode = Literal["bf16", "fp16", "fp32"]


def device_supports_bf16(device: str) -> bool:
    """Whether mixed precision in bf16 runs natively on ``device`` (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return False
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def resolve_precision(config: AxrConfig, device: str) -> PrecisionMode:
    """The mixed-precision mode for ``config`` on ``device``.

    ``bf16 = true``/``"full"`` gives bf16 (an error on a GPU without bf16);
    ``fp16 = true`` gives fp16 (an error on the CPU, where fp16 autocast does
    not train); ``bf16 = "auto"`` picks bf16, then fp16 on a GPU, then fp32.
    """
    kind = device.split(":", 1)[0]
    on_cpu = kind == "cpu"
    if config.bf16 is True or config.bf16 == "full":
        if not on_cpu and not device_supports_bf16(device):
            raise ConfigError(f'bf16 = {config.bf16!r} but {device} does not support bf16; set bf16 = "auto"')
        return "bf16"
    if config.fp16 is True:
        if on_cpu:
            raise ConfigError('fp16 = true needs a GPU; on the CPU use bf16 = "auto" (fp32) or bf16 = true')
        return "fp16"
    if config.bf16 == "auto":
        if device_supports_bf16(device):
            return "bf16"
        if not on_cpu and config.fp16 is not False:
            return "fp16"
    return "fp32"


def apply_tf32(config: AxrConfig) -> None:
    """``tf32``: allow (true) or forbid (false) TF32 matmuls and convolutions; unset leaves torch's setting.

    TF32 only exists on NVIDIA Ampere or newer GPUs; elsewhere the switches change nothing.
    """
    if config.tf32 is None:
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(config.tf32)
    torch.backends.cudnn.allow_tf32 = bool(config.tf32)
