"""Attention backend selection, and the forward-pass arguments that keep packed samples apart.

Packed rows must never attend across samples. The two ways this holds:

* ``sdpa`` / ``eager`` (CPU and GPU): transformers (>= 4.54, checked in 5.24's
  ``masking_utils._preprocess_mask_arguments``) derives a block-diagonal causal mask
  from ``position_ids`` that restart at 0, but only when no ``attention_mask`` and no
  KV cache are passed. So packed batches go in with ``position_ids``, no
  ``attention_mask`` and ``use_cache=False``.
* ``flash_attention_2`` (CUDA + flash-attn): the micro-batch is flattened to one row
  and the collator's ``cu_seqlens`` / ``max_seqlen`` are passed as
  ``cu_seq_lens_q/k`` / ``max_length_q/k``, so the varlen kernel runs directly with
  no per-layer device-to-host sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from axr.errors import ConfigError

if TYPE_CHECKING:
    from axr.config import AxrConfig

FLASH_ATTENTION = "flash_attention_2"
SDPA = "sdpa"
EAGER = "eager"

FLASH_INSTALL_HINT = (
    "attn_implementation: flash_attention_2 needs the flash-attn package and a CUDA GPU; install it with "
    "`pip install flash-attn --no-build-isolation` (or `pip install 'axr[flash-attn]'`), "
    "or set attn_implementation: sdpa to use PyTorch SDPA instead"
)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(character for character in piece if character.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def select_attention(cfg: AxrConfig) -> str:
    """The ``attn_implementation`` for transformers: the config's, or SDPA when it names none.

    Validation already refused backends axr does not run; this checks again at model-load time
    (the machine may differ from the one that validated) and raises ``ConfigError`` naming the key.
    """
    implementation = cfg.attn_implementation or SDPA
    if implementation == FLASH_ATTENTION:
        from axr.config.attention import flash_attention_missing

        reason = flash_attention_missing()
        if reason is not None:
            raise ConfigError(
                f"attn_implementation: flash_attention_2 cannot run here: {reason}. {FLASH_INSTALL_HINT}"
            )
        return FLASH_ATTENTION
    if implementation not in (SDPA, EAGER):
        raise ConfigError(f"attn_implementation: {implementation!r} is not supported; use sdpa or eager")
    if cfg.sample_packing:
        check_packed_mask_support()
    return implementation


def check_packed_mask_support() -> None:
    """Packed SDPA/eager relies on transformers building the block mask from position_ids."""
    import torch
    import transformers

    if _version_tuple(transformers.__version__) < (4, 54) or _version_tuple(torch.__version__) < (2, 6):
        raise ConfigError(
            "sample_packing: packed attention with SDPA/eager needs transformers >= 4.54 and torch >= 2.6 "
            f"(found transformers {transformers.__version__}, torch {torch.__version__}); upgrade them, "
            "or set sample_packing: false"
        )


def forward_kwargs(batch: dict[str, Any], implementation: str, device: Any) -> dict[str, Any]:
    """Keyword arguments for ``model(**kwargs)`` from a collated batch (packed or padded)."""
    kwargs: dict[str, Any] = {"input_ids": batch["input_ids"].to(device), "use_cache": False}
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"].to(device)
        return kwargs
    if implementation == FLASH_ATTENTION:
        # One flattened row: the varlen kernel sees every sample (and each row's padding) as a segment.
        cu_seqlens = batch["cu_seqlens"].to(device)
        kwargs["input_ids"] = kwargs["input_ids"].reshape(1, -1)
        kwargs["position_ids"] = batch["position_ids"].reshape(1, -1).to(device)
        kwargs["cu_seq_lens_q"] = cu_seqlens
        kwargs["cu_seq_lens_k"] = cu_seqlens
        kwargs["max_length_q"] = batch["max_seqlen"]
        kwargs["max_length_k"] = batch["max_seqlen"]
        return kwargs
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"].to(device)
    return kwargs


def labels_for(batch: dict[str, Any], implementation: str, device: Any) -> Any:
    """Labels shaped like the model's input for this backend (flattened for flash-attn)."""
    labels = batch["labels"]
    if implementation == FLASH_ATTENTION and "attention_mask" not in batch:
        labels = labels.reshape(1, -1)
    return labels.to(device)
