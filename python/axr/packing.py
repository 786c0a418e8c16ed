"""Fast, exact bin packing of samples ("multipack") and a batch sampler built on it.

Usable from any project: ``import axr.packing`` imports numpy and the native
core, never torch. The packing itself runs in Rust with the GIL released.

A *bin* is a list of dataset indices whose lengths sum to at most the
capacity; the collator turns each bin into one packed row. A *micro-batch*
is ``batch_size`` bins::

    lengths   [5, 3, 7, 2, 4]            capacity 8, strategy "bfd"
    bins      [2] [0, 1] [4, 3]           → 21 tokens in 3 × 8 slots: efficiency 0.875
    rows      |7777777.|55555333|4444 22..|

Strategies: ``"bfd"`` (best-fit-decreasing, the densest), ``"ffd"``
(first-fit-decreasing), ``"shuffle"`` (shuffle by seed and epoch, then
first-fit: bin contents change every epoch) and ``"sequential"`` (next-fit in
dataset order). See docs/packing.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axr import _native
from axr.errors import ConfigError

__all__ = [
    "ROW_ORDERS",
    "STRATEGIES",
    "BinDataset",
    "Bins",
    "MultipackBatchSampler",
    "Packing",
    "PaddedBatchSampler",
    "pack",
    "plan_summary",
]

STRATEGIES = ("bfd", "ffd", "shuffle", "sequential")
"""Names accepted by ``strategy=``."""


def _as_lengths(lengths: ArrayLike) -> NDArray[np.uint32]:
    """Any sequence of non-negative integers as a contiguous uint32 array (checked, never wrapped)."""
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise ConfigError(f"lengths must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"lengths must be integers, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > np.iinfo(np.uint32).max):
        raise ConfigError("lengths must be between 0 and 2**32 - 1")
    return np.ascontiguousarray(array, dtype=np.uint32)


_PackingArrays = tuple[NDArray[np.uint64], NDArray[np.uint32], NDArray[np.uint32], NDArray[np.uint32], int]
"""What the native ``pack`` returns: bin_offsets, items, bin_tokens, dropped, total_tokens."""


def _check_capacity(capacity: int) -> int:
    # The core checks the upper limit with its own message; this catches what would not convert to u32.
    if not isinstance(capacity, (int, np.integer)) or not 1 <= capacity <= np.iinfo(np.uint32).max:
        raise ConfigError(f"packing capacity must be a positive number of tokens, got {capacity!r}")
    return int(capacity)


def _check_count(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or not 1 <= value <= np.iinfo(np.uint32).max:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown packing strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return strategy


class Bins(Sequence[list[int]]):
    """A read-only list view of the bins: ``bins[i]`` is a list of item indices, built on access."""

    def __init__(self, bin_offsets: NDArray[np.uint64], items: NDArray[np.uint32]) -> None:
        self._bin_offsets = bin_offsets
        self._items = items

    def __len__(self) -> int:
        return len(self._bin_offsets) - 1

    @overload
    def __getitem__(self, index: int) -> list[int]: ...
    @overload
    def __getitem__(self, index: slice) -> list[list[int]]: ...
    def __getitem__(self, index: int | slice) -> list[int] | list[list[int]]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"bin {index} out of range for {count} bins")
        start, end = self._bin_offsets[index], self._bin_offsets[index + 1]
        items: list[int] = self._items[start:end].tolist()
        return items

    def __repr__(self) -> str:
        return f"Bins({len(self)} bins)"


@dataclass(frozen=True, repr=False)
class Packing:
    """The result of :func:`pack`, stored flat::

    bin_offsets  [0,    1,       3,       5]
    items        [2 |   0, 1 |   4, 3]       bin b = items[bin_offsets[b]:bin_offsets[b + 1]]
    """

    capacity: int
    strategy: str
    bin_offsets: NDArray[np.uint64]
    """``num_bins + 1`` offsets into ``items``."""
    items: NDArray[np.uint32]
    """Item indices of all bins, concatenated (each bin in placement order)."""
    bin_tokens: NDArray[np.uint32]
    """Tokens in each bin."""
    dropped: NDArray[np.uint32]
    """Indices of items longer than the capacity, left out (only with ``drop_oversized=True``)."""
    total_tokens: int
    """Tokens of all packed items."""

    @property
    def num_bins(self) -> int:
        return len(self.bin_tokens)

    @property
    def bins(self) -> Bins:
        """The bins as a list view: ``packing.bins[0] == [2]``."""
        return Bins(self.bin_offsets, self.items)

    @property
    def lower_bound(self) -> int:
        """Fewest bins any packing could use: ``ceil(total_tokens / capacity)``."""
        return -(-self.total_tokens // self.capacity)

    @property
    def efficiency(self) -> float:
        """Real tokens over bin space: ``total_tokens / (num_bins × capacity)`` (1.0 when empty)."""
        if self.num_bins == 0:
            return 1.0
        return self.total_tokens / (self.num_bins * self.capacity)

    def __repr__(self) -> str:
        return (
            f"Packing(strategy={self.strategy!r}, capacity={self.capacity}, num_bins={self.num_bins}, "
            f"lower_bound={self.lower_bound}, efficiency={self.efficiency:.4f}, dropped={len(self.dropped)})"
        )


def pack(
    lengths: ArrayLike,
    capacity: int,
    strategy: str = "bfd",
    max_items_per_bin: int | None = None,
    drop_oversized: bool = False,
    *,
    seed: int = 0,
    epoch: int = 0,
) -> Packing:
    """Pack items of the given token ``lengths`` into bins of ``capacity`` tokens, never splitting an item.

    ``lengths`` is any 1-D sequence of integers (a numpy array is used without
    conversion when it is contiguous uint32). Items longer than ``capacity``
    raise :class:`axr.errors.ConfigError` naming how many and the longest,
    unless ``drop_oversized=True`` (then they are listed in ``Packing.dropped``).
    ``seed`` and ``epoch`` only matter for ``strategy="shuffle"``.
    """
    parts = _native.pack(
        _as_lengths(lengths),
        _check_capacity(capacity),
        strategy=_check_strategy(strategy),
        max_items_per_bin=max_items_per_bin,
        drop_oversized=drop_oversized,
        seed=seed,
        epoch=epoch,
    )
    return _packing(capacity, strategy, parts)


def _packing(capacity: int, strategy: str, parts: _PackingArrays) -> Packing:
    bin_offsets, items, bin_tokens, dropped, total_tokens = parts
    return Packing(capacity, strategy, bin_offsets, items, bin_tokens, dropped, total_tokens)


@dataclass(frozen=True)
class _EpochPlan:
    epoch: int
    packing: Packing
    steps: int
    micro_batch_offsets: NDArray[np.uint64]
    micro_batch_bins: NDArray[np.uint32]
    dropped_bins: NDArray[np.uint32]
    repeated_bins: NDArray[np.uint32]


def _plan(
    lengths: NDArray[np.uint32],
    capacity: int,
    micro_batch_size: int,
    *,
    strategy: str,
    seed: int,
    epoch: int,
    world_size: int,
    drop_last: bool,
    max_items_per_bin: int | None,
    drop_oversized: bool,
) -> _EpochPlan:
    parts, steps, micro_batch_offsets, micro_batch_bins, dropped_bins, repeated_bins = _native.plan_epoch(
        lengths,
        _check_capacity(capacity),
        _check_count("micro_batch_size", micro_batch_size),
        strategy=_check_strategy(strategy),
        seed=seed,
        epoch=epoch,
        world_size=_check_count("world_size", world_size),
        drop_last=drop_last,
        max_items_per_bin=max_items_per_bin,
        drop_oversized=drop_oversized,
    )
    return _EpochPlan(
        epoch,
        _packing(capacity, strategy, parts),
        steps,
        micro_batch_offsets,
        micro_batch_bins,
        dropped_bins,
        repeated_bins,
    )


def plan_summary(
    lengths: ArrayLike,
    capacity: int,
    micro_batch_size: int,
    world_size: int = 1,
    strategy: str = "bfd",
    *,
    seed: int = 0,
    drop_last: bool = True,
    max_items_per_bin: int | None = None,
    drop_oversized: bool = False,
) -> dict[str, Any]:
    """Exact packing figures for one epoch (epoch 0), for summaries and step-count planning.

    Keys: ``strategy``, ``capacity``, ``micro_batch_size``, ``world_size``,
    ``num_items``, ``total_tokens``, ``num_bins``, ``lower_bound``,
    ``efficiency``, ``steps_per_epoch`` (micro-batches per rank),
    ``dropped_items`` (longer than the capacity), ``dropped_bins_per_epoch``
    (by ``drop_last``) and ``repeated_bins_per_epoch`` (without ``drop_last``).
    For ``"shuffle"`` the figures are those of epoch 0; other epochs differ slightly.
    """
    plan = _plan(
        _as_lengths(lengths),
        capacity,
        micro_batch_size,
        strategy=strategy,
        seed=seed,
        epoch=0,
        world_size=world_size,
        drop_last=drop_last,
        max_items_per_bin=max_items_per_bin,
        drop_oversized=drop_oversized,
    )
    packing = plan.packing
    return {
        "strategy": strategy,
        "capacity": capacity,
        "micro_batch_size": micro_batch_size,
        "world_size": world_size,
        "num_items": int(len(packing.items) + len(packing.dropped)),
        "total_tokens": packing.total_tokens,
        "num_bins": packing.num_bins,
        "lower_bound": packing.lower_bound,
        "efficiency": packing.efficiency,
        "steps_per_epoch": plan.steps,
        "dropped_items": len(packing.dropped),
        "dropped_bins_per_epoch": len(plan.dropped_bins),
        "repeated_bins_per_epoch": len(plan.repeated_bins),
    }


class _PlanSampler(ABC):
    """This rank's micro-batches of one epoch of a core plan; subclasses say how the plan is made."""

    def __init__(self, lengths: ArrayLike, batch_size: int, seed: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0..{world_size - 1} and world_size ≥ 1, got rank {rank}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 row, got {batch_size}")
        self.lengths = _as_lengths(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        self._position = 0
        self._cached: _EpochPlan | None = None

    @abstractmethod
    def _make_plan(self, epoch: int) -> _EpochPlan: ...

    @abstractmethod
    def _settings(self) -> dict[str, Any]:
        """What the plan depends on besides the epoch (checked by :meth:`load_state_dict`)."""

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: a new one reshuffles the bins (and re-packs with ``"shuffle"``) from step 0."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._position = 0

    def _plan(self) -> _EpochPlan:
        if self._cached is None or self._cached.epoch != self._epoch:
            self._cached = self._make_plan(self._epoch)
        return self._cached

    @property
    def packing(self) -> Packing:
        """The bins of the current epoch (all ranks)."""
        return self._plan().packing

    def __len__(self) -> int:
        """Micro-batches this rank runs in the current epoch (the same on every rank)."""
        return self._plan().steps

    def micro_batch(self, step: int) -> list[list[int]]:
        """This rank's micro-batch at ``step`` of the current epoch."""
        plan = self._plan()
        bins = plan.packing.bins
        return [bins[int(bin_index)] for bin_index in self._slot_bins(plan, step)]

    @property
    def dropped_bins(self) -> NDArray[np.uint32]:
        """Bins of the current epoch left out by ``drop_last`` (all ranks; a random few each epoch)."""
        return self._plan().dropped_bins

    @property
    def repeated_bins(self) -> NDArray[np.uint32]:
        """Bins that appear twice this epoch so no rank idles in the last step (``drop_last=False``)."""
        return self._plan().repeated_bins

    def repeats(self, step: int) -> list[bool]:
        """For each bin of this rank's micro-batch at ``step``: whether it is a second copy.

        Only the last step of a ``drop_last=False`` epoch can hold copies. An
        evaluation should leave their loss out so every sample counts once; the
        first occurrence in (step, rank) order is the original.
        """
        plan = self._plan()
        batch_bins = self._slot_bins(plan, step)
        if step != plan.steps - 1 or len(plan.repeated_bins) == 0:
            return [False] * len(batch_bins)
        first_slot = step * self.world_size
        earlier = plan.micro_batch_bins[
            plan.micro_batch_offsets[first_slot] : plan.micro_batch_offsets[first_slot + self.rank]
        ]
        seen = Counter(
            int(bin_index) for bin_index in plan.micro_batch_bins[: plan.micro_batch_offsets[first_slot]]
        )
        seen.update(int(bin_index) for bin_index in earlier)
        flags = []
        for bin_index in batch_bins.tolist():
            flags.append(seen[bin_index] > 0)
            seen[bin_index] += 1
        return flags

    def _slot_bins(self, plan: _EpochPlan, step: int) -> NDArray[np.uint32]:
        if not 0 <= step < plan.steps:
            raise IndexError(f"step {step} out of range for {plan.steps} steps")
        slot = step * self.world_size + self.rank
        return plan.micro_batch_bins[plan.micro_batch_offsets[slot] : plan.micro_batch_offsets[slot + 1]]

    def __iter__(self) -> Iterator[list[list[int]]]:
        """Continue the epoch from the current position (0, or where a loaded state left off).

        Iterating again after the epoch finished starts it over; call
        :meth:`set_epoch` to move to the next one.
        """
        steps = len(self)
        start = self._position if self._position < steps else 0
        for step in range(start, steps):
            batch = self.micro_batch(step)
            self._position = step + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Epoch and position (micro-batches already yielded), plus what the plan depends on."""
        return {"epoch": self._epoch, "position": self._position, **self._settings()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields the micro-batch at ``state["position"]`` of ``state["epoch"]``.

        Raises ConfigError when the state was saved with different settings,
        because then the plan, and so the meaning of the position, differs.
        """
        for key, value in self._settings().items():
            if key in state and state[key] != value:
                raise ConfigError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has "
                    f"{value!r}; resuming would not continue the same plan"
                )
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])


