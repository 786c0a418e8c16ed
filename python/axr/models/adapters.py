"""LoRA adapters through PEFT, or a full fine-tune when ``adapter`` is empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.models.load import refuse_pickle_weights


def check_adapter_supported(cfg: Any) -> None:
    """Adapter settings that only make sense together, checked before any model is loaded.

    (QLoRA, 8-bit and ReLoRA keys are refused at validation by the key ledger.)
    """
    if cfg.lora_model_dir and not cfg.adapter:
        raise ConfigError('lora_model_dir: continuing an adapter needs adapter = "lora"')


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


def apply_adapter(cfg: Any, model: Any, *, tokens_added: bool) -> Any:
    """Wrap ``model`` in a PEFT LoRA model when ``adapter = "lora"``; otherwise train every weight.

    When the tokenizer gained tokens, the input embeddings and output head are added to
    ``modules_to_save`` (trained in full and saved with the adapter): the new rows are random
    otherwise and the adapter could not use them.
    """
    check_adapter_supported(cfg)
    if not cfg.adapter:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    from peft import LoraConfig, PeftModel, get_peft_model

    modules_to_save = list(cfg.lora_modules_to_save or [])
    if tokens_added:
        for name in embedding_module_names(model):
            if name not in modules_to_save:
                modules_to_save.append(name)
    if cfg.gradient_checkpointing:
        # The frozen embeddings produce no grad-requiring output; checkpointed blocks need one.
        model.enable_input_require_grads()
    if cfg.lora_model_dir:
        adapter_dir = Path(cfg.lora_model_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise ConfigError(f"lora_model_dir: {adapter_dir} has no adapter_config.json")
        refuse_pickle_weights(adapter_dir, "lora_model_dir", "adapter_model.safetensors")
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules_of(cfg),
        fan_in_fan_out=cfg.lora_fan_in_fan_out,
        layers_to_transform=cfg.peft_layers_to_transform,
        modules_to_save=modules_to_save or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
