"""Micro-batch plans: which dataset rows go into each micro-batch of a rank, epoch by epoch.

Both plans yield a micro-batch as a list of bins, each bin a list of dataset
indices that becomes ONE row: the packing sampler fills bins up to
``sequence_len`` tokens; the padded plan (``sample_packing: false``) puts one
sample in each bin. The core computes both with one rule for dealing bins to
ranks and for the last step, as pure functions of (seed, epoch, rank, world
size), which is what makes resuming at an exact data position possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from axr.data.collate import collate_packed, collate_padded
from axr.packing import MultipackBatchSampler, PaddedBatchSampler

MicroBatchPlan = MultipackBatchSampler | PaddedBatchSampler
"""A rank's micro-batches epoch by epoch, both computed by the core (``axr.packing``)."""


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
    """The packing sampler (``packing``) or the padded plan, for training or evaluation.

    Training drops the samples that do not fill a whole step; evaluation keeps every sample, in
    dataset order, and repeats a few in the last step so every rank runs the same forwards.
    """
    if packing:
        return MultipackBatchSampler(
            np.asarray(lengths),
            cfg.sequence_len,
            batch_size,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            drop_last=train,
            strategy=cfg.packing_strategy,
        )
    order = "dataset"
    if train:
        order = "grouped_by_length" if cfg.group_by_length else "shuffled"
    return PaddedBatchSampler(
        lengths, batch_size, seed=cfg.seed, rank=rank, world_size=world_size, drop_last=train, order=order
    )


def collate_micro_batch(
    dataset: Any,
    bins: list[list[int]],
    *,
    packing: bool,
    pad_token_id: int,
    pad_to: int | None,
    joined: bool = False,
) -> dict[str, Any]:
    """Read the rows of ``bins`` from ``dataset`` and collate them (packed or padded).

    ``joined`` (packed only; ``pretrain_multipack_attn = false``): each bin's samples become one
    sequence, so a row's tokens attend to every earlier token of the row, across documents.
    """
    if packing:
        samples = [[dataset[index] for index in members] for members in bins]
        if joined:
            samples = [[_joined(members)] for members in samples]
        return collate_packed(samples, pad_token_id=pad_token_id, pad_to=pad_to)
    return collate_padded([dataset[members[0]] for members in bins], pad_token_id=pad_token_id, pad_to=pad_to)


def _joined(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One sample of ``samples`` end to end, each document's labels as stored (a packed row masks
    every document's first label; joined, only the row's first is masked)."""
    return (
        np.concatenate([ids for ids, _ in samples]),
        np.concatenate([labels for _, labels in samples]),
    )
