"""Run by the DDP test under `accelerate launch`: train on in-memory rows, record the rows each rank read."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import InMemoryDataset, random_rows

from axr.config import load_config
from axr.train.loop import TrainingData, train


class RecordingDataset(InMemoryDataset):
    def __init__(self, rows):
        super().__init__(rows)
        self.read: list[int] = []

    def __getitem__(self, index):
        self.read.append(int(index))
        return super().__getitem__(index)


def main() -> None:
    config_path, record_dir = sys.argv[1], Path(sys.argv[2])
    dataset = RecordingDataset(random_rows(16, seed=7))
    result = train(load_config(config_path), data=TrainingData(train=dataset))
    rank = os.environ.get("RANK", "0")
    (record_dir / f"rank{rank}.json").write_text(json.dumps({"read": dataset.read, "losses": result.losses}))


if __name__ == "__main__":
    main()
