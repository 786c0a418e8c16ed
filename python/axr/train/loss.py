"""Token-normalised causal LM loss.

The loss of an optimizer step is the sum of the token losses of every trainable
token in the step (all micro-batches, all ranks) divided by the number of those
tokens. A mean of per-micro-batch means weighs a micro-batch with 10 trainable
tokens like one with 1,000, which packing makes common; summing then dividing
once is what a single big batch would compute.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def summed_token_loss(logits: Any, labels: Any) -> Any:
    """Sum of next-token cross-entropy over positions whose (shifted) label is not -100.

    ``logits`` is ``[rows, length, vocab]`` and ``labels`` ``[rows, length]``, unshifted
    (labels[t] is the token at t): position t predicts labels[t + 1]. Computed in
    float32 whatever the model dtype.
    """
    import torch.nn.functional as functional

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    return functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def count_trainable(labels: Any) -> int:
    """Number of positions that take part in ``summed_token_loss`` (labels[:, 1:] != -100)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
