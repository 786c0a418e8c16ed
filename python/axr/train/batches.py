"""Micro-batch plans: which dataset rows go into each micro-batch of a rank, epoch by epoch.

Both plans yield a micro-batch as a list of bins, each bin a list of dataset
indices that becomes ONE row: the packing sampler fills bins up to
``sequence_len`` tokens; the padded plan (``sample_packing: false``) puts one
sample in each bin. Both are pure functions of (seed, epoch, rank, world size),
which is what makes resuming at an exact data position possible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from axr.data.collate import collate_packed, collate_padded


class MicroBatchPlan(Protocol):
    """What the loop needs from a batch sampler."""

    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def micro_batch(self, step: int) -> list[list[int]]: ...


class PaddedBatchPlan:
    """Shuffled micro-batches of ``batch_size`` single-sample rows, dealt round-robin to ranks.

    ``group_by_length`` sorts each window of 64 micro-batches by length first, so rows of a
    micro-batch have similar lengths and less padding (the order of micro-batches stays random).
    Every rank gets the same number of micro-batches; the few samples that do not fill a whole
    micro-batch on every rank are left out of that epoch (``dropped_per_epoch`` counts them).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        group_by_length: bool = False,
        drop_last: bool = True,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.epoch = 0
        self._cached: list[np.ndarray] = []
        self._cached_epoch: int | None = None
        total = len(self.lengths)
        if drop_last:
            self._per_rank = total // (batch_size * world_size)
        else:
            self._per_rank = -(-total // (batch_size * world_size))
        self.dropped_per_epoch = max(0, total - self._per_rank * batch_size * world_size) if drop_last else 0

    def __len__(self) -> int:
        return self._per_rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        order = np.arange(len(self.lengths))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths))
        if self.group_by_length:
            window = self.batch_size * 64
            for start in range(0, len(order), window):
                chunk = order[start : start + window]
                order[start : start + window] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        return order

    def _batches(self) -> list[np.ndarray]:
        if self._cached_epoch != self.epoch:
            order = self._order()
            batches = [
                order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)
            ]
            if self.group_by_length and self.shuffle:
                permutation = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(batches))
                batches = [batches[index] for index in permutation]
            self._cached = batches
            self._cached_epoch = self.epoch
        return self._cached

    def micro_batch(self, step: int) -> list[list[int]]:
        """This rank's micro-batch at ``step`` of the current epoch: one single-sample bin per row."""
        if not 0 <= step < self._per_rank:
            raise IndexError(f"step {step} out of range for {self._per_rank} micro-batches")
        batches = self._batches()
        slot = step * self.world_size + self.rank
        if slot >= len(batches):
            return []  # only without drop_last: the last step has no rows left for this rank
        return [[int(index)] for index in batches[slot]]

    def __iter__(self) -> Iterator[list[list[int]]]:
        for step in range(self._per_rank):
            yield self.micro_batch(step)


def build_plan(
    cfg: Any,
    lengths: Sequence[int],
    *,
    batch_size: int,
    packing: bool,
    rank: int,
    world_size: int,
    train: bool,
) -> MicroBatchPlan:
    """The packing sampler (``packing``) or the padded plan, for training or evaluation."""
    if packing:
        from axr.packing import MultipackBatchSampler

        sampler: MicroBatchPlan = MultipackBatchSampler(
            np.asarray(lengths),
            cfg.sequence_len,
            batch_size,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            drop_last=train,
            strategy=cfg.packing_strategy,
        )
        return sampler
    return PaddedBatchPlan(
        lengths,
        batch_size,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        shuffle=train,
        group_by_length=train and cfg.group_by_length,
        drop_last=train,
    )


def collate_micro_batch(
    dataset: Any,
    bins: list[list[int]],
    *,
    packing: bool,
    pad_token_id: int,
    pad_to: int | None,
) -> dict[str, Any]:
    """Read the rows of ``bins`` from ``dataset`` and collate them (packed or padded)."""
    if packing:
        return collate_packed(
            [[dataset[index] for index in members] for members in bins],
            pad_token_id=pad_token_id,
            pad_to=pad_to,
        )
    return collate_padded([dataset[members[0]] for members in bins], pad_token_id=pad_token_id, pad_to=pad_to)
