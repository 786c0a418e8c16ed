"""Optimizers and learning-rate schedules by their Axolotl names.

Weight decay applies to weight matrices only: biases and normalisation weights
(1-D parameters) are not decayed, as in transformers' Trainer.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Any

from axr.errors import ConfigError
from axr.train.relora import restart_schedule

TORCH_ADAMW = {"adamw_torch", "adamw_hf", "adamw_torch_fused"}
"""adamw_hf was transformers' own AdamW, removed from transformers; torch's AdamW computes the same update."""
BITSANDBYTES_OPTIMIZERS = {
    "adamw_bnb_8bit": "AdamW",
    "adamw_8bit": "AdamW",
    "paged_adamw_8bit": "AdamW",
    "paged_adamw_32bit": "AdamW",
    "lion_8bit": "Lion",
    "lion_32bit": "Lion",
    "paged_lion_8bit": "Lion",
    "paged_lion_32bit": "Lion",
    "rmsprop_bnb": "RMSprop",
    "rmsprop_bnb_8bit": "RMSprop",
    "rmsprop_bnb_32bit": "RMSprop",
    "ademamix": "AdEMAMix",
    "ademamix_8bit": "AdEMAMix",
    "paged_ademamix_8bit": "AdEMAMix",
}
"""transformers' bitsandbytes optimizer names (Axolotl passes them through): the bitsandbytes class,
with 8-bit state when the name says ``8bit`` and paged state when it says ``paged`` (on a CPU,
bitsandbytes warns and keeps the state unpaged). Only parameters of at least ``min_8bit_size``
(default 4096) elements get 8-bit state; ``optim_args`` can lower it. ``paged_ademamix_32bit`` is
left out: bitsandbytes 0.50 fails on it on the CPU."""
OTHER_OPTIMIZERS = {"sgd", "adagrad", "adafactor"}
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "one_cycle")


def supported_optimizers() -> list[str]:
    """Every optimizer name ``build_optimizer`` accepts (some need an optional package)."""
    return sorted(TORCH_ADAMW | OTHER_OPTIMIZERS | set(BITSANDBYTES_OPTIMIZERS))


def check_names(cfg: Any) -> None:
    """Fail before any work on an optimizer or schedule name this module does not know."""
    if cfg.optimizer not in supported_optimizers():
        raise ConfigError(
            f"optimizer: unknown optimizer {cfg.optimizer!r}; supported: {', '.join(supported_optimizers())}"
        )
    if (cfg.lr_scheduler or "cosine") not in SCHEDULERS:
        raise ConfigError(
            f"lr_scheduler: unknown schedule {cfg.lr_scheduler!r}; supported: {', '.join(SCHEDULERS)}"
        )


def parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed (matrices) and not decayed (biases, norms)."""
    decayed: list[Any] = []
    not_decayed: list[Any] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decayed if parameter.ndim >= 2 else not_decayed).append(parameter)
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if not_decayed:
        groups.append({"params": not_decayed, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg: Any, model: Any) -> Any:
    """The optimizer named by ``cfg.optimizer`` over the model's trainable parameters."""
    import torch

    name = cfg.optimizer
    groups = parameter_groups(model, cfg.weight_decay)
    learning_rate = cfg.learning_rate
    # 0 is a valid beta (adam_beta1 = 0 turns momentum off): only an unset value takes the default.
    betas = (
        0.9 if cfg.adam_beta1 is None else cfg.adam_beta1,
        0.999 if cfg.adam_beta2 is None else cfg.adam_beta2,
    )
    epsilon = 1e-8 if cfg.adam_epsilon is None else cfg.adam_epsilon
    extra = dict(cfg.optim_args or {})  # the schema parsed "k=v,k2=v2" text
    if name in TORCH_ADAMW:
        fused = name == "adamw_torch_fused"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=epsilon, fused=fused, **extra)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, **extra)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=learning_rate, **extra)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # An explicit learning rate, as the config gives one, rather than Adafactor's relative steps.
        options = {"scale_parameter": False, "relative_step": False, "warmup_init": False} | extra
        return Adafactor(groups, lr=learning_rate, **options)
    if name in BITSANDBYTES_OPTIMIZERS:
        return _bitsandbytes_optimizer(name, groups, learning_rate, betas, epsilon, extra)
    raise ConfigError(
        f"optimizer: unknown optimizer {name!r}; supported: {', '.join(supported_optimizers())}"
    )


