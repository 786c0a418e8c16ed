"""axr.packing: pack() against a plain Python reference, the batch sampler with a torch DataLoader."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from axr.errors import ConfigError
from axr.packing import STRATEGIES, BinDataset, MultipackBatchSampler, pack, plan_summary


def reference_pack(lengths: list[int], capacity: int, strategy: str) -> list[list[int]]:
    """Textbook first-fit / best-fit / next-fit scanning every open bin (O(n·B))."""
    if strategy in ("ffd", "bfd"):
        order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    else:
        order = list(range(len(lengths)))
    bins: list[list[int]] = []
    free: list[int] = []
    for item in order:
        length = lengths[item]
        fitting = [bin_index for bin_index in range(len(bins)) if free[bin_index] >= length]
        if strategy == "sequential":
            fitting = fitting[-1:] if fitting and fitting[-1] == len(bins) - 1 else []
        if not fitting:
            bins.append([])
            free.append(capacity)
            chosen = len(bins) - 1
        elif strategy == "bfd":
            chosen = min(fitting, key=lambda bin_index: (free[bin_index], bin_index))
        else:
            chosen = fitting[0]
        bins[chosen].append(item)
        free[chosen] -= length
    return bins


def random_lengths(count: int, high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, high + 1, size=count).astype(np.uint32)


@pytest.mark.parametrize("strategy", ["ffd", "bfd", "sequential"])
def test_pack_matches_the_reference_scan(strategy: str) -> None:
    lengths = random_lengths(500, 300, seed=1).tolist()
    packing = pack(lengths, 512, strategy=strategy)
    assert list(packing.bins) == reference_pack(lengths, 512, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pack_places_every_item_once_within_capacity(strategy: str) -> None:
    lengths = random_lengths(3000, 700, seed=2)
    packing = pack(lengths, 1024, strategy=strategy)
    placed = Counter(packing.items.tolist())
    assert placed == Counter(range(len(lengths)))
    sums = [int(lengths[bin_items].sum()) for bin_items in packing.bins]
    assert max(sums) <= 1024
    assert sums == packing.bin_tokens.tolist()
    assert packing.total_tokens == int(lengths.sum())
    assert packing.num_bins == len(packing.bins) >= packing.lower_bound == -(-int(lengths.sum()) // 1024)
    assert packing.efficiency == pytest.approx(int(lengths.sum()) / (packing.num_bins * 1024))
    assert packing.bin_offsets.dtype == np.uint64
    assert packing.items.dtype == np.uint32


def test_pack_doc_example_and_list_view() -> None:
    packing = pack([5, 3, 7, 2, 4], 8)
    assert list(packing.bins) == [[2], [0, 1], [4, 3]]
    assert packing.bins[-1] == [4, 3]
    assert packing.bins[1:] == [[0, 1], [4, 3]]
    assert packing.bin_offsets.tolist() == [0, 1, 3, 5]
    assert packing.efficiency == pytest.approx(21 / 24)
    with pytest.raises(IndexError):
        packing.bins[3]


def test_bfd_reaches_the_lower_bound_on_instruction_like_lengths() -> None:
    rng = np.random.default_rng(3)
    lengths = np.clip(rng.lognormal(np.log(200), 0.7, size=100_000), 8, 2048).astype(np.uint32)
    packing = pack(lengths, 2048, strategy="bfd")
    assert packing.efficiency >= 0.995
    assert packing.num_bins / packing.lower_bound < 1.001


def test_max_items_per_bin() -> None:
    packing = pack([1] * 10, 100, max_items_per_bin=3)
    assert [len(items) for items in packing.bins] == [3, 3, 3, 1]


def test_oversized_items_are_an_error_or_dropped_and_counted() -> None:
    with pytest.raises(
        ConfigError, match=r"2 of 4 items are longer .* 100 tokens \(the longest is item 3 with 250"
    ):
        pack([10, 120, 30, 250], 100)
    packing = pack([10, 120, 30, 250], 100, drop_oversized=True)
    assert packing.dropped.tolist() == [1, 3]
    assert sorted(packing.items.tolist()) == [0, 2]
    with pytest.raises(ConfigError, match="longer"):
        MultipackBatchSampler([10, 120], batch_max_len=100, batch_size=1)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown packing strategy"):
        pack([1, 2], 8, strategy="fastest")
    with pytest.raises(ConfigError, match="one-dimensional"):
        pack([[1, 2]], 8)
    with pytest.raises(ConfigError, match="between 0 and"):
        pack([1, -2], 8)
    with pytest.raises(ConfigError, match="capacity"):
        pack([1, 2], 0)
    with pytest.raises(ConfigError, match="capacity"):
        pack([1, 2], -5)
    with pytest.raises(ConfigError, match="capacity"):
        pack([1, 2], 2**40)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        plan_summary([1, 2], 8, micro_batch_size=-1)
    with pytest.raises(ConfigError, match="rank"):
        MultipackBatchSampler([1, 2], batch_max_len=8, batch_size=1, rank=2, world_size=2)


def test_shuffle_repacks_per_epoch() -> None:
    lengths = random_lengths(2000, 400, seed=4)
    first = pack(lengths, 1024, strategy="shuffle", seed=1, epoch=0)
    second = pack(lengths, 1024, strategy="shuffle", seed=1, epoch=1)
    assert list(first.bins) != list(second.bins)
    assert sorted(first.items.tolist()) == sorted(second.items.tolist())
    assert list(pack(lengths, 1024, strategy="shuffle", seed=1, epoch=0).bins) == list(first.bins)


def test_sampler_with_a_torch_dataloader() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, Dataset

    lengths = random_lengths(1000, 300, seed=5)

    class TokenDataset(Dataset):
        def __len__(self) -> int:
            return len(lengths)

        def __getitem__(self, index: int) -> dict[str, object]:
            return {"index": index, "input_ids": torch.full((int(lengths[index]),), index)}

    def collate(micro_batch: list[list[dict[str, object]]]) -> torch.Tensor:
        rows = [torch.cat([sample["input_ids"] for sample in samples]) for samples in micro_batch]  # type: ignore[misc]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)

    sampler = MultipackBatchSampler(lengths, batch_max_len=1024, batch_size=2, seed=3)
    loader = DataLoader(BinDataset(TokenDataset()), batch_sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == len(sampler) == len(loader) > 0
    seen: list[int] = []
    for batch, indices in zip(batches, list(sampler), strict=True):
        assert batch.shape[0] == 2
        assert batch.shape[1] <= 1024
        for row, bin_indices in zip(batch, indices, strict=True):
            tokens = row[row >= 0]
            assert tokens.tolist() == [index for index in bin_indices for _ in range(int(lengths[index]))]
        seen.extend(index for bin_indices in indices for index in bin_indices)
    assert len(seen) == len(set(seen))


def test_ranks_are_disjoint_equal_length_and_cover_the_kept_bins() -> None:
    lengths = random_lengths(5000, 500, seed=6)
    world_size, batch_size = 3, 2
    samplers = [
        MultipackBatchSampler(lengths, 2048, batch_size, seed=9, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    steps = {len(sampler) for sampler in samplers}
    assert len(steps) == 1
    per_rank = [[index for batch in sampler for items in batch for index in items] for sampler in samplers]
    all_items = [index for items in per_rank for index in items]
    assert len(all_items) == len(set(all_items))
    summary = plan_summary(lengths, 2048, batch_size, world_size=world_size)
    assert summary["steps_per_epoch"] == len(samplers[0])
    assert (
        summary["num_bins"] == len(samplers[0]) * world_size * batch_size + summary["dropped_bins_per_epoch"]
    )
    dropped_items = len(lengths) - len(all_items)
    assert (dropped_items == 0) == (summary["dropped_bins_per_epoch"] == 0)


def test_without_drop_last_every_item_is_seen() -> None:
    lengths = random_lengths(777, 500, seed=7)
    sampler = MultipackBatchSampler(lengths, 1024, 4, drop_last=False, world_size=2, rank=0)
    other = MultipackBatchSampler(lengths, 1024, 4, drop_last=False, world_size=2, rank=1)
    assert len(sampler) == len(other)
    seen = {index for part in (sampler, other) for batch in part for items in batch for index in items}
    assert seen == set(range(len(lengths)))
    assert all(1 <= len(batch) <= 4 for part in (sampler, other) for batch in part)


def test_state_dict_resume_continues_at_the_exact_batch() -> None:
    lengths = random_lengths(3000, 600, seed=8)
    sampler = MultipackBatchSampler(lengths, 2048, 2, seed=11, strategy="shuffle")
    sampler.set_epoch(2)
    expected = list(sampler)
    iterator = iter(sampler)
    for _ in range(5):
        next(iterator)
    state = sampler.state_dict()
    assert state["epoch"] == 2
    assert state["position"] == 5

    resumed = MultipackBatchSampler(lengths, 2048, 2, seed=11, strategy="shuffle")
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop calls this again on resume; same epoch keeps the position
    assert list(resumed) == expected[5:]
    assert list(resumed) == expected  # a finished epoch starts over when iterated again

    other_seed = MultipackBatchSampler(lengths, 2048, 2, seed=12, strategy="shuffle")
    with pytest.raises(ConfigError, match="seed"):
        other_seed.load_state_dict(state)


@pytest.mark.parametrize("strategy", ["bfd", "shuffle"])
def test_set_epoch_changes_the_order_not_the_set(strategy: str) -> None:
    lengths = random_lengths(2000, 800, seed=9)
    sampler = MultipackBatchSampler(lengths, 2048, 1, drop_last=False, strategy=strategy)
    epoch_zero = [bin_items for batch in sampler for bin_items in batch]
    sampler.set_epoch(1)
    epoch_one = [bin_items for batch in sampler for bin_items in batch]
    assert epoch_zero != epoch_one
    flat_zero = [index for items in epoch_zero for index in items]
    flat_one = [index for items in epoch_one for index in items]
    assert sorted(flat_zero) == sorted(flat_one) == list(range(len(lengths)))
    if strategy == "bfd":  # same bins, new order
        assert sorted(epoch_zero) == sorted(epoch_one)


def test_plan_summary_matches_pack() -> None:
    lengths = random_lengths(4000, 1000, seed=10)
    summary = plan_summary(lengths, 4096, micro_batch_size=4)
    packing = pack(lengths, 4096)
    assert summary["num_bins"] == packing.num_bins
    assert summary["efficiency"] == pytest.approx(packing.efficiency)
    assert summary["total_tokens"] == int(lengths.sum())
    assert summary["steps_per_epoch"] == packing.num_bins // 4
    assert summary["lower_bound"] == packing.lower_bound


def test_importing_axr_packing_does_not_import_torch() -> None:
    code = "import sys, axr.packing; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("items", "world_size"), [(5, 4), (1, 3), (9, 4)])
def test_repeats_mark_the_copies_that_keep_ranks_busy(items: int, world_size: int) -> None:
    lengths = [64] * items  # one item per bin
    samplers = [
        MultipackBatchSampler(lengths, 64, 1, drop_last=False, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    originals: list[int] = []
    copies = 0
    for step in range(len(samplers[0])):
        for sampler in samplers:
            for bin_items, repeat in zip(sampler.micro_batch(step), sampler.repeats(step), strict=True):
                if repeat:
                    copies += 1
                else:
                    originals.extend(bin_items)
    assert sorted(originals) == list(range(items))
    assert copies == len(samplers[0].repeated_bins) == (-items) % world_size
