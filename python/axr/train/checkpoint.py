"""Checkpoints: save and restore everything a resumed run needs to continue exactly.

A checkpoint folder ``output_dir/checkpoint-<step>/`` holds::

    adapter_model.safetensors + adapter_config.json   (LoRA)   or   model*.safetensors + config.json (full)
    optimizer.safetensors, scheduler.safetensors       optimizer moments and schedule position
    optimizer_<rank>.safetensors                       under DeepSpeed ZeRO instead: each rank's partitions
    optimizer_shard_<rank>.safetensors                 under FSDP1, and FSDP2 with SHARDED_STATE_DICT,
                                                       instead: each rank's optimizer state
    model_shard_<rank>.safetensors                     under SHARDED_STATE_DICT instead of the whole
                                                       weights: each rank's shards (``fsdp_state``)
    rng_state_<rank>.safetensors                       python, numpy, torch (and CUDA) generators, per rank
    relora_base.safetensors                            with ReLoRA: the base weights merged so far
    trainer_state.json                                 step, epoch, micro-batches consumed in the epoch, ...
    manifest.json                                      size and sha256 of every other file, written last

Nothing in it is a pickle (``axr.train.state_file``): resuming from a checkpoint someone
else made reads tensors and JSON, never code. A folder holding a pickle file (``*.pt``,
``*.bin``, ...) is refused before anything in it is read.

It is written as ``checkpoint-<step>.tmp`` and renamed when complete, so a crash
never leaves a folder that looks whole; the manifest is checked before anything is loaded, so a
file damaged or changed since (a truncated copy, a full disk, a bad sector) is found by name.
``auto_resume_from_checkpoints`` skips, with a warning, newer checkpoints that fail it. The
manifest guards against damage, not against someone who rewrites it: what keeps a hostile
checkpoint from running code is that nothing in one is a pickle. No checkpoint holds NaN or
infinite trainable weights: saving one stops training instead (``axr.train.health``).

The data position is (epoch, micro-batches consumed in that epoch): the batch plan is a pure
function of (seed, epoch, rank), so a resumed run skips exactly the micro-batches it already trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from axr.errors import ConfigError
from axr.train.fsdp_state import (
    is_sharded_checkpoint,
    load_model_shards,
    load_optimizer_shards,
    optimizer_shard_name,
    save_model_shards,
    save_optimizer_shards,
)
from axr.train.health import check_weights
from axr.train.state_file import load_state, save_state
from axr.train.zero_state import is_deepspeed, load_zero_state, save_zero_state, zero_file_name

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
SCHEDULER_FILE = "scheduler.safetensors"
MANIFEST_FILE = "manifest.json"
_MANIFEST_FORMAT = "axr-checkpoint-manifest-1"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# Extensions of files that torch.load / pickle would read; a checkpoint holding one is refused.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")


def rng_file_name(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and (child / STATE_FILE).exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from."""
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the generators back where ``rng_state`` found them."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    trainer_state: dict[str, Any],
    output_dir: str | Path,
    *,
    total_limit: int | None = None,
    extra: Callable[[Path], None] | None = None,
    sharded: bool = False,
) -> Path:
    """Write ``checkpoint-<step>`` (all ranks call this; rank 0 writes the shared files, and ``extra``
    writes more of them into the folder, such as ReLoRA's merged base weights). ``sharded``: each
    rank writes its FSDP2 shards of the weights and optimizer state instead (``fsdp_state``)."""
    step = trainer_state["step"]
    check_weights(accelerator, model, step=step, what="checkpoint")
    final = Path(output_dir) / f"{PREFIX}{step}"
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_state(rng_state(), staging / rng_file_name(accelerator.process_index))
    rank, world_size = accelerator.process_index, accelerator.num_processes
    state_dict = None
    if sharded:
        adapter = _has_adapter(accelerator.unwrap_model(model))
        save_model_shards(model, staging, rank, world_size, trainable_only=adapter)
    else:
        state_dict = accelerator.get_state_dict(model)
    deepspeed = is_deepspeed(accelerator)
    if deepspeed:
        # Each rank writes its own ZeRO partitions (optimizer_<rank>.safetensors).
        save_zero_state(model, staging, rank, world_size)
    per_rank_optimizer = sharded or _is_fsdp1(accelerator)
    if per_rank_optimizer:
        save_optimizer_shards(optimizer, staging, rank, world_size)
    whole = not deepspeed and not per_rank_optimizer
    optimizer_state = whole_optimizer_state(accelerator, model, optimizer) if whole else None
    if accelerator.is_main_process:
        if state_dict is not None:
            accelerator.unwrap_model(model).save_pretrained(
                str(staging), state_dict=state_dict, safe_serialization=True
            )
        if optimizer_state is not None:
            save_state(optimizer_state, staging / OPTIMIZER_FILE)
        save_state(scheduler.state_dict(), staging / SCHEDULER_FILE)
        (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        if extra is not None:
            extra(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(staging)  # last: every rank's files are in the folder now
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _is_fsdp1(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    return bool(fsdp and not getattr(accelerator, "is_fsdp2", False))


def _has_adapter(model: Any) -> bool:
    return bool(getattr(model, "peft_config", None))


def whole_optimizer_state(accelerator: Any, model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer state of every parameter, whole, on the main process (every rank calls this).

    Under FSDP each rank holds the state of its shards only: torch gathers it (keyed by parameter
    name) so the checkpoint is the same pickle-free file as without sharding.
    """
    if _is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        gathered: dict[str, Any] = get_optimizer_state_dict(model, optimizer.optimizer, options=options)
        return gathered
    whole: dict[str, Any] = optimizer.state_dict()
    return whole


def _is_fsdp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return bool(accelerator.distributed_type == DistributedType.FSDP)


def _load_optimizer_state(accelerator: Any, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    if _is_fsdp(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # Every rank read the whole state; torch keeps the part of this rank's shards.
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer.optimizer, optim_state_dict=state, options=options)
        return
    optimizer.load_state_dict(state)


def _read_weights(file: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    try:
        tensors: dict[str, Any] = load_file(str(file))
    except Exception as error:
        raise ConfigError(
            f"resume_from_checkpoint: {file} is not a readable safetensors file ({error}); "
            "the checkpoint is damaged"
        ) from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(
                f"resume_from_checkpoint: {file} holds NaN or infinite values in {name}; training on "
                "from it would only produce NaN. Resume from an earlier checkpoint"
            )
    return tensors


def _zero3_gathered(model: Any, adapter: bool) -> Any:
    """Under ZeRO-3 transformers partitions the parameters while loading (each rank holds a slice, the
    tensors look empty): gather those the checkpoint sets, and DeepSpeed re-partitions them after."""
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id") and (p.requires_grad or not adapter)]
    if not partitioned:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0)


def _load_weights(model: Any, folder: Path) -> None:
    adapter = (folder / "adapter_model.safetensors").exists()
    with _zero3_gathered(model, adapter):
        _load_weights_whole(model, folder)


def _load_weights_whole(model: Any, folder: Path) -> None:
    if (folder / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, _read_weights(folder / "adapter_model.safetensors"))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ConfigError(
                f"resume_from_checkpoint: {folder} has adapter weights this model lacks: {unexpected[:5]}"
            )
        return
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise ConfigError(
            f"resume_from_checkpoint: {folder} holds no adapter_model.safetensors or model*.safetensors"
        )
    state: dict[str, Any] = {}
    for file in files:
        state.update(_read_weights(file))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ConfigError(
            f"resume_from_checkpoint: {folder} has weights this model lacks: {result.unexpected_keys[:5]}"
        )
    # save_pretrained writes one copy of tied weights (lm_head tied to embed_tokens); other gaps are errors.
    names_by_tensor: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_by_tensor.setdefault(id(parameter), []).append(name)
    tied = {name for names in names_by_tensor.values() if len(names) > 1 for name in names}
    missing = [name for name in result.missing_keys if name not in tied]
    if missing:
        raise ConfigError(f"resume_from_checkpoint: {folder} lacks weights of this model: {missing[:5]}")


def load_checkpoint_weights(model: Any, folder: str | Path) -> None:
    """Restore the weights of ``folder`` into ``model`` before the engine wraps (and maybe shards) it."""
    path = Path(folder)
    if not (path / STATE_FILE).exists():
        raise ConfigError(
            f"resume_from_checkpoint: {path} is not a complete axr checkpoint (no {STATE_FILE})"
        )
    refuse_pickles(path)
    verify_checkpoint(path)
    if is_sharded_checkpoint(path):
        return  # each rank's shards go into the sharded model after prepare (load_checkpoint)
    _load_weights(model, path)


def load_checkpoint(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, folder: str | Path
) -> dict[str, Any]:
    """Restore optimizer, scheduler and this rank's RNG from ``folder``; return its trainer state.

    The weights were restored before ``accelerator.prepare`` (``load_checkpoint_weights``), except a
    sharded checkpoint's: those go into the prepared model's shards here.
    """
    path = Path(folder)
    refuse_pickles(path)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    if is_sharded_checkpoint(path):
        if not getattr(accelerator, "is_fsdp2", False):
            raise ConfigError(
                f"resume_from_checkpoint: {path} holds FSDP2 shards (SHARDED_STATE_DICT); resume it "
                "under FSDP2 with the same fsdp_config and number of processes"
            )
        adapter = _has_adapter(accelerator.unwrap_model(model))
        load_model_shards(model, path, rank, world_size, trainable_only=adapter)
        load_optimizer_shards(optimizer, path, rank, world_size)
    elif _is_fsdp1(accelerator):
        if not (path / optimizer_shard_name(0)).is_file():
            raise ConfigError(
                f"resume_from_checkpoint: {path} was not written under FSDP1 (it has no "
                f"{optimizer_shard_name(0)}); an FSDP1 run resumes only from an FSDP1 checkpoint with "
                "as many processes"
            )
        load_optimizer_shards(optimizer, path, rank, world_size)
    elif (path / optimizer_shard_name(0)).is_file():
        raise ConfigError(
            f"resume_from_checkpoint: {path} was written under FSDP (its optimizer state is per "
            "process); resume it with the same fsdp_config and number of processes"
        )
    elif is_deepspeed(accelerator):
        load_zero_state(model, path, accelerator.process_index, accelerator.num_processes)
    elif not (path / OPTIMIZER_FILE).is_file() and (path / zero_file_name(0)).is_file():
        raise ConfigError(
            f"resume_from_checkpoint: {path} was written under DeepSpeed ZeRO (its optimizer state is "
            "partitioned per process); resume it with the same deepspeed config and number of processes"
        )
    else:
        _load_optimizer_state(accelerator, model, optimizer, load_state(path / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_state(path / SCHEDULER_FILE))
    restore_rng_state(load_state(path / rng_file_name(accelerator.process_index)))
    try:
        state: dict[str, Any] = json.loads((path / STATE_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"resume_from_checkpoint: {path / STATE_FILE} is not valid JSON ({error})"
        ) from None
    return state


def refuse_pickles(folder: Path) -> None:
    """A checkpoint is read only when it holds no file that a pickle loader would open."""
    pickles = sorted(child.name for child in folder.iterdir() if child.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ConfigError(
            f"resume_from_checkpoint: {folder / pickles[0]} is a pickle file; axr checkpoints hold none "
            "(loading a pickle can run any code it names), so this checkpoint is not read. "
            "Resume only from checkpoints axr wrote"
            + (f" (also found: {', '.join(pickles[1:])})" if len(pickles) > 1 else "")
        )


def _sha256(file: Path) -> str:
    with file.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _files_of(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` but the manifest, by its path relative to ``folder``."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if not path.is_dir() and path != folder / MANIFEST_FILE
    }


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file under ``folder`` in its manifest.json."""
    files = {
        name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for name, path in _files_of(folder).items()
    }
    text = json.dumps({"format": _MANIFEST_FORMAT, "files": files}, indent=2) + "\n"
    (folder / MANIFEST_FILE).write_text(text)


def verify_checkpoint(folder: Path, key: str = "resume_from_checkpoint") -> None:
    """ConfigError naming the file unless ``folder`` holds exactly the files its manifest lists,
    each with the recorded size and sha256."""
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.is_file():
        raise ConfigError(
            f"{key}: {folder} has no {MANIFEST_FILE}; an axr checkpoint is complete only with one "
            "(it is written last)"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("format") != _MANIFEST_FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, not {_MANIFEST_FORMAT!r}")
        files = manifest["files"].items()
        listed = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files}
        outside = [name for name in listed if Path(name).is_absolute() or ".." in Path(name).parts]
        if outside:
            raise ValueError(f"{outside[0]!r} is not a path inside the checkpoint")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"{key}: {manifest_file} is damaged ({error})") from None
    present = set(_files_of(folder))
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise ConfigError(
            f"{key}: {folder / unlisted[0]} is not in the checkpoint's {MANIFEST_FILE}: the folder was "
            "changed after axr wrote it"
        )
    for name, (size, sha256) in sorted(listed.items()):
        file = folder / name
        if not file.is_file():
            raise ConfigError(f"{key}: {file} is missing (listed in {manifest_file})")
        actual = file.stat().st_size
        if actual != size:
            raise ConfigError(
                f"{key}: {file} has {actual} bytes, {size} when written: the file is damaged or truncated"
            )
        if _sha256(file) != sha256:
            raise ConfigError(
                f"{key}: {file} does not match the sha256 in {manifest_file}: the file is damaged"
            )


def newest_verified_checkpoint(output_dir: str | Path, *, warn: bool = True) -> Path | None:
    """The newest checkpoint in ``output_dir`` that passes ``verify_checkpoint``; each newer one that
    fails is skipped with a warning naming it and why."""
    for folder in reversed(list_checkpoints(output_dir)):
        try:
            refuse_pickles(folder)
            verify_checkpoint(folder, key="auto_resume_from_checkpoints")
        except ConfigError as error:
            if warn:
                print(f"axr: warning: skipping checkpoint {folder}: {error}", file=sys.stderr)
            continue
        return folder
    return None
