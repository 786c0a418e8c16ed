"""FSDP2 checkpoints with ``state_dict_type = SHARDED_STATE_DICT``, without pickles.

With ``FULL_STATE_DICT`` (the default) a checkpoint gathers every parameter and its optimizer
moments whole on rank 0, which needs the whole model in one process's memory at every save.
``SHARDED_STATE_DICT`` has each rank write only the shards it holds. torch's own sharded format
(``torch.distributed.checkpoint``) writes its metadata with pickle, which axr checkpoints never
hold, so each rank writes its shards as safetensors through ``axr.train.state_file``:

    model_shard_<rank>.safetensors       this rank's part of each saved parameter, and the layout
    optimizer_shard_<rank>.safetensors   this rank's part of the optimizer moments, the groups

Under FSDP1 the weights are saved whole (gathered) and the optimizer state per rank, with the
same optimizer file: each rank's moments belong to its views of the original parameters, and
torch's gathered FSDP1 optimizer state did not round-trip the moments exactly when measured
(exp_avg came back wrong).

A LoRA/QLoRA checkpoint holds the trainable (adapter) parameters only: the base weights come from
the base model again. Reading a checkpoint back copies the bytes into the shards the prepared
model already has, so the layout (number of ranks, the wrapped model, the adapter) must be the
one that wrote it: the file records it and a resume under another layout is a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.train.state_file import load_state, save_state

_FORMAT = "axr-fsdp-shards-1"


def model_shard_name(rank: int) -> str:
    return f"model_shard_{rank}.safetensors"


def optimizer_shard_name(rank: int) -> str:
    return f"optimizer_shard_{rank}.safetensors"


def is_sharded_checkpoint(folder: Path) -> bool:
    return (folder / model_shard_name(0)).is_file()


def _saved_parameters(model: Any, trainable_only: bool) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    chosen = {
        name: parameter
        for name, parameter in model.named_parameters()
        if parameter.requires_grad or not trainable_only
    }
    plain = [name for name, parameter in chosen.items() if not isinstance(parameter, DTensor)]
    if plain:
        raise ConfigError(
            "fsdp_config.state_dict_type = SHARDED_STATE_DICT needs every saved parameter sharded by "
            f"FSDP2; {plain[0]} is not (set fsdp_version = 2, or use FULL_STATE_DICT)"
        )
    return chosen


def _layout(parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "shape": list(parameter.shape),
            "local_shape": list(parameter.to_local().shape),
            "placements": [str(placement) for placement in parameter.placements],
        }
        for name, parameter in parameters.items()
    }


def save_model_shards(model: Any, folder: Path, rank: int, world_size: int, *, trainable_only: bool) -> None:
    """Write this rank's shards of the saved parameters (every rank calls this)."""
    parameters = _saved_parameters(model, trainable_only)
    header = {"format": _FORMAT, "rank": rank, "world_size": world_size, "layout": _layout(parameters)}
    weights = {name: parameter.to_local() for name, parameter in parameters.items()}
    save_state({**header, "weights": weights}, folder / model_shard_name(rank))


def save_optimizer_shards(optimizer: Any, folder: Path, rank: int, world_size: int) -> None:
    """Write this rank's optimizer state: the moments of its shards (FSDP2 DTensors or FSDP1's
    per-rank views of the original parameters), as they are, without gathering."""
    from torch.distributed.tensor import DTensor

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    whole = inner.state_dict()
    state: dict[int, dict[str, Any]] = {}
    sharded_keys: dict[int, list[str]] = {}
    for index, values in whole["state"].items():
        state[index] = {}
        for key, value in values.items():
            if isinstance(value, DTensor):
                sharded_keys.setdefault(index, []).append(key)
                value = value.to_local()
            state[index][key] = value
    header = {"format": _FORMAT, "rank": rank, "world_size": world_size}
    save_state(
        {**header, "state": state, "sharded_keys": sharded_keys, "param_groups": whole["param_groups"]},
        folder / optimizer_shard_name(rank),
    )


def _read(folder: Path, name: str, rank: int, world_size: int) -> dict[str, Any]:
    file = folder / name
    if not file.is_file():
        raise ConfigError(
            f"resume_from_checkpoint: {file} is missing: a sharded checkpoint has one file per rank, and "
            f"this run has {world_size} processes; resume with as many processes as wrote it"
        )
    saved = load_state(file)
    if saved.get("format") != _FORMAT or saved.get("rank") != rank or saved.get("world_size") != world_size:
        raise ConfigError(
            f"resume_from_checkpoint: {file} was written by rank {saved.get('rank')} of "
            f"{saved.get('world_size')} processes; this is rank {rank} of {world_size}. Resume a sharded "
            "checkpoint with as many processes as wrote it"
        )
    return saved


def load_model_shards(model: Any, folder: Path, rank: int, world_size: int, *, trainable_only: bool) -> None:
    """Copy this rank's saved shards into the prepared (sharded) model."""
    import torch

    parameters = _saved_parameters(model, trainable_only)
    file = folder / model_shard_name(rank)
    saved = _read(folder, model_shard_name(rank), rank, world_size)
    layout = _layout(parameters)
    if saved["layout"] != layout:
        differs = sorted(set(saved["layout"]) ^ set(layout)) or [
            name for name in layout if saved["layout"][name] != layout[name]
        ]
        raise ConfigError(
            f"resume_from_checkpoint: {file} holds another parameter layout than this run (first "
            f"difference: {differs[0]}); resume with the same model, adapter, fsdp_config and number "
            "of processes"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            values = saved["weights"][name]
            if values.is_floating_point() and not bool(torch.isfinite(values).all()):
                raise ConfigError(
                    f"resume_from_checkpoint: {file} holds NaN or infinite values in {name}; training "
                    "on from it would only produce NaN. Resume from an earlier checkpoint"
                )
            parameter.to_local().copy_(values)


def load_optimizer_shards(optimizer: Any, folder: Path, rank: int, world_size: int) -> None:
    """Rebuild this rank's optimizer state from its file (FSDP2 moments become DTensors again)."""
    from torch.distributed.tensor import DTensor

    moments = _read(folder, optimizer_shard_name(rank), rank, world_size)
    inner = getattr(optimizer, "optimizer", optimizer)
    ordered = [parameter for group in inner.param_groups for parameter in group["params"]]
    if len(ordered) != sum(len(group["params"]) for group in moments["param_groups"]):
        raise ConfigError(
            f"resume_from_checkpoint: {folder / optimizer_shard_name(rank)} holds the state of another "
            "number of parameters; resume with the same model and adapter"
        )
    state: dict[int, dict[str, Any]] = {}
    for index, values in moments["state"].items():
        parameter = ordered[index]
        sharded = set(moments["sharded_keys"].get(index, []))
        state[index] = {
            key: DTensor.from_local(
                value.to(parameter.device),
                parameter.device_mesh,
                parameter.placements,
                run_check=False,
                shape=parameter.shape,
                stride=parameter.stride(),
            )
            if key in sharded
            else value
            for key, value in values.items()
        }
    inner.load_state_dict({"state": state, "param_groups": moments["param_groups"]})
