"""Run by test_preference_scaling.py, under `torchrun` or as a plain process: DPO on a config file.

Records, per rank, the losses, gradient norms and the sequences of every training micro-batch
(so the test can check that a pair's chosen and rejected sequences always travel together), and
on rank 0 the per-step preference metrics from metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from axr.config import load_config
from axr.train import preference
from axr.train.loop import train


def run(config_path: str, record: str) -> None:
    import torch.distributed as dist

    seen: list[list[int]] = []
    collate = preference.collate_units

    def recording(data: Any, bins: list[list[int]], **keys: Any) -> dict[str, Any]:
        batch = collate(data, bins, **keys)
        if not keys.get("kl"):
            seen.append(batch["sequences"].tolist())
        return batch

    preference.collate_units = recording
    cfg = load_config(config_path)
    result = train(cfg, data=preference.open_preference_data(cfg))
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    facts: dict[str, Any] = {
        "losses": result.losses,
        "grad_norms": result.grad_norms,
        "micro_batches": seen,
        "quantized_layers": sum(
            type(m).__module__.startswith("bitsandbytes") and type(m).__name__ == "Linear4bit"
            for m in result.model.modules()
        ),
    }
    if rank == 0:
        lines = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
        facts["metrics"] = [record for record in map(json.loads, lines) if "rewards/accuracies" in record]
    Path(f"{record}.rank{rank}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
