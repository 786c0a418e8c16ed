"""The padded batch plan (sample_packing: false): disjoint ranks, equal step counts, reproducible epochs."""

from __future__ import annotations

import numpy as np

from axr.train.batches import PaddedBatchPlan


def rank_plans(lengths, world_size, **options):
    return [
        PaddedBatchPlan(lengths, 4, rank=rank, world_size=world_size, seed=3, **options)
        for rank in range(world_size)
    ]


def rows_of(plan):
    return [members[0] for step in range(len(plan)) for members in plan.micro_batch(step)]


def test_ranks_get_disjoint_rows_and_the_same_number_of_steps():
    lengths = np.arange(1, 51)
    plans = rank_plans(lengths, 3)
    assert len({len(plan) for plan in plans}) == 1
    seen = [set(rows_of(plan)) for plan in plans]
    assert not seen[0] & seen[1]
    assert not seen[1] & seen[2]
    # 50 rows, 3 ranks x 4 rows per step: 48 used, 2 left out (counted, not silent).
    assert sum(len(rows) for rows in seen) == 48
    assert plans[0].dropped_per_epoch == 2


def test_epochs_reshuffle_and_replay_identically():
    lengths = np.arange(1, 41)
    plan = PaddedBatchPlan(lengths, 4, seed=1)
    first = rows_of(plan)
    plan.set_epoch(1)
    second = rows_of(plan)
    assert sorted(first) == sorted(second)
    assert first != second
    plan.set_epoch(0)
    assert rows_of(plan) == first


def test_group_by_length_makes_micro_batches_of_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 1000, size=512)
    spread = {}
    for grouped in (False, True):
        plan = PaddedBatchPlan(lengths, 8, seed=0, group_by_length=grouped)
        spreads = []
        for step in range(len(plan)):
            batch_lengths = [lengths[members[0]] for members in plan.micro_batch(step)]
            spreads.append(max(batch_lengths) - min(batch_lengths))
        spread[grouped] = np.mean(spreads)
    assert spread[True] < spread[False] / 4


def test_evaluation_plan_keeps_every_row():
    lengths = np.arange(1, 12)
    plans = rank_plans(lengths, 2, shuffle=False, drop_last=False)
    rows = sorted(row for plan in plans for row in rows_of(plan))
    assert rows == list(range(11))
