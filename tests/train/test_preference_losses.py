"""Every preference loss of axr equals TRL's (trl 1.16, pinned in the dev dependencies) to 1e-6.

TRL has no standalone loss functions: its trainers compute losses inside private methods. The DPO
and KTO tests run ``_compute_loss`` on a bare trainer (``object.__new__``) with the attributes it
reads set by hand and a stub model that returns given per-token log-probs; ORPO's
``odds_ratio_loss`` and CPO's ``cpo_loss`` (SimPO) run on a namespace holding their settings.
"""

from __future__ import annotations

import os
import types
from collections import defaultdict

import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental
pytest.importorskip("trl")

from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

from axr.train import preference_losses as losses  # noqa: E402

TOLERANCE = 1e-6
PAIRS, LENGTH = 6, 12


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    gather_for_metrics = gather

    @staticmethod
    def unwrap_model(model: object) -> object:
        return model


class _StubPolicy:
    """Returns the given per-token log-probs the way TRL's fused LM head does (zero off the completion)."""

    training = True

    def __init__(self, per_token_logps: torch.Tensor) -> None:
        self.per_token_logps = per_token_logps

    def __call__(self, input_ids: torch.Tensor, **_: object) -> types.SimpleNamespace:
        width = input_ids.shape[1] - 1
        logps = self.per_token_logps[: input_ids.shape[0], -width:]
        return types.SimpleNamespace(
            log_probs=logps,
            entropy=torch.zeros_like(logps),
            mean_logits=torch.zeros_like(logps),
            is_top1=torch.zeros_like(logps, dtype=torch.bool),
        )


def _completion_mask(rows: int, generator: torch.Generator) -> torch.Tensor:
    """Prompt then completion per row, completion lengths varying (IPO's normalisation must show)."""
    mask = torch.zeros(rows, LENGTH, dtype=torch.long)
    for row in range(rows):
        start = int(torch.randint(2, 5, (1,), generator=generator))
        end = int(torch.randint(start + 1, LENGTH + 1, (1,), generator=generator))
        mask[row, start:end] = 1
    return mask


def _pair_batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = _completion_mask(2 * PAIRS, generator)
    per_token = -torch.rand(2 * PAIRS, LENGTH - 1, generator=generator, dtype=torch.float64) * 3
    per_token = per_token * mask[:, 1:]
    return {
        "mask": mask,
        "per_token": per_token,
        "ref_chosen": -torch.rand(PAIRS, generator=generator, dtype=torch.float64) * 20,
        "ref_rejected": -torch.rand(PAIRS, generator=generator, dtype=torch.float64) * 20,
    }


def _policy(batch: dict[str, torch.Tensor]) -> losses.PairLogps:
    sums = batch["per_token"].sum(dim=1)
    tokens = batch["mask"][:, 1:].sum(dim=1).to(sums.dtype)
    chosen, rejected = sums.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    return losses.PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)


