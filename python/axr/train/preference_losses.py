"""Preference losses (DPO and its variants, KTO, ORPO, SimPO), written to equal TRL's.

Every function takes per-sequence log-probability *sums* over completion tokens (and the
completion token counts where a loss length-normalises), so the same code serves packed and
padded batches. The formulas and their quirks follow trl 1.16 (tests/train/test_preference_losses.py
checks each against TRL's own code to 1e-6):

- DPO ``ipo`` divides each log-ratio by its completion's token count before the squared loss;
- DPO ``sigmoid`` ignores label smoothing (TRL applies it only to ``robust``);
- ORPO and SimPO work on length-averaged log-probs and add a mean NLL of the chosen tokens;
- the KTO KL estimate is the mean log-ratio of mismatched prompt/completion pairs, clamped at 0.

Each loss returns ``(loss, metrics)``: ``loss`` the batch mean to backpropagate, ``metrics`` the
detached per-pair (or per-row) tensors TRL logs, under TRL's names (``rewards/chosen``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sft")


@dataclass
class PairLogps:
    """Summed completion log-probs of a batch of pairs, and their completion token counts."""

    chosen: Any
    rejected: Any
    chosen_tokens: Any
    rejected_tokens: Any

    def averaged(self) -> tuple[Any, Any]:
        """Length-averaged log-probs (ORPO, SimPO)."""
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(
            min=1
        )

    def chosen_nll(self) -> Any:
        """Mean NLL over every chosen completion token of the batch (TRL's ``sft`` term, ORPO's NLL)."""
        return -self.chosen.sum() / self.chosen_tokens.sum().clamp(min=1)


def _reward_metrics(chosen_rewards: Any, rejected_rewards: Any, policy: PairLogps) -> dict[str, Any]:
    return {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().detach(),
        "rewards/margins": (chosen_rewards - rejected_rewards).detach(),
        "logps/chosen": policy.chosen.detach(),
        "logps/rejected": policy.rejected.detach(),
    }


def dpo_loss(
    policy: PairLogps,
    ref_chosen: Any,
    ref_rejected: Any,
    *,
    beta: float,
    loss_types: tuple[str, ...] = ("sigmoid",),
    loss_weights: tuple[float, ...] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    """DPO with TRL's loss variants; several types add up with ``loss_weights`` (RPO = sigmoid + sft)."""
    import torch.nn.functional as functional

    weights = loss_weights or tuple(1.0 for _ in loss_types)
    chosen_ratio = policy.chosen - ref_chosen
    rejected_ratio = policy.rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    loss: Any = 0.0
    for loss_type, weight in zip(loss_types, weights, strict=True):
        if loss_type == "sigmoid":
            per_pair = -functional.logsigmoid(beta * delta)
        elif loss_type == "hinge":
            per_pair = (1 - beta * delta).relu()
        elif loss_type == "ipo":
            per_token_delta = chosen_ratio / policy.chosen_tokens.clamp(min=1) - rejected_ratio / (
                policy.rejected_tokens.clamp(min=1)
            )
            per_pair = (per_token_delta - 1 / (2 * beta)) ** 2
        elif loss_type == "robust":
            clean = -(1 - label_smoothing) * functional.logsigmoid(beta * delta)
            flipped = -label_smoothing * functional.logsigmoid(-beta * delta)
            per_pair = (clean - flipped) / (1 - 2 * label_smoothing)
        elif loss_type == "sft":
            per_pair = policy.chosen_nll().expand(delta.shape[0])
        else:
            raise ValueError(f"dpo_loss_type: unknown loss '{loss_type}'; known: {', '.join(DPO_LOSS_TYPES)}")
        loss = loss + per_pair.mean() * weight
    return loss, _reward_metrics(beta * chosen_ratio, beta * rejected_ratio, policy)


def kto_kl_estimate(kl_logps: Any, ref_kl_logps: Any) -> Any:
    """KTO's reference point: mean log-ratio on mismatched pairs, detached and clamped at 0."""
    return (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(
    logps: Any,
    ref_logps: Any,
    desirable: Any,
    kl: Any,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Any, dict[str, Any]]:
    """KTO (Eq. 7 of the paper): desirable rows pushed above the KL point, undesirable below it."""
    import torch

    ratio = logps - ref_logps
    chosen_ratio, rejected_ratio = ratio[desirable], ratio[~desirable]
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_ratio - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_ratio))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses))
    metrics = {
        "kl": kl.detach().reshape(1),
        "rewards/chosen": (beta * chosen_ratio).detach(),
        "rewards/rejected": (beta * rejected_ratio).detach(),
        "logps/chosen": logps[desirable].detach(),
        "logps/rejected": logps[~desirable].detach(),
    }
    return losses.nanmean(), metrics


def _log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(policy: PairLogps, *, alpha: float) -> tuple[Any, dict[str, Any]]:
    """ORPO: NLL of the chosen tokens minus ``alpha`` × log-sigmoid of the log odds ratio."""
    import torch.nn.functional as functional

    chosen, rejected = (logps.float() for logps in policy.averaged())
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    ratio = functional.logsigmoid(log_odds)
    nll = policy.chosen_nll()
    metrics = _reward_metrics(alpha * chosen, alpha * rejected, policy)
    metrics |= {
        "logps/chosen": chosen.detach(),
        "logps/rejected": rejected.detach(),
        "nll_loss": nll.detach().reshape(1),
        "log_odds_ratio": ratio.detach(),
        "log_odds_chosen": log_odds.detach(),
    }
    return nll - (alpha * ratio).mean(), metrics


def simpo_loss(
    policy: PairLogps, *, beta: float, gamma: float, cpo_alpha: float, label_smoothing: float = 0.0
) -> tuple[Any, dict[str, Any]]:
    """SimPO (TRL's CPO trainer, ``loss_type="simpo"``): averaged margin minus ``gamma``, no reference."""
    import torch.nn.functional as functional

    chosen, rejected = policy.averaged()
    logits = (chosen - rejected) - gamma / beta
    losses = (
        -functional.logsigmoid(beta * logits) * (1 - label_smoothing)
        - functional.logsigmoid(-beta * logits) * label_smoothing
    )
    nll = policy.chosen_nll() if cpo_alpha != 0 else losses.new_zeros(())
    metrics = _reward_metrics(beta * chosen, beta * rejected, policy)
    metrics |= {
        "logps/chosen": chosen.detach(),
        "logps/rejected": rejected.detach(),
        "nll_loss": nll.detach(),
    }
    return losses.mean() + cpo_alpha * nll, metrics
