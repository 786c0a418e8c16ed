"""The padded batch plan (sample_packing: false): the core's packing plan with one sample per row."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_config

from axr.config import load_config
from axr.packing import MultipackBatchSampler, PaddedBatchSampler
from axr.train.batches import build_plan


def rank_plans(lengths, world_size, batch_size=4, **options):
    return [
        PaddedBatchSampler(lengths, batch_size, rank=rank, world_size=world_size, seed=3, **options)
        for rank in range(world_size)
    ]


def rows_of(plan):
    return [members[0] for step in range(len(plan)) for members in plan.micro_batch(step)]


def test_ranks_get_disjoint_rows_and_the_same_number_of_steps():
    lengths = np.arange(1, 51)
    plans = rank_plans(lengths, 3)
    assert [len(plan) for plan in plans] == [4, 4, 4]
    seen = [set(rows_of(plan)) for plan in plans]
    assert not seen[0] & seen[1]
    assert not seen[1] & seen[2]
    # 50 rows, 3 ranks x 4 rows per step: 48 used, 2 left out (listed, not silent).
    assert sum(len(rows) for rows in seen) == 48
    assert len(plans[0].dropped_bins) == 2
    assert not set(plans[0].dropped_bins.tolist()) & set().union(*seen)


def test_epochs_reshuffle_and_replay_identically():
    lengths = np.arange(1, 41)
    plan = PaddedBatchSampler(lengths, 4, seed=1)
    first = rows_of(plan)
    plan.set_epoch(1)
    second = rows_of(plan)
    assert sorted(first) == sorted(second) == list(range(40))
    assert first != second
    plan.set_epoch(0)
    assert rows_of(plan) == first


def test_group_by_length_makes_micro_batches_of_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 1000, size=512)
    spread = {}
    for order in ("shuffled", "grouped_by_length"):
        plan = PaddedBatchSampler(lengths, 8, seed=0, order=order)
        spreads = []
        for step in range(len(plan)):
            batch_lengths = [lengths[members[0]] for members in plan.micro_batch(step)]
            spreads.append(max(batch_lengths) - min(batch_lengths))
        spread[order] = np.mean(spreads)
    assert spread["grouped_by_length"] < spread["shuffled"] / 4


def test_evaluation_plan_keeps_every_row_and_no_rank_idles():
    # 5 rows, 4 ranks x 1 row: step 1 has one row left, so 3 ranks get a flagged copy.
    plans = rank_plans(np.arange(1, 6), 4, batch_size=1, order="dataset", drop_last=False)
    assert [len(plan) for plan in plans] == [2] * 4
    assert all(plan.micro_batch(step) for plan in plans for step in range(2))
    originals = [
        members[0]
        for plan in plans
        for step in range(len(plan))
        for members, repeated in zip(plan.micro_batch(step), plan.repeats(step), strict=True)
        if not repeated
    ]
    assert sorted(originals) == list(range(5))
    assert sum(sum(plan.repeats(1)) for plan in plans) == len(plans[0].repeated_bins) == 3


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("world_size", [1, 3])
def test_padded_plan_is_the_packing_plan_with_one_sample_per_row(drop_last, world_size):
    """Same steps, same dealing, same last-step rule as a sequential packing of one sample per bin."""
    lengths = np.random.default_rng(1).integers(1, 64, size=23)
    for rank in range(world_size):
        padded = PaddedBatchSampler(
            lengths, 2, rank=rank, world_size=world_size, drop_last=drop_last, order="dataset"
        )
        packed = MultipackBatchSampler(
            lengths, 64, 2, rank=rank, world_size=world_size, drop_last=drop_last, strategy="sequential",
            max_items_per_bin=1,
        )  # fmt: skip
        assert len(padded) == len(packed) > 0
        for step in range(len(padded)):
            assert padded.micro_batch(step) == packed.micro_batch(step)
            assert padded.repeats(step) == packed.repeats(step)
        assert padded.dropped_bins.tolist() == packed.dropped_bins.tolist()
        assert padded.repeated_bins.tolist() == packed.repeated_bins.tolist()


def test_build_plan_reads_the_config(tmp_path):
    lengths = np.arange(1, 41)

    def plan(train, **keys):
        cfg = load_config(write_config(tmp_path / "c.toml", tmp_path, tmp_path / "out", **keys))
        return build_plan(cfg, lengths, batch_size=4, packing=False, rank=0, world_size=1, train=train)

    assert plan(True).order == "shuffled"
    assert plan(True).drop_last
    assert plan(True, group_by_length=True).order == "grouped_by_length"
    evaluation = plan(False, group_by_length=True)
    assert (evaluation.order, evaluation.drop_last) == ("dataset", False)
    # Dataset order step by step (within a step the core deals the longest rows first).
    steps = [
        sorted(members[0] for members in evaluation.micro_batch(step)) for step in range(len(evaluation))
    ]
    assert steps == [list(range(start, start + 4)) for start in range(0, 40, 4)]


def test_bad_row_order_is_refused():
    from axr.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown row order 'by_length'"):
        PaddedBatchSampler([1, 2], 1, order="by_length")


def test_resume_refuses_a_checkpoint_of_the_earlier_padded_plan(tmp_path):
    from helpers import InMemoryDataset, random_rows

    from axr.errors import ConfigError
    from axr.train.resume_plan import check_plan, plan_of

    rows = InMemoryDataset(random_rows(8))
    padded = load_config(write_config(tmp_path / "c.toml", tmp_path, tmp_path / "out"))
    current = plan_of(padded, rows, 1)
    assert (current["padded_plan"], current["group_by_length"]) == (2, False)
    # Written by an axr whose Python plan dealt the rows of unpacked runs differently.
    earlier = {key: value for key, value in current.items() if key not in ("padded_plan", "group_by_length")}
    with pytest.raises(ConfigError, match=r"padded_plan: checkpoint None, this run 2 \(the axr version"):
        check_plan(earlier, current, "checkpoint-2")
    grouped = plan_of(
        load_config(write_config(tmp_path / "g.toml", tmp_path, tmp_path / "out", group_by_length=True)),
        rows,
        1,
    )
    with pytest.raises(ConfigError, match=r"group_by_length: checkpoint False, this run True"):
        check_plan(current, grouped, "checkpoint-2")
    # Packed runs' plans did not change: their earlier checkpoints still resume.
    packed = plan_of(
        load_config(write_config(tmp_path / "p.toml", tmp_path, tmp_path / "out", sample_packing=True)),
        rows,
        1,
    )
    check_plan({key: value for key, value in packed.items() if value is not None}, packed, "checkpoint-2")
