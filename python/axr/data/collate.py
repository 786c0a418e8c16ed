"""Turn prepared samples into model batches: packed rows (one bin per row) or padded rows.

A packed micro-batch of two bins, capacity 8, looks like::

    bin 0: sample a (3 tokens) + sample b (4 tokens) + 1 pad
    bin 1: sample c (5 tokens) + 3 pad

    input_ids     a0 a1 a2 b0 b1 b2 b3 P  | c0 c1 c2 c3 c4 P  P  P
    position_ids  0  1  2  0  1  2  3  0  | 0  1  2  3  4  0  0  0
    labels        -  a1 a2 -  b1 b2 b3 -  | -  c1 c2 c3 c4 -  -  -      (- is -100)
    cu_seqlens    0, 3, 7, 8, 13, 16                                    (over the flattened batch)

position_ids restart at 0 for every sample, which is what lets the attention
backend build a block-diagonal mask (SDPA/eager) or varlen segments (flash-attn).
Each sample's first label is -100 so no sample is trained to predict its
neighbour's first token. Padding positions are 0, so every pad token is a
segment of its own and attends only to itself; pads are never trained.
cu_seqlens and max_seqlen are computed here, on the host, once per batch, so
varlen kernels need no device-to-host sync in every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from axr._native import IGNORE_INDEX

Sample = tuple[Any, Any]
"""``(input_ids, labels)``: 1-D integer arrays of the same length, labels -100 where not trained."""


def _padded_length(longest: int, pad_to: int | None, pad_to_multiple_of: int | None) -> int:
    length = max(longest, pad_to or 0)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    return max(length, 1)


def collate_packed(
    bins: Sequence[Sequence[Sample]],
    *,
    pad_token_id: int,
    pad_to: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Pack each bin of samples into one row; rows are right-padded to a common length.

    Returns torch tensors ``input_ids``, ``labels``, ``position_ids`` (``[rows, length]``,
    int64), ``cu_seqlens`` (int32, boundaries of every sample and of each row's padding
    over the flattened batch), ``max_seqlen`` (int), ``num_tokens`` (int: real tokens) and
    ``num_trainable`` (int: labels that take part in the loss), and ``real_tokens`` (bool
    ``[rows, length]``, False on each row's padding: the router auxiliary loss of MoE models
    counts real tokens only).
    """
    import torch

    row_lengths = [sum(len(ids) for ids, _ in samples) for samples in bins]
    length = _padded_length(max(row_lengths, default=0), pad_to, pad_to_multiple_of)
    rows = len(bins)
    input_ids = np.full((rows, length), pad_token_id, dtype=np.int64)
    labels = np.full((rows, length), IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros((rows, length), dtype=np.int64)
    real_tokens = np.zeros((rows, length), dtype=np.bool_)
    boundaries = [0]
    max_seqlen = 0
    for row, samples in enumerate(bins):
        start = 0
        for ids, sample_labels in samples:
            size = len(ids)
            if len(sample_labels) != size:
                raise ValueError(f"sample has {size} input ids but {len(sample_labels)} labels")
            end = start + size
            input_ids[row, start:end] = ids
            labels[row, start:end] = sample_labels
            labels[row, start] = IGNORE_INDEX
            position_ids[row, start:end] = np.arange(size)
            boundaries.append(row * length + end)
            max_seqlen = max(max_seqlen, size)
            start = end
        real_tokens[row, :start] = True
        if start < length:
            boundaries.append((row + 1) * length)
            max_seqlen = max(max_seqlen, length - start)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids),
        "real_tokens": torch.from_numpy(real_tokens),
        "cu_seqlens": torch.tensor(boundaries, dtype=torch.int32),
        "max_seqlen": max_seqlen,
        "num_tokens": sum(row_lengths),
        "num_trainable": int((labels != IGNORE_INDEX).sum()),
    }


def collate_padded(
    samples: Sequence[Sample],
    *,
    pad_token_id: int,
    pad_to: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """One sample per row, right-padded, with an ``attention_mask`` (``sample_packing: false``).

    Returns ``input_ids``, ``labels``, ``attention_mask`` (``[rows, length]``, int64),
    ``num_tokens`` and ``num_trainable``. The first label of each row is -100, as in packed rows, so both
    paths train exactly the same tokens.
    """
    import torch

    length = _padded_length(max((len(ids) for ids, _ in samples), default=0), pad_to, pad_to_multiple_of)
    rows = len(samples)
    input_ids = np.full((rows, length), pad_token_id, dtype=np.int64)
    labels = np.full((rows, length), IGNORE_INDEX, dtype=np.int64)
    attention_mask = np.zeros((rows, length), dtype=np.int64)
    for row, (ids, sample_labels) in enumerate(samples):
        size = len(ids)
        if len(sample_labels) != size:
            raise ValueError(f"sample has {size} input ids but {len(sample_labels)} labels")
        input_ids[row, :size] = ids
        labels[row, :size] = sample_labels
        labels[row, 0] = IGNORE_INDEX
        attention_mask[row, :size] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "attention_mask": torch.from_numpy(attention_mask),
        "num_tokens": int(attention_mask.sum()),
        "num_trainable": int((labels != IGNORE_INDEX).sum()),
    }
