"""What a checkpoint records about how the data was dealt, checked before a run resumes from it.

A checkpoint stores its data position as (epoch, micro-batches consumed in that epoch). That
position means the same rows only under the same plan: the same store, seed, packing, micro-batch
size, accumulation and number of ranks. A resumed run with another plan would silently train
on other rows (some twice, some never), so any difference is an error naming the keys.
"""

from __future__ import annotations

from typing import Any

from axr.config import AxrConfig
from axr.errors import ConfigError

# Keys of the plan with the config key (or launcher setting) a user changes to match.
_WHERE = {
    "world_size": "the number of processes (launcher)",
    "micro_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "seed": "seed",
    "sample_packing": "sample_packing",
    "packing_strategy": "packing_strategy",
    "sequence_len": "sequence_len",
    "group_by_length": "group_by_length",
    "padded_plan": "the axr version (checkpoints of unpacked runs from before the padded plan moved into "
    "the core deal rows differently)",
    "store_fingerprint": "the prepared data (datasets, tokenizer or preprocessing keys changed)",
    "train_samples": "the training data",
}


def plan_of(cfg: AxrConfig, train_data: Any, world_size: int) -> dict[str, Any]:
    """The plan of this run, as a checkpoint records it (JSON values)."""
    meta = getattr(train_data, "meta", None) or {}
    packing = bool(cfg.sample_packing)
    return {
        "world_size": world_size,
        "micro_batch_size": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "seed": cfg.seed,
        "sample_packing": packing,
        "packing_strategy": cfg.packing_strategy if packing else None,
        "sequence_len": cfg.sequence_len,
        "group_by_length": None if packing else bool(cfg.group_by_length),
        # The core's padded plan (one sample per bin); a version 1 is the earlier Python plan.
        "padded_plan": None if packing else 2,
        "store_fingerprint": meta.get("fingerprint"),
        "train_samples": len(train_data),
    }


def check_plan(recorded: Any, current: dict[str, Any], checkpoint: str) -> None:
    """Raise a ConfigError naming every difference between the checkpoint's plan and this run's."""
    if not isinstance(recorded, dict):
        raise ConfigError(
            f"resume_from_checkpoint: {checkpoint} records no data plan (written by an older axr); "
            "it cannot be resumed exactly"
        )
    differences = [
        f"{key}: checkpoint {recorded.get(key)!r}, this run {value!r} ({_WHERE[key]})"
        for key, value in current.items()
        if recorded.get(key) != value
    ]
    if differences:
        raise ConfigError(
            f"resume_from_checkpoint: {checkpoint} was written under another data plan, so its data "
            "position would point at other rows; resume with the same settings. Differences: "
            + "; ".join(differences)
        )
