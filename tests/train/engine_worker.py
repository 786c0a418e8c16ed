"""Run under `torchrun` by test_engines.py (or in-process for the 1-process reference).

Trains on in-memory rows with a one-row eval split (so with 2 ranks one rank has no eval row),
then records on rank 0: losses, grad norms, eval losses, what the engine made of the parameters
(DTensor shards, ZeRO-3 partitions, DeepSpeed's optimizer step count) and the trained model's
logits on a fixed input, computed through the engine (a collective under FSDP and ZeRO-3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from helpers import InMemoryDataset, random_rows

from axr.config import load_config
from axr.train.loop import TrainingData, train

TRAIN_ROWS, EVAL_ROWS = 24, 1
PROBE = [[5, 17, 300, 4000, 12, 9, 31000, 7]]


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


def probe_logits(model: Any) -> list[float]:
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE)).logits
    return [float(x) for x in logits[0, -1, :64]]


def run(config_path: str, record: Path) -> None:
    import torch.distributed as dist

    data = TrainingData(
        train=InMemoryDataset(random_rows(TRAIN_ROWS, seed=3)),
        eval=InMemoryDataset(random_rows(EVAL_ROWS, seed=99)),
    )
    result = train(load_config(config_path), data=data)
    facts = engine_facts(result.model)
    logits = probe_logits(result.model)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        record.write_text(
            json.dumps(
                {
                    "losses": result.losses,
                    "grad_norms": result.grad_norms,
                    "eval_losses": result.eval_losses,
                    "logits": logits,
                    **facts,
                }
            )
        )


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]))
