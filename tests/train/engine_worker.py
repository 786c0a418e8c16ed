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
from launch import engine_facts

from axr.config import load_config
from axr.train.loop import TrainingData, train

TRAIN_ROWS, EVAL_ROWS = 24, 1
PROBE = [[5, 17, 300, 4000, 12, 9, 31000, 7]]


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
