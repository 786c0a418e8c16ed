"""The prepared store's on-disk layout: the Python mirror of ``rust/axr-core/src/store/mod.rs``.

A store is a directory::

    meta.json              format_version, counts, token_dtype, fingerprint, options, shards
    tokens-00000.bin       token ids, uint16 or uint32 little-endian, samples back to back
    mask-00000.bin         one byte per token: 1 = trained, 0 = not
    offsets-00000.bin      uint64 little-endian, samples + 1 entries (relative to the shard)
    sources.bin            per sample: dataset (u32), file (u32, into meta's source_files), line (u64)
    tokenizer/             the tokenizer the ids belong to (added tokens included)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from axr.errors import FormatError

FORMAT_VERSION = 1
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"

TOKEN_DTYPES: dict[str, np.dtype[Any]] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
MASK_DTYPE = np.dtype("u1")
OFFSET_DTYPE = np.dtype("<u8")
SOURCES_FILE = "sources.bin"
SOURCE_DTYPE = np.dtype([("dataset", "<u4"), ("file", "<u4"), ("line", "<u8")])


def store_dir(path: str | Path) -> Path:
    """The store at ``path``: a store directory itself, or a prepared root holding ``train/``."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if (path / "train" / META_FILE).is_file():
        return path / "train"
    if not path.exists():
        raise FileNotFoundError(f"no prepared store at {path}")
    raise FormatError(f"{path}: not a prepared store (no {META_FILE}); run `axr preprocess` to build one")


def read_meta(store: Path) -> dict[str, Any]:
    """``meta.json`` of a store, with its format version checked."""
    path = store / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FormatError(f"{path}: not valid JSON: {error}") from error
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{path}: store format version {version}, this axr reads version {FORMAT_VERSION}; "
            "run axr preprocess again"
        )
    if meta.get("token_dtype") not in TOKEN_DTYPES:
        raise FormatError(f"{path}: unknown token_dtype {meta.get('token_dtype')!r}")
    return meta


def sample_source(store: Path, meta: dict[str, Any], index: int) -> tuple[int, str, int]:
    """``(dataset index, file, line)`` of sample ``index``, from the store's ``sources.bin``."""
    record = np.fromfile(
        store / SOURCES_FILE, dtype=SOURCE_DTYPE, count=1, offset=index * SOURCE_DTYPE.itemsize
    )
    if len(record) != 1:
        raise FormatError(f"{store / SOURCES_FILE}: no source recorded for sample {index}")
    dataset, file, line = (int(value) for value in record[0])
    return dataset, meta["source_files"][file], line
