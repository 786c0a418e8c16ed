"""Packed samples must not see each other: refuse families that leak, and check the loaded model once.

Packing is only correct if the attention backend keeps samples of a row apart (see
``axr.models.attention``). That rests on each family's attention code and on the installed
transformers, so axr does not take it on trust:

* ``refuse_unsafe_packing`` (before the model loads): families the model matrix
  (tests/train/test_model_matrix.py) proved to leak with the installed transformers are refused
  with ``sample_packing``.
* ``check_packing`` (after the model is on its device): the real model runs two short samples
  packed into one row and each alone; if any logit differs by more than ``TOLERANCE`` of the
  largest logit, training stops with an error naming the architecture and attention backend.
  Three forward passes of at most 24 tokens, run once at start-up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from axr.errors import AxrError, ConfigError
from axr.train.loss import unwrapped_model

PACKING_UNSAFE: dict[str, str] = {
    "mpt": (
        "MptAttention builds its causal mask and ALiBi bias from the row length and never reads "
        "position_ids, so samples packed into one row attend to each other"
    ),
}
"""``model_type`` → why packing leaks: families the matrix proved unsafe with the installed transformers."""

GUARD_LENGTHS = (13, 11)
"""Lengths of the two guard samples: short, so the check costs three tiny forward passes."""

TOLERANCE = {"float32": 1e-3, "half": 5e-2}
"""Largest allowed ``max |packed - alone| / max |alone|`` over both samples' logits, by compute dtype
(``half``: bf16/fp16 weights or autocast).

On the CPU, fp32 packed and unpacked logits agree to about 5e-7 of the largest logit (tiny models of
18 families) and bf16 autocast ones to about 5e-3 (tiny Llama); a leak moves them by 0.18 to 1.4 of it.
"""


class PackingLeakError(AxrError):
    """The loaded model lets packed samples attend to each other."""


@dataclass(frozen=True)
class GuardResult:
    """What the start-up check measured."""

    architecture: str
    attention: str
    dtype: str
    difference: float
    tolerance: float
    seconds: float

    def describe(self) -> str:
        return (
            f"packing check: {self.architecture} with {self.attention} attention ({self.dtype}): packed and "
            f"unpacked logits differ by {self.difference:.1e} of the largest logit (tolerance "
            f"{self.tolerance:.0e}), {self.seconds:.2f} s"
        )


def _packing_requested(cfg: Any) -> bool:
    evaluation = cfg.eval_sample_packing
    return bool(cfg.sample_packing) or bool(evaluation)


def refuse_unsafe_packing(cfg: Any, model_config: Any) -> None:
    """ConfigError when packing is on for a family that cannot keep packed samples apart."""
    model_type = getattr(model_config, "model_type", None)
    if not _packing_requested(cfg) or model_type not in PACKING_UNSAFE:
        return
    import transformers

    key = "sample_packing" if cfg.sample_packing else "eval_sample_packing"
    architectures = ", ".join(getattr(model_config, "architectures", None) or [model_type])
    raise ConfigError(
        f"{key}: {model_type} ({architectures}) cannot be packed safely with transformers "
        f"{transformers.__version__}: {PACKING_UNSAFE[model_type]}. Set {key} = false"
    )


def guard_samples(vocab_size: int) -> list[tuple[Any, Any]]:
    """Two fixed pseudo-random samples (``(input_ids, labels)`` numpy rows) of ``GUARD_LENGTHS``."""
    import numpy as np

    generator = np.random.default_rng(17)
    low = min(3, vocab_size - 1)
    samples = []
    for length in GUARD_LENGTHS:
        ids = generator.integers(low, vocab_size, size=length)
        samples.append((ids, ids.copy()))
    return samples


def _compute_dtype(model: Any, device: Any) -> str:
    """The dtype the forward pass computes in: autocast's when it is on, else the weights'."""
    import torch

    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type):
        return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")
    floating = (p.dtype for p in model.parameters() if p.is_floating_point())
    return str(next(floating, torch.float32)).removeprefix("torch.")


def packed_logit_difference(
    model: Any,
    attention: str,
    device: Any,
    *,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    position_ids: Any | None = None,
) -> tuple[float, str]:
    """``max |packed - alone| / max |alone|`` over the guard samples' logits, and the compute dtype.

    ``position_ids`` replaces the packed row's positions (tests pass non-restarting ones to build a
    leaky row). The model runs in eval mode without gradients; its training mode is restored.
    """
    import torch

    from axr.data.collate import collate_packed
    from axr.models.attention import forward_kwargs

    samples = guard_samples(unwrapped_model(model).get_input_embeddings().num_embeddings)
    context = autocast or nullcontext
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), context():
            packed = collate_packed([samples], pad_token_id=0)
            if position_ids is not None:
                packed["position_ids"] = position_ids
            logits = model(**forward_kwargs(packed, attention, device)).logits
            dtype = _compute_dtype(model, device)
            packed_logits = logits.reshape(-1, logits.shape[-1]).float()
            alone = []
            for sample in samples:
                single = collate_packed([[sample]], pad_token_id=0)
                alone.append(model(**forward_kwargs(single, attention, device)).logits[0].float())
    finally:
        model.train(was_training)
    reference = torch.cat(alone)
    scale = reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((packed_logits - reference).abs().max() / scale), dtype


def check_packing(
    model: Any,
    attention: str,
    device: Any,
    *,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
) -> GuardResult:
    """Run the guard samples packed and alone; PackingLeakError if the logits differ beyond ``TOLERANCE``."""
    import transformers

    start = time.perf_counter()
    difference, dtype = packed_logit_difference(model, attention, device, autocast=autocast)
    seconds = time.perf_counter() - start
    base = unwrapped_model(model)
    architecture = type(base).__name__
    tolerance = TOLERANCE["float32"] if dtype == "float32" else TOLERANCE["half"]
    if not difference <= tolerance:  # NaN fails too
        raise PackingLeakError(
            f"sample_packing: packed samples see each other in {architecture} "
            f"({base.config.model_type}) with {attention} attention and transformers "
            f"{transformers.__version__}: two samples packed into one row give logits that differ from "
            f"the samples run alone by {difference:.3g} of the largest logit (tolerance {tolerance:g}). "
            "Training on such batches would learn across sample boundaries; set sample_packing = false "
            "or use another attention backend"
        )
    return GuardResult(architecture, attention, dtype, difference, tolerance, seconds)


def guard_packing(cfg: Any, model: Any, attention: str, accelerator: Any) -> GuardResult | None:
    """The training loop's start-up check: when packing is on, ``check_packing`` on the prepared model."""
    if not _packing_requested(cfg):
        return None
    result = check_packing(model, attention, accelerator.device, autocast=accelerator.autocast)
    if accelerator.is_main_process:
        print(f"axr train: {result.describe()}", file=sys.stderr)
    return result
