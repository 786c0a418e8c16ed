"""``merge_lora(cfg)``: fold a trained LoRA adapter into the base weights and save a plain model.

The result, ``<lora_model_dir>/merged``, holds safetensors weights, config and tokenizer, and
loads with ``transformers.AutoModelForCausalLM`` alone (no PEFT, no axr). ``lora_on_cpu``
merges on the CPU (no GPU memory used); ``gpu_memory_limit`` caps what each GPU holds.

An adapter trained on 4-bit or 8-bit base weights (QLoRA, ``load_in_8bit``) is merged into the
base loaded unquantized, in the training's compute dtype, as Axolotl does: the merged model
then holds the original weights plus the adapter's update, with no quantization error baked in.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from axr.errors import ConfigError
from axr.models.quantization import quantization_of

MERGED = "merged"


@dataclass(frozen=True)
class MergeResult:
    """Where the merged model went and what it was built from."""

    output_dir: Path
    base_model: str
    adapter: Path
    dtype: str
    device: str


def merge_lora(cfg: Any, *, log: TextIO | None = None) -> MergeResult:
    """Merge ``cfg``'s adapter (``lora_model_dir``, else the one training left in ``output_dir``)."""
    import torch

    from axr.inference.model import adapter_dir_of, load_for_inference

    log = sys.stdout if log is None else log

    if adapter_dir_of(cfg) is None:
        raise ConfigError(
            "lora_model_dir: merge-lora needs a trained LoRA adapter; pass --lora_model_dir DIR "
            '(or set adapter = "lora" with output_dir holding the trained adapter)'
        )
    on_cpu = bool(cfg.lora_on_cpu) or not torch.cuda.is_available()
    quantized = quantization_of(cfg)
    if quantized:
        cfg = cfg.model_copy(update={"load_in_4bit": False, "load_in_8bit": False})
    loaded = load_for_inference(cfg, on_cpu=on_cpu)
    print(f"axr merge-lora: loaded {loaded.describe()}", file=log)
    if quantized:
        print(
            f"axr merge-lora: the adapter was trained on {quantized[0]}-bit base weights; merging into the "
            f"unquantized base in {loaded.dtype}",
            file=log,
        )
    assert loaded.adapter is not None
    merged = loaded.model.merge_and_unload()
    output_dir = loaded.adapter / MERGED
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.config.use_cache = True
    merged.save_pretrained(str(output_dir), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(output_dir))
    print(f"axr merge-lora: merged model saved to {output_dir}", file=log)
    return MergeResult(
        output_dir=output_dir,
        base_model=loaded.base_model,
        adapter=loaded.adapter,
        dtype=loaded.dtype,
        device=loaded.device,
    )