def _bitsandbytes_optimizer(
    name: str,
    groups: list[dict[str, Any]],
    learning_rate: float,
    betas: tuple[float, float],
    epsilon: float,
    extra: dict[str, Any],
) -> Any:
    """transformers' recipe for its bitsandbytes names, so a config trains as it does under Axolotl."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"optimizer: {name!r} needs the bitsandbytes package, which is not installed: "
            "pip install 'axr[bnb]' (or pick adamw_torch)"
        )
    import bitsandbytes

    family = BITSANDBYTES_OPTIMIZERS[name]
    optimizer_class = getattr(bitsandbytes.optim, family)
    options: dict[str, Any] = {"optim_bits": 8 if "8bit" in name else 32}
    if family != "RMSprop":
        options["is_paged"] = "paged" in name
    if family == "AdamW":
        options |= {"betas": betas, "eps": epsilon}
    elif family == "Lion":
        options["betas"] = betas
    elif family == "AdEMAMix":
        # AdEMAMix's third beta, alpha and schedules come from optim_args, as in transformers.
        options |= {
            "betas": (
                float(extra.pop("beta1", betas[0])),
                float(extra.pop("beta2", betas[1])),
                float(extra.pop("beta3", 0.9999)),
            ),
            "alpha": float(extra.pop("alpha", 5.0)),
            "eps": float(extra.pop("eps", epsilon)),
        }
    return optimizer_class(groups, lr=learning_rate, **(options | extra))


def warmup_steps_of(cfg: Any, total_steps: int) -> int:
    """``warmup_steps``, or ``warmup_ratio`` of the total steps, or 0."""
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    if cfg.warmup_ratio:
        return math.ceil(cfg.warmup_ratio * total_steps)
    return 0


def cosine_factor(
    step: int, *, warmup: int, total: int, min_lr_ratio: float = 0.0, constant_lr_ratio: float | None = None
) -> float:
    """Linear warmup, then a half cosine from 1 down to ``min_lr_ratio``.

    With ``constant_lr_ratio`` the cosine reaches ``min_lr_ratio`` at that fraction of the
    total steps and stays there (the "constant learning rate after decay" of arXiv 2308.04014).
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    end = total if constant_lr_ratio is None else max(warmup + 1, int(total * constant_lr_ratio))
    progress = min(1.0, (step - warmup) / max(1, end - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(cfg: Any, optimizer: Any, total_steps: int) -> Any:
    """The learning-rate schedule named by ``cfg.lr_scheduler`` over ``total_steps`` optimizer steps."""
    import torch

    name = cfg.lr_scheduler or "cosine"
    warmup = warmup_steps_of(cfg, total_steps)
    # jagged_restart_* (or ReLoRA's older relora_steps/_warmup_steps/_anneal_steps spelling)
    restarts = restart_schedule(cfg)
    factor: Callable[[int], float]
    if name == "cosine":
        min_ratio = cfg.cosine_min_lr_ratio or 0.0
        constant_ratio = cfg.cosine_constant_lr_ratio

        def factor(step: int) -> float:
            return cosine_factor(
                step,
                warmup=warmup,
                total=total_steps,
                min_lr_ratio=min_ratio,
                constant_lr_ratio=constant_ratio,
            )

    elif name == "linear":

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    elif name in ("constant", "constant_with_warmup"):

        def factor(step: int) -> float:
            return (step + 1) / (warmup + 1) if step < warmup else 1.0

    elif name == "one_cycle":
        if restarts is not None:
            raise ConfigError(
                "jagged_restart_steps: jagged restarts scale a cosine, linear or constant schedule, "
                "not one_cycle; pick one of those for lr_scheduler or drop jagged_restart_steps"
            )
        div_factor = cfg.lr_div_factor or 25.0
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(total_steps, 2),
            pct_start=min(0.99, max(warmup, 1) / max(total_steps, 2)),
            div_factor=div_factor,
            final_div_factor=1e4,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    else:
        raise ConfigError(f"lr_scheduler: unknown schedule {name!r}; supported: {', '.join(SCHEDULERS)}")
    if restarts is not None:
        inner = factor
        every, restart_warmup, restart_anneal = restarts
        options: dict[str, Any] = {
            "every": every,
            # Axolotl's defaults: 10 warmup steps, 1 anneal step, a floor of cosine_min_lr_ratio or 0.001.
            "warmup": 10 if restart_warmup is None else int(restart_warmup),
            "anneal": 1 if restart_anneal is None else int(restart_anneal),
            "min_scale": cfg.cosine_min_lr_ratio or 0.001,
        }

        def factor(step: int) -> float:
            return inner(step) * jagged_scale(step, **options)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def jagged_scale(step: int, *, every: int, warmup: int, anneal: int, min_scale: float) -> float:
    """Axolotl's jagged restarts: every ``every`` steps the learning rate drops to ``min_scale`` of the
    schedule's and warms back up over ``warmup`` steps; it anneals over the ``anneal`` steps before
    each restart. Nothing changes before the first restart's warmup would begin."""
    if step < every - warmup:
        return 1.0
    progress = step % every
    if progress < warmup:
        cycle = min(1.0, progress / warmup)
    elif progress > every - anneal:
        cycle = min(1.0, (every - progress) / anneal)
    else:
        cycle = 1.0
    return cycle * (1.0 - min_scale) + min_scale