def _trl_dpo(
    batch: dict[str, torch.Tensor], beta: float, loss_types: list[str], weights: list[float], smoothing: float
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    trainer = object.__new__(DPOTrainer)
    trainer.model = _StubPolicy(batch["per_token"])
    trainer.accelerator = _Accelerator()
    trainer.aux_loss_enabled = False
    trainer.ld_alpha = None
    trainer.precompute_ref_logps = True
    trainer.f_divergence_type = "reverse_kl"
    trainer.loss_types = loss_types
    trainer.loss_weights = weights
    trainer.beta = beta
    trainer.label_smoothing = smoothing
    trainer.use_weighting = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    inputs = {
        "input_ids": torch.ones_like(batch["mask"]),
        "attention_mask": torch.ones_like(batch["mask"]),
        "completion_mask": batch["mask"],
        "ref_chosen_logps": batch["ref_chosen"],
        "ref_rejected_logps": batch["ref_rejected"],
    }
    loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize(
    ("loss_types", "weights", "smoothing"),
    [
        (["sigmoid"], [1.0], 0.0),
        # TRL's sigmoid ignores label smoothing; axr must too, or the losses differ.
        (["sigmoid"], [1.0], 0.2),
        (["hinge"], [1.0], 0.0),
        (["ipo"], [1.0], 0.0),
        (["robust"], [1.0], 0.15),
        # rpo_alpha: the DPO loss plus rpo_alpha × the NLL of the chosen tokens.
        (["sigmoid", "sft"], [1.0, 0.7], 0.0),
    ],
)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_losses_equal_trl(
    loss_types: list[str], weights: list[float], smoothing: float, beta: float
) -> None:
    batch = _pair_batch(seed=len(loss_types) + int(beta * 10))
    expected, metrics = _trl_dpo(batch, beta, loss_types, weights, smoothing)
    loss, ours = losses.dpo_loss(
        _policy(batch),
        batch["ref_chosen"],
        batch["ref_rejected"],
        beta=beta,
        loss_types=tuple(loss_types),
        loss_weights=tuple(weights),
        label_smoothing=smoothing,
    )
    assert abs(float(loss) - float(expected)) < TOLERANCE
    for name in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
    ):
        assert abs(float(ours[name].mean()) - metrics[name][-1]) < TOLERANCE, name


def test_ipo_normalises_by_completion_length() -> None:
    """Doubling one pair's token counts (same sums) must change IPO and leave sigmoid alone."""
    batch = _pair_batch(seed=3)
    policy = _policy(batch)
    longer = losses.PairLogps(
        policy.chosen, policy.rejected, policy.chosen_tokens * 2, policy.rejected_tokens
    )
    args = (batch["ref_chosen"], batch["ref_rejected"])
    ipo, _ = losses.dpo_loss(policy, *args, beta=0.1, loss_types=("ipo",))
    ipo_longer, _ = losses.dpo_loss(longer, *args, beta=0.1, loss_types=("ipo",))
    sigmoid, _ = losses.dpo_loss(policy, *args, beta=0.1)
    sigmoid_longer, _ = losses.dpo_loss(longer, *args, beta=0.1)
    assert abs(float(ipo) - float(ipo_longer)) > 1e-3
    assert float(sigmoid) == float(sigmoid_longer)


def test_unknown_dpo_loss_type_is_an_error() -> None:
    batch = _pair_batch(seed=4)
    with pytest.raises(ValueError, match="dpo_loss_type: unknown loss 'nca'"):
        losses.dpo_loss(
            _policy(batch), batch["ref_chosen"], batch["ref_rejected"], beta=0.1, loss_types=("nca",)
        )


