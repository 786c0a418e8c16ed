"""DeepSpeed ZeRO optimizer state in axr checkpoints, without DeepSpeed's pickles.

DeepSpeed's ``save_checkpoint`` writes its state with ``torch.save`` (pickles), which axr
checkpoints never hold. Under ZeRO each rank owns one flat fp32 partition per parameter group
(the master weights) and the torch optimizer's state for that partition (Adam's moments, its
step); together with the model weights (saved whole, gathered, like every axr checkpoint)
that is all a run needs to continue exactly. Each rank writes its own partitions to
``optimizer_<rank>.safetensors`` (``axr.train.state_file``: tensors and JSON only) and reads
them back after ``accelerator.prepare`` built the same partitions.

The partitions depend on the number of ranks and the ZeRO stage: the checkpoint's data plan
already pins the world size, and the file records the stage and the partition sizes, so a
resume under another layout is a clear error instead of misplaced moments.

The fp32 master weights matter under bf16: the model weights in the checkpoint are the bf16
copies, and rebuilding the masters from them would drop the low bits every step kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.train.state_file import load_state, save_state

_FORMAT = "axr-zero-partitions-1"


def zero_file_name(rank: int) -> str:
    return f"optimizer_{rank}.safetensors"


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return bool(accelerator.distributed_type == DistributedType.DEEPSPEED)


def _partitions(engine: Any) -> tuple[int, Any, list[Any]]:
    """(ZeRO stage, the torch optimizer inside ZeRO, this rank's flat fp32 partitions)."""
    zero = engine.optimizer
    stage = int(engine.zero_optimization_stage())
    if stage == 3:
        flats = list(zero.fp32_partitioned_groups_flat)
        if getattr(zero, "swap_optimizer", False) or any(flat is None for flat in flats):
            raise ConfigError(
                "deepspeed: checkpoints with ZeRO-3 NVMe offload are not supported yet (the optimizer "
                "state lives in swap files)"
            )
    elif stage in (1, 2):
        flats = list(zero.single_partition_of_fp32_groups)
    else:
        raise ConfigError(
            "deepspeed: checkpoints under ZeRO stage 0 are not supported yet; use stage 1, 2 or 3 "
            '(or save_strategy = "no")'
        )
    return stage, zero.optimizer, flats


def _check_no_loss_scaler(engine: Any) -> None:
    if engine.fp16_enabled():
        # The dynamic loss scale (and its skipped steps) would have to be saved too.
        raise ConfigError(
            "deepspeed: checkpoints with fp16 under DeepSpeed are not supported yet (the loss scaler "
            'state is not saved); train in bf16 or fp32, or set save_strategy = "no"'
        )


def save_zero_state(engine: Any, folder: Path, rank: int, world_size: int) -> None:
    """Write this rank's ZeRO partitions, their optimizer state and the group settings (lr, betas...)."""
    _check_no_loss_scaler(engine)
    stage, inner, flats = _partitions(engine)
    state = {
        "format": _FORMAT,
        "zero_stage": stage,
        "rank": rank,
        "world_size": world_size,
        "partition_sizes": [int(flat.numel()) for flat in flats],
        "partitions": [flat.detach() for flat in flats],
        "optimizer_state": [dict(inner.state.get(flat, {})) for flat in flats],
        # ZeRO-3 empties each group's "params" between steps; the rest (lr, betas, ...) is the state.
        "groups": [{k: v for k, v in group.items() if k != "params"} for group in inner.param_groups],
        "global_steps": int(engine.global_steps),
        "global_samples": int(engine.global_samples),
    }
    save_state(state, folder / zero_file_name(rank))


def load_zero_state(engine: Any, folder: Path, rank: int, world_size: int) -> None:
    """Put this rank's partitions and optimizer state back (the model weights are already loaded)."""
    import torch

    _check_no_loss_scaler(engine)
    file = folder / zero_file_name(rank)
    if not file.is_file():
        written_by = "without DeepSpeed" if (folder / "optimizer.safetensors").is_file() else "by another run"
        raise ConfigError(
            f"resume_from_checkpoint: {file} is missing: {folder} was written {written_by}, and a "
            "DeepSpeed run resumes only from a checkpoint of a DeepSpeed run with as many processes"
        )
    saved = load_state(file)
    stage, inner, flats = _partitions(engine)
    sizes = [int(flat.numel()) for flat in flats]
    if saved.get("format") != _FORMAT or saved["zero_stage"] != stage or saved["partition_sizes"] != sizes:
        raise ConfigError(
            f"resume_from_checkpoint: {file} holds ZeRO-{saved.get('zero_stage')} partitions of sizes "
            f"{saved.get('partition_sizes')}, this run has ZeRO-{stage} partitions of sizes {sizes}; "
            "resume with the same DeepSpeed config, model, adapter and number of processes"
        )
    if len(saved["groups"]) != len(inner.param_groups):
        raise ConfigError(f"resume_from_checkpoint: {file} has another number of optimizer parameter groups")
    with torch.no_grad():
        for flat, values, moments in zip(flats, saved["partitions"], saved["optimizer_state"], strict=True):
            flat.copy_(values)
            # Tensors of the partition's shape live where the partition lives; Adam's step stays as saved.
            inner.state[flat] = {
                key: value.to(flat.device) if torch.is_tensor(value) and value.shape == flat.shape else value
                for key, value in moments.items()
            }
    for group, settings in zip(inner.param_groups, saved["groups"], strict=True):
        group.update(settings)
    engine.global_steps = saved["global_steps"]
    engine.global_samples = saved["global_samples"]
