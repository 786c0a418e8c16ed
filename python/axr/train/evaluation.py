"""Evaluation loss: token-weighted over every eval row of every rank, each row counted once.

Every rank runs the same number of forwards, whatever its share of the eval rows: under
FSDP and ZeRO-3 a forward gathers parameters from all ranks, so a rank that skipped one
would leave the others waiting forever. The plan (packed or not) gives every rank the same
number of non-empty micro-batches, repeating a few rows in the last step when fewer remain
than ranks; the repeated rows have their labels masked, so they weigh 0 in the sums.
"""

from __future__ import annotations

from typing import Any

from axr.train.batches import MicroBatchPlan, collate_micro_batch
from axr.train.loss import IGNORE_INDEX, count_trainable, forward_summed_loss


def _zero_weight(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """``batch`` with the labels of ``rows`` masked: they run through the model but add no loss."""
    if rows:
        labels = batch["labels"].clone()
        labels[rows] = IGNORE_INDEX
        batch = {**batch, "labels": labels, "num_trainable": count_trainable(labels)}
    return batch


def evaluation_sums(
    model: Any,
    accelerator: Any,
    dataset: Any,
    plan: MicroBatchPlan,
    *,
    packing: bool,
    attention: str,
    pad: int,
    select: bool,
    joined: bool = False,
) -> Any:
    """This rank's ``[summed eval loss, trained tokens]`` (float64 tensor), every sample counted once."""
    import torch

    model.eval()
    sums = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    plan.set_epoch(0)
    with torch.no_grad():
        for index in range(len(plan)):
            bins = plan.micro_batch(index)
            masked = [row for row, repeated in enumerate(plan.repeats(index)) if repeated]
            batch = _zero_weight(
                collate_micro_batch(
                    dataset, bins, packing=packing, pad_token_id=pad, pad_to=None, joined=joined
                ),
                masked,
            )
            with accelerator.autocast():
                summed = forward_summed_loss(model, batch, attention, accelerator.device, select=select)
            sums[0] += summed.double()
            sums[1] += batch["num_trainable"]
    model.train()
    return sums


def evaluate(model: Any, accelerator: Any, dataset: Any, plan: MicroBatchPlan, **options: Any) -> float:
    """Token-weighted mean eval loss over every eval row of every rank."""
    totals = accelerator.reduce(
        evaluation_sums(model, accelerator, dataset, plan, **options), reduction="sum"
    )
    return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")