@pytest.mark.parametrize(("desirable_weight", "undesirable_weight"), [(1.0, 1.0), (1.33, 0.6)])
def test_kto_loss_equals_trl(desirable_weight: float, undesirable_weight: float) -> None:
    generator = torch.Generator().manual_seed(11)
    rows = 8
    mask = _completion_mask(rows, generator)
    per_token = -torch.rand(rows, LENGTH - 1, generator=generator, dtype=torch.float64) * 3 * mask[:, 1:]
    kl_per_token = -torch.rand(rows, LENGTH - 1, generator=generator, dtype=torch.float64) * 3 * mask[:, 1:]
    ref_logps = -torch.rand(rows, generator=generator, dtype=torch.float64) * 20
    ref_kl_logps = -torch.rand(rows, generator=generator, dtype=torch.float64) * 25
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)

    class _KtoStub(_StubPolicy):
        def __call__(self, input_ids: torch.Tensor, **kwargs: object) -> types.SimpleNamespace:
            source = kl_per_token if input_ids is kl_ids else per_token
            return _StubPolicy(source)(input_ids)

    ids = torch.ones_like(mask)
    kl_ids = torch.ones_like(mask)
    trainer = object.__new__(KTOTrainer)
    trainer.model = _KtoStub(per_token)
    trainer.accelerator = _Accelerator()
    trainer.aux_loss_enabled = False
    trainer.calculate_KL = True
    trainer.precompute_ref_logps = True
    trainer.loss_type = "kto"
    trainer.beta = 0.1
    trainer.desirable_weight = desirable_weight
    trainer.undesirable_weight = undesirable_weight
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "KL_input_ids": kl_ids,
        "KL_attention_mask": torch.ones_like(mask),
        "KL_completion_mask": mask,
        "label": labels,
        "ref_logps": ref_logps,
        "ref_KL_logps": ref_kl_logps,
    }
    expected = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    metrics = trainer._metrics["train"]

    kl = losses.kto_kl_estimate(kl_per_token.sum(dim=1), ref_kl_logps)
    loss, ours = losses.kto_loss(
        per_token.sum(dim=1),
        ref_logps,
        labels,
        kl,
        beta=0.1,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    assert abs(float(loss) - float(expected)) < TOLERANCE
    assert abs(float(ours["kl"]) - metrics["kl"][-1]) < TOLERANCE
    for name in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert abs(float(ours[name].mean()) - metrics[name][-1]) < TOLERANCE, name


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_orpo_loss_equals_trl(alpha: float) -> None:
    batch = _pair_batch(seed=21)
    policy = _policy(batch)
    chosen_avg, rejected_avg = policy.averaged()
    namespace = types.SimpleNamespace(beta=alpha, accelerator=_Accelerator())
    trl_losses, chosen_rewards, rejected_rewards, ratio, log_odds = ORPOTrainer.odds_ratio_loss(
        namespace, chosen_avg, rejected_avg
    )
    # ORPO's trainer: loss = NLL of the chosen tokens (mean over tokens) - mean(odds-ratio losses).
    per_token_chosen = batch["per_token"][:PAIRS]
    chosen_mask = batch["mask"][:PAIRS, 1:].bool()
    trl_nll = -per_token_chosen[chosen_mask].mean()
    expected = trl_nll - trl_losses.mean()

    loss, ours = losses.orpo_loss(policy, alpha=alpha)
    assert abs(float(loss) - float(expected)) < TOLERANCE
    assert torch.allclose(ours["rewards/chosen"], chosen_rewards, atol=TOLERANCE)
    assert torch.allclose(ours["rewards/rejected"], rejected_rewards, atol=TOLERANCE)
    assert abs(float(ours["log_odds_ratio"].mean()) - float(ratio)) < TOLERANCE
    assert abs(float(ours["log_odds_chosen"].mean()) - float(log_odds)) < TOLERANCE


@pytest.mark.parametrize(("gamma", "cpo_alpha", "smoothing"), [(0.5, 0.0, 0.0), (1.2, 1.0, 0.1)])
def test_simpo_loss_equals_trl(gamma: float, cpo_alpha: float, smoothing: float) -> None:
    batch = _pair_batch(seed=31)
    policy = _policy(batch)
    chosen_avg, rejected_avg = policy.averaged()
    namespace = types.SimpleNamespace(
        alpha=0.0,
        beta=2.0,
        simpo_gamma=gamma,
        loss_type="simpo",
        label_smoothing=smoothing,
        accelerator=_Accelerator(),
    )
    trl_losses, chosen_rewards, rejected_rewards = CPOTrainer.cpo_loss(namespace, chosen_avg, rejected_avg)
    per_token_chosen = batch["per_token"][:PAIRS]
    trl_nll = -per_token_chosen[batch["mask"][:PAIRS, 1:].bool()].mean()
    expected = trl_losses.mean() + cpo_alpha * trl_nll  # CPOTrainer.get_batch_loss_metrics

    loss, ours = losses.simpo_loss(
        policy, beta=2.0, gamma=gamma, cpo_alpha=cpo_alpha, label_smoothing=smoothing
    )
    assert abs(float(loss) - float(expected)) < TOLERANCE
    assert torch.allclose(ours["rewards/chosen"], chosen_rewards, atol=TOLERANCE)
    assert torch.allclose(ours["rewards/rejected"], rejected_rewards, atol=TOLERANCE)
