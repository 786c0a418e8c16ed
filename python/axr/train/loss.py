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


def trained_positions(labels: Any) -> Any:
    """Boolean ``[rows, length]``: positions whose next-token prediction is trained."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def supports_position_selection(model: Any) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` (``slice_logits_to_keep``).

    Then the output head runs only on trained positions: with masked prompts and padding most
    positions are untrained, and the ``[tokens, vocabulary]`` logits are the largest tensor of a
    small model's step.
    """
    import sys

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = sys.modules.get(type(base).__module__)
    return module is not None and hasattr(module, "slice_logits_to_keep")


def forward_summed_loss(
    model: Any, batch: dict[str, Any], attention: str, device: Any, *, select: bool
) -> Any:
    """Forward ``batch`` and return its summed token loss (``select``: head on trained positions only)."""
    import torch.nn.functional as functional

    from axr.models.attention import forward_kwargs, labels_for

    kwargs = forward_kwargs(batch, attention, device)
    labels = labels_for(batch, attention, device)
    if not select:
        return summed_token_loss(model(**kwargs).logits, labels)
    keep = trained_positions(labels)
    kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits  # [trained positions, vocabulary], rows flattened in order
    targets = labels[:, 1:][keep[:, :-1]]
    return functional.cross_entropy(logits.float(), targets, reduction="sum")