class MultipackBatchSampler(_PlanSampler):
    """Yields this rank's micro-batches of one epoch, one at a time, as ``list[list[int]]``.

    Each micro-batch is ``batch_size`` bins (fewer only in the last step when
    ``drop_last=False``); each bin is a list of dataset indices whose lengths
    sum to at most ``batch_max_len``::

        epoch plan (seed, epoch) ──> step 0: rank 0 [[4, 9], [1]]   rank 1 [[7], [0, 3, 8]]
                                     step 1: rank 0 [[2, 5], [6]]   rank 1 ...

    Every rank gets exactly ``len(sampler)`` micro-batches; within a step the
    bins are dealt so that ranks get about the same number of tokens. The plan
    is a pure function of (lengths, batch_max_len, batch_size, seed, epoch,
    world_size, drop_last, strategy), so every rank computes it independently
    and they agree.

    Use it as a DataLoader ``batch_sampler`` over :class:`BinDataset` (or any
    dataset whose ``__getitem__`` takes a bin), with a collator that packs each
    bin into one row. Call :meth:`set_epoch` before each epoch. The sampler is
    a plain iterable (not a ``torch.utils.data.Sampler`` subclass) so that
    importing it never imports torch; DataLoader accepts it as is. When the
    DataLoader runs with workers, it fetches indices ahead of the training
    loop, so save the loop's own count of consumed micro-batches as
    ``position`` rather than the sampler's.
    """

    def __init__(
        self,
        lengths: ArrayLike,
        batch_max_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        strategy: str = "bfd",
        *,
        max_items_per_bin: int | None = None,
        drop_oversized: bool = False,
    ) -> None:
        super().__init__(lengths, batch_size, seed, rank, world_size)
        self.batch_max_len = batch_max_len
        self.drop_last = drop_last
        self.strategy = _check_strategy(strategy)
        self.max_items_per_bin = max_items_per_bin
        self.drop_oversized = drop_oversized
        self._plan()  # fail now, not at the first batch, on oversized items or bad options

    def _make_plan(self, epoch: int) -> _EpochPlan:
        return _plan(
            self.lengths,
            self.batch_max_len,
            self.batch_size,
            strategy=self.strategy,
            seed=self.seed,
            epoch=epoch,
            world_size=self.world_size,
            drop_last=self.drop_last,
            max_items_per_bin=self.max_items_per_bin,
            drop_oversized=self.drop_oversized,
        )

    def _settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "batch_max_len": self.batch_max_len,
            "strategy": self.strategy,
            "num_items": len(self.lengths),
        }


