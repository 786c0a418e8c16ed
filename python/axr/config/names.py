"""Optimizer and learning-rate schedule names, checked at validation.

Axolotl accepts transformers' optimizer and scheduler names plus its own; axr builds some of them
(``axr.train.optim``). A name axr does not build yet is refused as *not supported yet* when the
config is validated, not when training starts; a name Axolotl does not know either is an error.
"""

from __future__ import annotations

from axr.config.schema import AxrConfig
from axr.train.optim import supported_optimizers

# The names build_optimizer knows (torch, bitsandbytes); importing it loads no torch.
BUILT_OPTIMIZERS = tuple(supported_optimizers())
"""Optimizers ``axr.train.optim.build_optimizer`` builds and the ledger counts as supported."""
OTHER_AXOLOTL_OPTIMIZERS = (
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adamw_apex_fused",
    "adamw_anyprecision",
    "adamw_torch_4bit",
    "adamw_torch_8bit",
    "rmsprop",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "lomo",
    "adalomo",
    "grokadamw",
    "schedule_free_radam",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "apollo_adamw",
    "apollo_adamw_layerwise",
    "stable_adamw",
    "optimi_adamw",
    "ao_adamw_4bit",
    "ao_adamw_8bit",
    "ao_adamw_fp8",
    "adopt_adamw",
    "came_pytorch",
    "muon",
    "dion",
    "sinkgd",
    "flash_adamw",
    "flash_adam",
    "flash_sgd",
    "flash_sgdw",
    "flash_lion",
    "q_galore_adamw8bit",
)
BUILT_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "one_cycle")
OTHER_AXOLOTL_SCHEDULERS = (
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "rex",
    "log_sweep",
)


def name_problems(config: AxrConfig) -> list[str]:
    """Problem lines for ``optimizer`` and ``lr_scheduler`` names axr does not build."""
    problems: list[str] = []
    optimizer = config.optimizer
    if optimizer == "paged_ademamix_32bit":
        problems.append(
            "optimizer: not supported yet: 'paged_ademamix_32bit' (bitsandbytes 0.50 crashes on it "
            "without a GPU); use 'paged_ademamix_8bit' or 'ademamix_8bit'"
        )
    elif optimizer in OTHER_AXOLOTL_OPTIMIZERS:
        problems.append(
            f"optimizer: not supported yet: {optimizer!r}; axr builds {', '.join(BUILT_OPTIMIZERS)}"
        )
    elif optimizer not in BUILT_OPTIMIZERS:
        problems.append(
            f"optimizer: unknown optimizer {optimizer!r}; axr builds {', '.join(BUILT_OPTIMIZERS)}"
        )
    scheduler = config.lr_scheduler
    if scheduler in OTHER_AXOLOTL_SCHEDULERS:
        problems.append(
            f"lr_scheduler: not supported yet: {scheduler!r}; axr has {', '.join(BUILT_SCHEDULERS)}"
        )
    elif scheduler not in BUILT_SCHEDULERS:
        built = ", ".join(BUILT_SCHEDULERS)
        problems.append(f"lr_scheduler: unknown schedule {scheduler!r}; axr has {built}")
    return problems
