"""Load a model for generation or merging: the training loaders (dtype, device, attention
backend, embeddings sized to the tokenizer) plus the trained LoRA adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.models.load import refuse_pickle_weights

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoadedModel:
    """A model ready for ``generate`` (adapter attached, eval mode), and what was loaded."""

    model: Any
    tokenizer: Any
    base_model: str
    adapter: Path | None
    dtype: str
    device: str
    attention: str

    def describe(self) -> str:
        """One line: base, adapter, dtype, device, attention backend."""
        adapter = str(self.adapter) if self.adapter else "none"
        return (
            f"base {self.base_model} | adapter {adapter} | dtype {self.dtype} | device {self.device} | "
            f"attention {self.attention}"
        )


def adapter_dir_of(cfg: Any) -> Path | None:
    """The trained adapter to load: ``lora_model_dir``, else ``output_dir`` when ``adapter`` is set and
    training left an adapter there; ``None`` for a full model. A missing adapter is a ConfigError."""
    if cfg.lora_model_dir:
        path = Path(cfg.lora_model_dir)
        if not (path / ADAPTER_CONFIG).is_file():
            raise ConfigError(f"lora_model_dir: {path} has no {ADAPTER_CONFIG} (not a saved LoRA adapter)")
        return path
    if not cfg.adapter:
        return None
    output_dir = Path(cfg.output_dir)
    if (output_dir / ADAPTER_CONFIG).is_file():
        return output_dir
    raise ConfigError(
        f"adapter: {cfg.adapter!r} is set but no trained adapter was found (lora_model_dir is empty and "
        f"output_dir {output_dir} has no {ADAPTER_CONFIG}); pass --lora_model_dir DIR, or --adapter= to "
        "use the base model alone"
    )


def _compute_dtype(cfg: Any, device: str, *, adapter: bool) -> str:
    """The training forward pass dtype: half weights when training ran under bf16/fp16 autocast."""
    from axr.models.load import resolve_precision

    precision = resolve_precision(cfg, device, adapter=adapter)
    return {"no": precision.weights, "bf16": "bfloat16", "fp16": "float16"}[precision.mixed]


def load_for_inference(cfg: Any, *, on_cpu: bool = False) -> LoadedModel:
    """The config's base model (``base_model``) with its trained adapter, in eval mode.

    ``on_cpu`` (or no CUDA device) keeps everything on the CPU; ``gpu_memory_limit``
    and ``device_map`` are honoured by the training loader.
    """
    import torch
    from peft import PeftModel

    from axr.models.adapters import check_adapter_supported
    from axr.models.attention import select_attention
    from axr.models.load import Precision, load_model, load_tokenizer

    if cfg.lora_model_dir and not cfg.adapter:
        # Naming the adapter folder is enough to say which adapter to load.
        cfg = cfg.model_copy(update={"adapter": "lora"})
    check_adapter_supported(cfg)
    adapter_dir = adapter_dir_of(cfg)
    device = "cuda" if torch.cuda.is_available() and not on_cpu else "cpu"
    dtype = _compute_dtype(cfg, device, adapter=adapter_dir is not None)
    # Generation needs neither checkpointing nor the packed-mask check of training.
    inference_cfg = cfg.model_copy(
        update={"gradient_checkpointing": False, "sample_packing": False, "eval_sample_packing": False}
    )
    if on_cpu or device == "cpu":
        inference_cfg = inference_cfg.model_copy(update={"device_map": None, "max_memory": None})
    elif cfg.gpu_memory_limit is not None and cfg.device_map is None:
        # The limit becomes max_memory, which only applies when accelerate places the weights.
        inference_cfg = inference_cfg.model_copy(update={"device_map": "auto"})
    attention = select_attention(inference_cfg)
    tokenizer, _ = load_tokenizer(inference_cfg)
    model = load_model(inference_cfg, tokenizer, precision=Precision(dtype, "no"), attention=attention)
    if inference_cfg.device_map is None:
        model.to(device)
    if adapter_dir is not None:
        refuse_pickle_weights(adapter_dir, "lora_model_dir", "adapter_model.safetensors")
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.eval()
    # The training loader turns the KV cache off; generation wants it.
    model.config.use_cache = True
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        base_model=str(cfg.base_model),
        adapter=adapter_dir,
        dtype=dtype,
        device=str(next(model.parameters()).device),
        attention=attention,
    )
