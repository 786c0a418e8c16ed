"""An in-memory stand-in for ``axr.data.PreparedDataset`` (tests and benchmarks)."""

from __future__ import annotations

import numpy as np


class InMemoryDataset:
    """The PreparedDataset interface (``len``, ``[i] -> (ids, labels)``, ``lengths``) over a list."""

    def __init__(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.rows = rows
        self.lengths = np.array([len(ids) for ids, _ in rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.rows[index]
