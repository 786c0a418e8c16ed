"""Stop training on non-finite numbers instead of training (and saving) garbage.

A NaN or infinite loss or gradient norm poisons every weight the optimizer touches next, and
nothing after it is worth keeping: the run stops with the step and what was non-finite, and
nothing is saved for that step. Weights are checked once more right before a checkpoint or the
final model is written, so a NaN model is never saved (a bad update can come from a finite
loss, e.g. NaN optimizer moments in a resumed checkpoint).

Under fp16 mixed precision an infinite gradient norm is the loss scaler's normal signal: it
skips that optimizer step and lowers the scale, so only a non-finite loss stops training there.
"""

from __future__ import annotations

import math
from typing import Any

from axr.errors import AxrError

_HINT = (
    "Usual causes: a learning rate too high, fp16 overflow (try bf16), or NaN values in the base "
    "model or in the checkpoint resumed from"
)


class NonFiniteError(AxrError):
    """Training met a NaN or infinite loss, gradient norm or weight."""


def nonfinite_keys(record: dict[str, Any]) -> list[str]:
    """Keys of ``record`` whose value is a NaN or infinite float."""
    return [key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)]


def check_step(record: dict[str, Any], progress: Any, *, loss_scaling: bool) -> None:
    """Raise ``NonFiniteError`` when the step's loss (or, without loss scaling, its gradient norm)
    is not finite; the step's record is written to metrics.jsonl first so the failure is on file.

    Every rank reaches the same verdict: the loss is reduced over ranks and the clipped gradient
    norm is global.
    """
    watched = ["loss"] if loss_scaling else ["loss", "grad_norm"]
    bad = [key for key in nonfinite_keys(record) if key in watched]
    if not bad:
        return
    progress.ensure_logged(record)
    progress.close()
    values = " and ".join(f"{'gradient norm' if key == 'grad_norm' else key} {record[key]}" for key in bad)
    raise NonFiniteError(
        f"training stopped at step {record['step']}: non-finite {values}. Nothing was saved for this "
        f"step; checkpoints already in output_dir are kept. {_HINT}"
    )


def check_weights(accelerator: Any, model: Any, *, step: int, what: str) -> None:
    """Raise ``NonFiniteError`` on every rank when a trainable weight of any rank holds NaN or inf.

    Only trainable weights change while training; each rank checks the ones it holds (its shard
    under FSDP) and the verdict is summed over ranks so no rank is left waiting in a collective.
    """
    import torch

    bad = [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.numel() and not bool(torch.isfinite(parameter).all())
    ]
    count = torch.tensor([len(bad)], device=accelerator.device, dtype=torch.int64)
    total = int(accelerator.reduce(count, reduction="sum").item())
    if total:
        named = f" (e.g. {', '.join(bad[:3])})" if bad else ""
        raise NonFiniteError(
            f"training stopped at step {step}: {total} trainable weight tensor(s) hold NaN or infinite "
            f"values{named}, so the {what} was not saved. {_HINT}"
        )
