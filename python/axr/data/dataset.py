"""``PreparedDataset``: the samples of a prepared store, read through ``np.memmap`` (nanoGPT's pattern).

No Rust runs here, so DataLoader workers can fork freely; a sample costs no copy
until it enters a batch::

    dataset = PreparedDataset("last_run_prepared/<fingerprint>/train")
    input_ids, labels = dataset[0]     # input_ids: a view of tokens-*.bin; labels: int64, -100 = untrained
    dataset.lengths                    # tokens per sample, for packing
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from axr._native import IGNORE_INDEX
from axr.data._format import (
    MASK_DTYPE,
    OFFSET_DTYPE,
    TOKEN_DTYPES,
    TOKENIZER_DIR,
    read_meta,
    store_dir,
)
from axr.errors import FormatError


class PreparedDataset:
    """A prepared store: ``len()``, ``[i] -> (input_ids, labels)``, ``lengths``, ``meta``.

    ``path`` is a store directory (``<root>/train``, ``<root>/eval``) or a prepared root,
    which means its ``train`` store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = store_dir(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        if self.meta.get("kind") == "preference":
            # Its samples are chosen/rejected sequences that only make sense as pairs.
            raise FormatError(
                f"{self.path}: a preference store (built with rl); read it with "
                "axr.data.preference_store.read_preference_store"
            )
        self._open()

    def _open(self) -> None:
        dtype = TOKEN_DTYPES[self.meta["token_dtype"]]
        self._tokens: list[np.memmap[Any, Any]] = []
        self._masks: list[np.memmap[Any, Any]] = []
        self._offsets: list[NDArray[np.uint64]] = []
        for shard in self.meta["shards"]:
            tokens = np.memmap(self.path / shard["tokens"], dtype=dtype, mode="r")
            mask = np.memmap(self.path / shard["mask"], dtype=MASK_DTYPE, mode="r")
            offsets = np.memmap(self.path / shard["offsets"], dtype=OFFSET_DTYPE, mode="r")
            if len(offsets) != shard["samples"] + 1 or len(tokens) != len(mask) or offsets[-1] != len(tokens):
                raise FormatError(f"{self.path}: shard {shard['tokens']} does not match its offsets and mask")
            self._tokens.append(tokens)
            self._masks.append(mask)
            self._offsets.append(offsets)
        counts = [int(shard["samples"]) for shard in self.meta["shards"]]
        self._starts = np.cumsum([0, *counts], dtype=np.int64)
        if int(self._starts[-1]) != int(self.meta["samples"]):
            raise FormatError(f"{self.path}: shard sample counts do not add up to {self.meta['samples']}")
        self.lengths: NDArray[np.int64] = (
            np.concatenate([np.diff(offsets).astype(np.int64) for offsets in self._offsets])
            if self._offsets
            else np.zeros(0, dtype=np.int64)
        )

    # Pickling (spawned DataLoader workers) sends the path, not the mapped bytes.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.meta = read_meta(self.path)
        self._open()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, index: int) -> tuple[int, int, int]:
        """``(shard, start, end)`` of sample ``index`` (negative counts from the end)."""
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"sample {index} of a store with {size} samples")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - int(self._starts[shard])
        offsets = self._offsets[shard]
        return shard, int(offsets[local]), int(offsets[local + 1])

    def __getitem__(self, index: int) -> tuple[NDArray[Any], NDArray[np.int64]]:
        """``(input_ids, labels)`` of sample ``index``: ids are a view of the mapped file (uint16/uint32)."""
        shard, start, end = self._locate(index)
        input_ids = self._tokens[shard][start:end]
        labels = input_ids.astype(np.int64)
        labels[self._masks[shard][start:end] == 0] = IGNORE_INDEX
        return input_ids, labels

    def mask(self, index: int) -> NDArray[np.uint8]:
        """The trained-token mask (1 = trained) of sample ``index``, a view of the mapped file."""
        shard, start, end = self._locate(index)
        return self._masks[shard][start:end]

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer the ids belong to (with the config's added tokens): load it for decoding
        and to size the model's embeddings (``meta["vocab_size"]``)."""
        return self.path / TOKENIZER_DIR

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({str(self.path)!r}, samples={len(self)}, tokens={self.meta['tokens']}, "
            f"dtype={self.meta['token_dtype']})"
        )
