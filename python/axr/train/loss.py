"""Token-normalised causal LM loss.

The loss of an optimizer step is the sum of the token losses of every trainable
token in the step (all micro-batches, all ranks) divided by the number of those
tokens. A mean of per-micro-batch means weighs a micro-batch with 10 trainable
tokens like one with 1,000, which packing makes common; summing then dividing
once is what a single big batch would compute.
"""

from __future__ import annotations

from typing import Any

from axr._native import IGNORE_INDEX


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


def unwrapped_model(model: Any) -> Any:
    """The transformers model under PEFT and accelerate/DDP wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def router_loss_function(model: Any) -> Any | None:
    """The family's own load-balancing loss (``load_balancing_loss_func`` of its modeling module), or None.

    Every transformers MoE causal LM that has a router auxiliary loss (Mixtral, Qwen2/3-MoE, OLMoE,
    PhiMoE, Jamba, ...) defines it there with the same signature, and keeps ``num_experts``,
    ``num_experts_per_tok`` and ``router_aux_loss_coef`` on the causal LM.
    """
    import sys

    base = unwrapped_model(model)
    module = sys.modules.get(type(base).__module__)
    function = getattr(module, "load_balancing_loss_func", None)
    if function is None or not all(
        hasattr(base, name) for name in ("num_experts", "num_experts_per_tok", "router_aux_loss_coef")
    ):
        return None
    return function


def adds_router_loss(model: Any) -> bool:
    """Whether training adds the router auxiliary loss (``output_router_logits``, an MoE family with one)."""
    wanted = bool(getattr(unwrapped_model(model).config, "output_router_logits", False))
    return wanted and router_loss_function(model) is not None


def router_aux_loss(model: Any, router_logits: Any, token_mask: Any) -> Any:
    """The family's load-balancing loss over the real tokens of a micro-batch (padding left out).

    ``token_mask`` is ``[rows, length]``, nonzero at real tokens (``attention_mask`` of padded
    batches, ``real_tokens`` of packed ones), shaped like the model's input.
    """
    base = unwrapped_model(model)
    function = router_loss_function(model)
    if function is None:
        raise ValueError(f"{type(base).__name__} has no router auxiliary loss")
    return function(router_logits, base.num_experts, base.num_experts_per_tok, token_mask)


def forward_summed_loss(
    model: Any, batch: dict[str, Any], attention: str, device: Any, *, select: bool
) -> Any:
    """Forward ``batch`` and return its summed token loss (``select``: head on trained positions only).

    With ``output_router_logits`` on an MoE family, in training mode, the router auxiliary loss is
    added as ``router_aux_loss_coef × aux × trainable tokens of the micro-batch``: the loop divides
    the step's sum by the step's trainable tokens, so a micro-batch's auxiliary loss is weighted by
    its tokens exactly like its cross-entropy, and a one-micro-batch step gives transformers' own
    ``loss + router_aux_loss_coef × aux_loss``. Evaluation (``model.eval()``) reports cross-entropy only.
    """
    import torch.nn.functional as functional

    from axr.models.attention import forward_kwargs, labels_for

    kwargs = forward_kwargs(batch, attention, device)
    labels = labels_for(batch, attention, device)
    with_router = model.training and adds_router_loss(model)
    if with_router:
        kwargs["output_router_logits"] = True
    if not select:
        outputs = model(**kwargs)
        summed = summed_token_loss(outputs.logits, labels)
    else:
        keep = trained_positions(labels)
        kwargs["logits_to_keep"] = keep
        outputs = model(**kwargs)  # logits: [trained positions, vocabulary], rows flattened in order
        targets = labels[:, 1:][keep[:, :-1]]
        summed = functional.cross_entropy(outputs.logits.float(), targets, reduction="sum")
    if not with_router:
        return summed
    mask = batch["attention_mask"] if "attention_mask" in batch else batch["real_tokens"]
    mask = mask.reshape(kwargs["input_ids"].shape).to(device)
    aux = router_aux_loss(model, outputs.router_logits, mask)
    coefficient = unwrapped_model(model).router_aux_loss_coef
    return summed + coefficient * aux.float() * count_trainable(labels)
