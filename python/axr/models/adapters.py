"""LoRA adapters through PEFT (on full-precision, 4-bit or 8-bit base weights), or a full fine-tune.

The config's PEFT keys map one to one onto ``peft.LoraConfig``: ``lora_target_modules`` /
``lora_target_linear`` (``target_modules``), ``lora_target_parameters`` (``target_parameters``),
``lora_modules_to_save``, ``peft_layers_to_transform``, ``peft_use_dora``, ``peft_use_rslora``,
``peft.loftq_config`` (``init_lora_weights = "loftq"``) and ``lora_fan_in_fan_out``. A full
fine-tune trains every weight, or only those matching ``unfrozen_parameters``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.models.load import refuse_pickle_weights
from axr.models.quantization import (
    check_quantization_supported,
    is_quantized,
    prepare_for_kbit_training,
    quantization_of,
)


def check_adapter_supported(cfg: Any) -> None:
    """Adapter settings that only make sense together, checked before any model is loaded.

    (GPTQ and ReLoRA keys are refused at validation by the key ledger.)
    """
    check_quantization_supported(cfg)
    if cfg.lora_model_dir and not cfg.adapter:
        raise ConfigError('lora_model_dir: continuing an adapter needs adapter = "lora"')
    if cfg.unfrozen_parameters and cfg.adapter:
        raise ConfigError(
            "unfrozen_parameters: chooses the trained weights of a full fine-tune; with an adapter only "
            "the adapter (and lora_modules_to_save) train. Remove one of unfrozen_parameters and adapter"
        )
    if cfg.lora_target_parameters and cfg.lora_dropout:
        raise ConfigError(
            "lora_target_parameters: PEFT applies no dropout to adapted parameters; set lora_dropout = 0"
        )
    if loftq_bits_of(cfg) is not None and quantization_of(cfg):
        raise ConfigError(
            "peft.loftq_config: LoftQ quantizes the base weights itself while initialising the adapter; "
            f"load the base unquantized (remove load_in_{quantization_of(cfg)})"
        )


def loftq_bits_of(cfg: Any) -> int | None:
    peft = cfg.peft
    loftq = getattr(peft, "loftq_config", None) if peft is not None else None
    return None if loftq is None else int(loftq.loftq_bits)


def _module_name_of(model: Any, module: Any) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    return None


def embedding_module_names(model: Any) -> list[str]:
    """Short names of the input embedding and output head (``embed_tokens``, ``lm_head`` for Llama)."""
    names = [_module_name_of(model, model.get_input_embeddings())]
    output = model.get_output_embeddings()
    if output is not None:
        names.append(_module_name_of(model, output))
    return [name for name in names if name]


def target_modules_of(cfg: Any) -> str | list[str]:
    """PEFT ``target_modules`` from ``lora_target_modules`` and ``lora_target_linear``."""
    listed = cfg.lora_target_modules
    if isinstance(listed, str):
        listed = [listed]
    listed = list(listed or [])
    if cfg.lora_target_linear:
        # PEFT takes either the "all-linear" keyword or names; all-linear already covers listed linears.
        return "all-linear"
    if not listed:
        raise ConfigError(
            'lora_target_modules: adapter = "lora" needs the modules to adapt, e.g. '
            'lora_target_modules = ["q_proj", "v_proj"], or lora_target_linear = true'
        )
    return listed


def _target_parameters_of(cfg: Any) -> list[str] | None:
    listed = cfg.lora_target_parameters
    if not listed:
        return None
    return [listed] if isinstance(listed, str) else list(listed)


def lora_config_kwargs(cfg: Any, modules_to_save: list[str]) -> dict[str, Any]:
    """``peft.LoraConfig`` keyword arguments of the config's LoRA keys."""
    target_parameters = _target_parameters_of(cfg)
    has_modules = bool(cfg.lora_target_linear or cfg.lora_target_modules)
    # Parameters alone: an empty module list, or PEFT would pick its default modules for the architecture.
    target_modules: str | list[str] = target_modules_of(cfg) if has_modules or not target_parameters else []
    options: dict[str, Any] = {
        "r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": target_modules,
        "target_parameters": target_parameters,
        "fan_in_fan_out": bool(cfg.lora_fan_in_fan_out),
        "layers_to_transform": cfg.peft_layers_to_transform,
        "use_dora": bool(cfg.peft_use_dora),
        "use_rslora": bool(cfg.peft_use_rslora),
        "modules_to_save": modules_to_save or None,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    loftq_bits = loftq_bits_of(cfg)
    if loftq_bits is not None:
        options |= {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": loftq_bits, "loftq_iter": 1}}
    return options


def lora_config_of(cfg: Any, modules_to_save: list[str]) -> Any:
    """``peft.LoraConfig`` of the config's LoRA keys."""
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(cfg, modules_to_save))


_RANGE = re.compile(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$")


def _unfreeze_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[int, int | None] | None]:
    """Axolotl's pattern syntax: a regex whose dots are literal, matched at the start of the
    parameter name, optionally followed by a row range ``[start:end]`` or ``[index]``."""
    match = _RANGE.match(pattern)
    name = pattern
    rows_given: tuple[int, int | None] | None = None
    if match:
        name, start, end = match.groups()
        if end is None and start.isdecimal():
            rows_given = (int(start), int(start) + 1)
        else:
            rows_given = (int(start) if start else 0, int(end) if end else None)
    try:
        return re.compile(name.replace(".", "\\.")), rows_given
    except re.error as error:
        raise ConfigError(f"unfrozen_parameters: {pattern!r} is not a valid regex ({error})") from None


def unfreeze_only(model: Any, patterns: list[str]) -> list[str]:
    """Train only the parameters matching ``patterns`` (``unfrozen_parameters``); return their names.

    A row range keeps the other rows of that parameter fixed by zeroing their gradient (as
    Axolotl does); with weight decay they still decay, so give those rows no decay to keep them exact.
    """
    compiled = [_unfreeze_pattern(pattern) for pattern in patterns]
    trained = []
    for name, parameter in model.named_parameters():
        matched = [rows for regex, rows in compiled if regex.match(name)]
        parameter.requires_grad_(bool(matched))
        if not matched:
            continue
        trained.append(name)
        ranges = [rows for rows in matched if rows is not None]
        if len(ranges) < len(matched) or not ranges:
            continue  # one pattern without a range: every row trains
        size = parameter.shape[0]
        keep = _row_mask(ranges, size, name)
        parameter.register_hook(
            lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype).view(-1, *[1] * (grad.dim() - 1))
        )
    if not trained:
        example = next(iter(name for name, _ in model.named_parameters()), "")
        raise ConfigError(
            f"unfrozen_parameters: no parameter of the model matches {patterns}; names look like {example!r}"
        )
    return trained


