"""``attn_implementation``: which values axr runs, checked at validate time on this machine.

``eager`` and ``sdpa`` run everywhere (packed rows kept apart through position ids);
``flash_attention_2`` needs a CUDA device and the flash-attn package, so on a machine without
them the config fails validation with the reason. Axolotl's other backends are accepted by name
and refused as not supported yet; its short forms (``flash``, ``flex``, ``sdp``) are errors that
name the full value, as in Axolotl.
"""

from __future__ import annotations

import importlib.util

from axr.config.schema import AxrConfig

RUNS_HERE = ("eager", "sdpa")
FLASH_ATTENTION_2 = "flash_attention_2"
NOT_YET = {
    "flash_attention_3": "FlashAttention-3 kernels (Hopper GPUs)",
    "flex_attention": "PyTorch flex attention",
    "xformers": "xformers memory-efficient attention",
    "sage": "SageAttention (quantized attention)",
    "fp8": "FP8 attention",
}
SHORT_FORMS = {"flash": FLASH_ATTENTION_2, "flex": "flex_attention", "sdp": "sdpa"}


def flash_attention_missing() -> str | None:
    """Why flash_attention_2 cannot run here, or None when it can."""
    if importlib.util.find_spec("flash_attn") is None:
        return (
            "the flash-attn package is not installed (pip install flash-attn --no-build-isolation, "
            "or pip install 'axr[flash-attn]')"
        )
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def attention_problems(config: AxrConfig) -> list[str]:
    """Problem lines for ``attn_implementation`` (none when the backend runs here)."""
    value = config.attn_implementation
    if value is None or value in RUNS_HERE:
        return []
    if value in SHORT_FORMS:
        return [f"attn_implementation: {value!r} is not a backend name; use {SHORT_FORMS[value]!r}"]
    if value == FLASH_ATTENTION_2:
        reason = flash_attention_missing()
        if reason is None:
            return []
        return [
            f"attn_implementation: flash_attention_2 cannot run on this machine: {reason}; "
            "use attn_implementation: sdpa here"
        ]
    if value in NOT_YET:
        return [f"attn_implementation: not supported yet: {value} ({NOT_YET[value]}); use sdpa or eager"]
    if "/" in value:
        return [f"attn_implementation: not supported yet: hub kernel {value!r}; use sdpa or eager"]
    names = ", ".join([*RUNS_HERE, FLASH_ATTENTION_2, *NOT_YET])
    return [f"attn_implementation: unknown backend {value!r}; one of {names}, or a hub kernel path"]
