"""Shared by the multi-process tests: launching gloo ranks here, and what an engine made of a model.

``engine_facts`` is how those tests tell that an engine really ran: accelerate silently trains whole
replicas on CPU processes when FSDP is not entered, and equal losses alone would not show it.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

# DeepSpeed JIT-compiles a shared-memory op on its first CPU start (~40 s, or minutes on a busy
# machine) and caches it here: one place for every launch of the session and later sessions.
TORCH_EXTENSIONS_DIR = os.environ.get(
    "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_environment() -> dict[str, str]:
    return dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        TORCH_EXTENSIONS_DIR=TORCH_EXTENSIONS_DIR,
        # ninja (for DeepSpeed's JIT build) is installed next to this Python.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def torchrun(processes: int) -> list[str]:
    """The command prefix that starts ``processes`` ranks on loopback (a free port each launch)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
    ]  # fmt: skip


def engine_facts(model: Any) -> dict[str, Any]:
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    parameters = list(model.parameters())
    facts: dict[str, Any] = {
        "dtensor_parameters": sum(isinstance(p, DTensor) for p in parameters),
        "parameters": len(parameters),
        # A sharded DTensor holds a part of the parameter on this rank.
        "sharded_dtensors": sum(
            isinstance(p, DTensor) and p.to_local().numel() < p.numel() for p in parameters
        ),
        # 4-bit layers whose packed weights (stored as bf16 for FSDP) FSDP2 sharded.
        "sharded_4bit": sum(
            type(m).__module__.startswith("bitsandbytes")
            and type(m).__name__ == "Linear4bit"
            and isinstance(m.weight, DTensor)
            and m.weight.dtype == torch.bfloat16
            and m.weight.to_local().numel() < m.weight.numel()
            for m in model.modules()
        ),
        # FSDP1 units whose flat parameter holds a part of the unit's parameters on this rank.
        "fsdp1_sharded_units": sum(
            isinstance(m, FullyShardedDataParallel)
            and m._flat_param is not None
            and m._flat_param.numel() < m._flat_param._unpadded_unsharded_size.numel()
            for m in model.modules()
        ),
        # ZeRO-3 replaces each parameter's data by an empty tensor and keeps the full shape in ds_shape.
        "zero3_partitioned": sum(hasattr(p, "ds_id") and p.data.numel() == 0 for p in parameters),
    }
    if hasattr(model, "global_steps"):
        facts["deepspeed_optimizer_steps"] = int(model.global_steps)
        facts["deepspeed_micro_steps"] = int(model.micro_steps)
        facts["zero_stage"] = int(model.zero_optimization_stage())
        facts["deepspeed_bf16"] = bool(model.bfloat16_enabled())
        zero = model.optimizer
        facts["deepspeed_offload"] = {
            # Where ZeRO-3 keeps the fp32 partitions and the optimizer state, and the parameter offload.
            "optimizer": "cpu" if getattr(zero, "offload_optimizer", False) else "none",
            "param": "cpu" if getattr(zero, "offload_param", False) else "none",
        }
    return facts
