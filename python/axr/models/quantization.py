"""Quantized base weights: bitsandbytes 4-bit (QLoRA) and 8-bit, and their preparation for training.

Axolotl's rules, kept here so the plain loader stays plain:

* ``load_in_4bit`` (``adapter = "qlora"``, or ``"lora"`` on a 4-bit base) loads every linear layer
  of the base as a bitsandbytes ``Linear4bit`` through transformers' ``BitsAndBytesConfig``:
  nf4 with double quantization by default, computing in the training precision's dtype
  (``bnb_4bit_compute_dtype`` overrides it), and ``bnb_config_kwargs`` passed through.
  The quantized weights are stored as bfloat16 under FSDP (``bnb_4bit_quant_storage``, which FSDP
  needs to shard them like every other parameter), as uint8 otherwise.
* ``load_in_8bit`` loads them as LLM.int8() ``Linear8bitLt`` layers (``llm_int8_*`` options apply).
* Either way the quantized weights are frozen: only an adapter trains on them, and PEFT's
  ``prepare_model_for_kbit_training`` casts the remaining half-precision weights (norms,
  embeddings, head) to float32 and sets up gradient checkpointing as the config asks.
* GPTQ base models are not supported yet (see ``check_quantization_supported``).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from axr.errors import ConfigError

INSTALL_BNB = "pip install 'axr[bnb]' (the bitsandbytes package)"

GPTQ_MISSING = (
    "gptq: GPTQ base models are not supported yet: transformers runs them through the gptqmodel "
    "package, which ships as source only (CUDA kernels, torchao, datasets and pyarrow among its "
    "requirements) and is not part of axr's tested environment. Use a bitsandbytes base instead "
    '(load_in_4bit = true with adapter = "qlora")'
)


def quantization_of(cfg: Any) -> str | None:
    """``"4bit"``, ``"8bit"`` or None: how the config asks the base weights to be loaded."""
    if cfg.load_in_4bit:
        return "4bit"
    if cfg.load_in_8bit:
        return "8bit"
    return None


def check_quantization_supported(cfg: Any) -> None:
    """Refuse what cannot run before any model is loaded, naming the key."""
    if cfg.gptq:
        raise ConfigError(GPTQ_MISSING)
    kind = quantization_of(cfg)
    if kind is None:
        return
    key = f"load_in_{kind}"
    if not cfg.adapter:
        raise ConfigError(
            f"{key}: quantized base weights cannot be trained; set adapter = "
            f'"{"qlora" if kind == "4bit" else "lora"}" to train an adapter on them, or drop {key}'
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"{key}: quantized base weights need bitsandbytes, which is not installed: {INSTALL_BNB}"
        )


def compute_dtype_name(precision: Any) -> str:
    """The dtype quantized layers compute in: the autocast dtype, else the weights' dtype."""
    return {"bf16": "bfloat16", "fp16": "float16"}.get(precision.mixed, precision.weights)


def bnb_config_of(cfg: Any, precision: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for the config, or None when the weights are not quantized."""
    import torch
    from transformers import BitsAndBytesConfig

    kind = quantization_of(cfg)
    if kind is None:
        return None
    given = cfg.bnb_config_kwargs.model_dump(exclude_none=True) if cfg.bnb_config_kwargs else {}
    if kind == "8bit":
        # LLM.int8() reads only its own options; the 4-bit ones would be ignored silently.
        options = {key: value for key, value in given.items() if key.startswith("llm_int8_")}
        return BitsAndBytesConfig(load_in_8bit=True, **options)
    options = {
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": compute_dtype_name(precision),
    }
    if cfg.fsdp or cfg.fsdp_config:
        options["bnb_4bit_quant_storage"] = "bfloat16"
    options.update(given)
    for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
        name = options.get(key)
        if name is not None:
            dtype = getattr(torch, str(name), None)
            if not isinstance(dtype, torch.dtype):
                raise ConfigError(f"bnb_config_kwargs.{key}: {name!r} is not a torch dtype name")
            options[key] = dtype
    return BitsAndBytesConfig(load_in_4bit=True, **options)


def quantized_load_kwargs(cfg: Any, precision: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for quantized weights (empty when not quantized).

    bitsandbytes quantizes while loading onto the device, so each process places the whole
    model on its own device (its local rank's GPU, or the CPU) unless ``device_map`` says otherwise.
    """
    config = bnb_config_of(cfg, precision)
    if config is None:
        return {}
    import torch

    kwargs: dict[str, Any] = {"quantization_config": config}
    if cfg.device_map is None:
        device: int | str = int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"
        kwargs["device_map"] = {"": device}
    return kwargs


def is_quantized(model: Any) -> bool:
    """Whether ``model`` holds bitsandbytes 4-bit or 8-bit layers."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def keep_4bit_layout_trainable(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit``'s weights the first time
    the layer runs in eval mode without gradients (an evaluation during training), and from then
    on runs that kernel in training too: it computes in bfloat16 and has no backward, so the
    gradient through the frozen base weights would silently be lost for the rest of the run.
    """
    import bitsandbytes

    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def prepare_for_kbit_training(cfg: Any, model: Any) -> Any:
    """PEFT's preparation of a quantized base: frozen, float32 outside the quantized layers,
    checkpointed as ``gradient_checkpointing`` asks (with its ``gradient_checkpointing_kwargs``)."""
    from peft import prepare_model_for_kbit_training

    keep_4bit_layout_trainable(model)
    checkpointing = bool(cfg.gradient_checkpointing)
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs=(cfg.gradient_checkpointing_kwargs or {"use_reentrant": False})
        if checkpointing
        else None,
    )


def quantized_layer_summary(model: Any) -> str | None:
    """What was really loaded, e.g. ``"14 linear layers in 4-bit nf4 (compute float32)"``; None when
    no layer is quantized. Counted on the model, so a silent fallback to full precision shows."""
    if not is_quantized(model):
        return None
    import bitsandbytes

    four = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    eight = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear8bitLt)]
    parts = []
    if four:
        state = getattr(four[0].weight, "quant_state", None)
        kind = getattr(state, "quant_type", "4-bit") if state is not None else "4-bit"
        nested = " double-quantized" if state is not None and getattr(state, "nested", False) else ""
        compute = str(four[0].compute_dtype).removeprefix("torch.")
        parts.append(f"{len(four)} linear layers in 4-bit {kind}{nested} (compute {compute})")
    if eight:
        parts.append(f"{len(eight)} linear layers in 8-bit (LLM.int8())")
    return ", ".join(parts) or None