ROW_ORDERS = ("dataset", "shuffled", "grouped_by_length")
"""Names accepted by :class:`PaddedBatchSampler`'s ``order=``."""


class PaddedBatchSampler(_PlanSampler):
    """The plan without packing: like :class:`MultipackBatchSampler` with one sample per bin.

    Each micro-batch is ``batch_size`` single-sample bins, padded by the
    collator. The core deals them exactly as it deals packed bins, so the step
    count and the last-step rule are the same: with ``drop_last`` the samples
    that do not fill a whole step are left out (``dropped_bins``); without it
    the last step may be short and, when fewer samples than ranks remain,
    samples from the start of the epoch are repeated (``repeated_bins``,
    flagged by :meth:`repeats`). ``order`` is ``"shuffled"`` (by seed and
    epoch), ``"dataset"`` (in order, for evaluation) or ``"grouped_by_length"``
    (shuffled, windows of 64 steps sorted by length, steps shuffled: less
    padding).
    """

    def __init__(
        self,
        lengths: ArrayLike,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        order: str = "shuffled",
    ) -> None:
        super().__init__(lengths, batch_size, seed, rank, world_size)
        if order not in ROW_ORDERS:
            raise ConfigError(f"unknown row order {order!r}; expected one of {', '.join(ROW_ORDERS)}")
        self.drop_last = drop_last
        self.order = order

    def _make_plan(self, epoch: int) -> _EpochPlan:
        parts, steps, offsets, bins, dropped_bins, repeated_bins = _native.plan_rows(
            self.lengths,
            self.batch_size,
            order=self.order,
            seed=self.seed,
            epoch=epoch,
            world_size=self.world_size,
            drop_last=self.drop_last,
        )
        packing = _packing(int(parts[2].max(initial=1)), "one_per_row", parts)
        return _EpochPlan(epoch, packing, steps, offsets, bins, dropped_bins, repeated_bins)

    def _settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "order": self.order,
            "num_items": len(self.lengths),
        }


class BinDataset:
    """Wraps a map-style dataset so that ``dataset[bin]`` returns the list of items of a bin.

    With ``DataLoader(BinDataset(dataset), batch_sampler=sampler, collate_fn=...)``
    the collator receives a micro-batch as a list of bins, each a list of items.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, bin_indices: Sequence[int]) -> list[Any]:
        return [self.dataset[index] for index in bin_indices]
