"""Checkpoints: save and restore everything a resumed run needs to continue exactly.

A checkpoint folder ``output_dir/checkpoint-<step>/`` holds::

    adapter_model.safetensors + adapter_config.json   (LoRA)   or   model*.safetensors + config.json (full)
    optimizer.pt, scheduler.pt                         optimizer moments and schedule position
    rng_state_<rank>.pt                                python, numpy, torch (and CUDA) generators, per rank
    trainer_state.json                                 step, epoch, micro-batches consumed in the epoch, ...

It is written as ``checkpoint-<step>.tmp`` and renamed when complete, so a crash
never leaves a folder that looks whole. The data position is (epoch, micro-batches
consumed in that epoch): the batch plan is a pure function of (seed, epoch, rank),
so a resumed run skips exactly the micro-batches it already trained on.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from axr.errors import ConfigError

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


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


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir``, if any."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


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
) -> Path:
    """Write ``checkpoint-<step>`` (all ranks call this; rank 0 writes the shared files)."""
    import torch

    step = trainer_state["step"]
    final = Path(output_dir) / f"{PREFIX}{step}"
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng_state_{accelerator.process_index}.pt")
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(
            str(staging), state_dict=state_dict, safe_serialization=True
        )
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_weights(model: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
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
        state.update(load_file(str(file)))
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


def load_checkpoint(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, folder: str | Path
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNG from ``folder``; return its trainer state."""
    import torch

    path = Path(folder)
    if not (path / STATE_FILE).exists():
        raise ConfigError(
            f"resume_from_checkpoint: {path} is not a complete axr checkpoint (no {STATE_FILE})"
        )
    _load_weights(accelerator.unwrap_model(model), path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.exists():
        restore_rng_state(torch.load(rng_file, weights_only=False))
    state: dict[str, Any] = json.loads((path / STATE_FILE).read_text())
    return state