def _row_mask(ranges: list[tuple[int, int | None]], size: int, name: str) -> Any:
    import torch

    keep = torch.zeros(size)
    for start, end in ranges:
        stop = size if end is None else end
        if start >= stop or stop > size:
            raise ConfigError(f"unfrozen_parameters: rows [{start}:{end}] do not fit {name} ({size} rows)")
        keep[start:stop] = 1.0
    return keep


def _modules_to_save_in_float32(model: Any) -> None:
    """Fully trained copies of half-precision modules train in float32 under autocast, as the
    adapter weights do: fp16 gradients would make the grad scaler fail."""
    import torch
    from peft.utils.other import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            for copy in module.modules_to_save.values():
                if any(p.dtype in (torch.float16, torch.bfloat16) for p in copy.parameters()):
                    copy.to(torch.float32)


def apply_adapter(cfg: Any, model: Any, *, tokens_added: bool, precision: Any = None) -> Any:
    """Wrap ``model`` in a PEFT LoRA model when ``adapter`` is set; otherwise train every weight
    (or those of ``unfrozen_parameters``).

    When the tokenizer gained tokens, the input embeddings and output head are added to
    ``modules_to_save`` (trained in full and saved with the adapter): the new rows are random
    otherwise and the adapter could not use them. On quantized base weights, PEFT's
    ``prepare_model_for_kbit_training`` runs first. ``precision`` (the training's
    :class:`~axr.models.load.Precision`) says whether autocast runs over half weights.
    """
    check_adapter_supported(cfg)
    if not cfg.adapter:
        if cfg.unfrozen_parameters:
            unfreeze_only(model, list(cfg.unfrozen_parameters))
            return model
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    from peft import PeftModel, get_peft_model

    modules_to_save = list(cfg.lora_modules_to_save or [])
    if tokens_added:
        for name in embedding_module_names(model):
            if name not in modules_to_save:
                modules_to_save.append(name)
    if is_quantized(model):
        model = prepare_for_kbit_training(cfg, model)
    if cfg.gradient_checkpointing:
        # The frozen embeddings produce no grad-requiring output; checkpointed blocks need one.
        model.enable_input_require_grads()
    if cfg.lora_model_dir:
        adapter_dir = Path(cfg.lora_model_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise ConfigError(f"lora_model_dir: {adapter_dir} has no adapter_config.json")
        refuse_pickle_weights(adapter_dir, "lora_model_dir", "adapter_model.safetensors")
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    else:
        if loftq_bits_of(cfg) is not None:
            _check_loftq_device()
        peft_model = get_peft_model(model, lora_config_of(cfg, modules_to_save))
        if cfg.lora_target_linear:
            check_every_linear_adapted(peft_model)
    if precision is not None and precision.mixed != "no":
        _modules_to_save_in_float32(peft_model)
    return peft_model


def _check_loftq_device() -> None:
    import importlib.util

    import torch

    if not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())):
        raise ConfigError(
            "peft.loftq_config: PEFT's LoftQ initialisation runs on a CUDA (or XPU) device only, "
            "and none is available here"
        )
    if importlib.util.find_spec("scipy") is None:
        raise ConfigError("peft.loftq_config: PEFT's LoftQ initialisation needs scipy: pip install scipy")


def unadapted_linear_layers(model: Any) -> list[str]:
    """Linear layers of a PEFT-wrapped model that carry no LoRA (the output head and saved modules aside)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings()
    covered: list[str] = []
    missed = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in covered):
            continue
        if isinstance(module, BaseTunerLayer) or hasattr(module, "original_module") or module is output:
            covered.append(name)
        elif isinstance(module, (torch.nn.Linear, Conv1D)):
            missed.append(name)
    return missed


def check_every_linear_adapted(model: Any) -> None:
    """``lora_target_linear`` promises every linear layer: a ConfigError names the ones PEFT left out.

    PEFT (0.21) remaps the names of transformers-5 MoE expert projections (``gate_proj``, ``up_proj``,
    ``down_proj``) to the fused expert parameters; in families that also have dense MLPs with those
    names (DeepSeek-V3's first layers and shared experts) the dense ones end up without an adapter.
    """
    missed = unadapted_linear_layers(model)
    if missed:
        shown = ", ".join(missed[:4]) + (f" and {len(missed) - 4} more" if len(missed) > 4 else "")
        architecture = type(model.get_base_model()).__name__
        raise ConfigError(
            f"lora_target_linear: PEFT left {len(missed)} linear layer(s) of {architecture} without an "
            f"adapter ({shown}); list the modules to adapt in lora_target_modules instead"
        )
