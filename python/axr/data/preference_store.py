"""Preference data (``rl`` set) in the prepared store: rendered once by preprocess, read by train.

A preference store uses the prepared store's files (``tokens-00000.bin``, ``mask-00000.bin``,
``offsets-00000.bin``: one sample per sequence) and adds::

    meta.json     kind "preference", per_unit (2: chosen then rejected; 1: a KTO row), counts
    rows.bin      uint64 per unit: the unit's row number over the config's datasets (0-based, in order)
    labels.bin    KTO only: one byte per sequence, 1 = desirable

Units are stored whole and in order, so unit ``u`` is sequences ``u * per_unit ..`` and a pair is
never separated: over-long units are dropped (counted) and the val split picks units, as
``axr train`` did in memory before. The root is ``<dataset_prepared_path>/<fingerprint>``, the
fingerprint mixing the SFT one (input bytes, options, tokenizer, template files) with the
preference settings, so an identical second run reuses it and a changed input rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from axr.data._format import FORMAT_VERSION, MASK_DTYPE, META_FILE, OFFSET_DTYPE, TOKEN_DTYPES, read_meta
from axr.errors import ConfigError, FormatError

if TYPE_CHECKING:
    from axr.data.preprocess import PreprocessResult
    from axr.train.preference import PreferenceSet

KIND = "preference"
# Bump when what a preference store holds for the same inputs changes: old stores are rebuilt.
PREFERENCE_DATA_VERSION = 2
ROWS_FILE = "rows.bin"
LABELS_FILE = "labels.bin"
ROW_DTYPE = np.dtype("<u8")
DROPPED_REASON = "longer_than_sequence_len"


def is_preference_store(meta: dict[str, Any]) -> bool:
    return meta.get("kind") == KIND


def check_supported(cfg: Any) -> None:
    """Settings the preference store does not apply yet are errors, never silently ignored."""
    from axr.train.preference import method_of

    # The method picks the dataset types the rows are read with: one that cannot train (kto_pair,
    # a key it does not read) fails here, before any row is rendered.
    method_of(cfg)
    if cfg.on_bad_row != "error":
        raise ConfigError(
            f"on_bad_row: {cfg.on_bad_row!r} is not supported yet with rl (a bad preference row is an error)"
        )
    if cfg.excess_length_strategy not in (None, "drop"):
        raise ConfigError(
            f"excess_length_strategy: {cfg.excess_length_strategy!r} is not supported yet with rl; "
            "over-long preference rows are dropped (as Axolotl does), set it to drop or remove it"
        )
    for key in ("dataset_shard_num", "push_dataset_to_hub"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"{key}: not supported yet with rl (preference stores)")


def fitting_units(data: PreferenceSet, sequence_len: int) -> np.ndarray:
    """Units whose every sequence fits ``sequence_len`` (Axolotl's ``drop_long_rl_seq``). Packed, a
    pair too long for one row together takes a row per sequence (``collate_units``), so it is kept."""
    lengths = np.diff(data.offsets).reshape(-1, data.per_unit)[data.units]
    return data.units[(lengths <= sequence_len).all(axis=1)]


def _fingerprint(cfg: Any, options: dict[str, Any], specs: list[dict[str, Any]]) -> str:
    from axr._native import locate_prepared

    # The SFT fingerprint already covers the inputs' bytes, every option and the tokenizer.
    base = Path(locate_prepared(json.dumps(options))).name
    settings = {
        "base": base,
        "kind": KIND,
        "version": PREFERENCE_DATA_VERSION,
        "kto": cfg.rl == "kto",
        "sample_packing": bool(cfg.sample_packing),
        "specs": specs,
    }
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).hexdigest()


def _existing(root: Path) -> dict[str, Path] | None:
    if not (root / "train" / META_FILE).is_file():
        return None
    stores = {}
    for split in ("train", "eval"):
        store = root / split
        if (store / META_FILE).is_file():
            if not is_preference_store(read_meta(store)):
                raise FormatError(f"{store}: not a preference store; remove it and run axr preprocess again")
            stores[split] = store
    return stores


def _write_store(
    directory: Path, data: PreferenceSet, rows: np.ndarray, split: str, meta: dict[str, Any]
) -> None:
    """Write the units of ``data`` in the order of ``data.units`` as one shard; ``rows`` holds each
    unit's row number (same order)."""
    directory.mkdir(parents=True)
    per_unit = data.per_unit
    # Sequence numbers in writing order: each unit's members, side by side.
    sequences = (np.asarray(data.units, dtype=np.int64)[:, None] * per_unit + np.arange(per_unit)).ravel()
    offsets = np.asarray(data.offsets, dtype=np.int64)
    starts, kept_lengths = offsets[sequences], offsets[sequences + 1] - offsets[sequences]
    ends = np.cumsum(kept_lengths)
    # Token positions to gather: each sequence's start plus its position within the sequence.
    tokens = np.repeat(starts - (ends - kept_lengths), kept_lengths) + np.arange(
        int(ends[-1]) if len(ends) else 0
    )
    ids = np.asarray(data.input_ids)[tokens]
    mask = np.asarray(data.trainable)[tokens].astype(MASK_DTYPE)
    dtype_name = "uint16" if len(ids) == 0 or int(ids.max()) < 1 << 16 else "uint32"
    ids.astype(TOKEN_DTYPES[dtype_name]).tofile(directory / "tokens-00000.bin")
    mask.tofile(directory / "mask-00000.bin")
    np.concatenate([[0], np.cumsum(kept_lengths)]).astype(OFFSET_DTYPE).tofile(
        directory / "offsets-00000.bin"
    )
    np.asarray(rows, dtype=ROW_DTYPE).tofile(directory / ROWS_FILE)
    if data.desirable is not None:
        np.asarray(data.desirable)[sequences].astype(MASK_DTYPE).tofile(directory / LABELS_FILE)
    count = len(sequences)
    contents = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "split": split,
        "per_unit": per_unit,
        "units": len(data.units),
        "samples": count,
        "tokens": len(ids),
        "trainable_tokens": int(mask.sum()),
        "longest": int(kept_lengths.max()) if count else 0,
        "token_dtype": dtype_name,
        "shards": [
            {
                "tokens": "tokens-00000.bin",
                "mask": "mask-00000.bin",
                "offsets": "offsets-00000.bin",
                "samples": count,
                "tokens_count": len(ids),
            }
        ],
        **meta,
    }
    (directory / META_FILE).write_text(json.dumps(contents, indent=2) + "\n")


def _datasets(entries: list[dict[str, Any]], data: PreferenceSet) -> list[dict[str, Any]]:
    """Each dataset's key, path and units read, in order: rows.bin numbers count through them."""
    return [
        {"key": entry["source"]["key"], "path": entry["source"]["path"], "units": count}
        for entry, count in zip(entries, data.meta["dataset_units"], strict=True)
    ]


def _counts(data: PreferenceSet, kept: np.ndarray) -> dict[str, Any]:
    dropped = len(data) - len(kept)
    return {
        "rows_read": len(data),
        "kept": len(kept),
        "dropped": {DROPPED_REASON: dropped} if dropped else {},
    }


def _build(cfg: Any, options: dict[str, Any], fingerprint: str, directory: Path) -> None:
    from axr.train.preference import encode_entries

    packing = bool(cfg.sample_packing)
    common = {"fingerprint": fingerprint, "sample_packing": packing, "options": options}
    train = encode_entries(cfg, options["datasets"], options)
    kept = fitting_units(train, cfg.sequence_len)
    counts = _counts(train, kept)
    if len(kept) == 0:
        what = "rows" if train.per_unit == 1 else "pairs"
        raise ConfigError(
            f"datasets: none of the {len(train)} preference {what} fits sequence_len = {cfg.sequence_len}"
        )
    splits: dict[str, np.ndarray] = {"train": kept}
    if not options["test_datasets"] and cfg.val_set_size:
        # The split picks whole units, so a pair's chosen and rejected land on the same side.
        order = np.random.default_rng(cfg.seed).permutation(kept)
        size = cfg.val_set_size
        count = round(size * len(order)) if size < 1 else int(size)
        if not 0 < count < len(order):
            raise ConfigError(f"val_set_size: {size} leaves no training or no evaluation units")
        splits = {"train": np.sort(order[count:]), "eval": np.sort(order[:count])}
        # One run's counts, in both stores (as SFT stores hold them).
        counts["val_split"] = count
    if cfg.shuffle_merged_datasets:
        # As SFT stores are: the units of all datasets shuffled together once, with the seed (the
        # order sequential sampling reads); a unit moves whole, so a pair stays together.
        splits = {split: _shuffled(units, cfg.seed) for split, units in splits.items()}
    for split, units in splits.items():
        meta = {**common, "counts": counts, "datasets": _datasets(options["datasets"], train)}
        _write_store(directory / split, train.subset(units), units, split, meta)
    if options["test_datasets"]:
        test = encode_entries(cfg, options["test_datasets"], options)
        fits = fitting_units(test, cfg.sequence_len)
        meta = {
            **common,
            "counts": _counts(test, fits),
            "datasets": _datasets(options["test_datasets"], test),
        }
        if cfg.shuffle_merged_datasets:
            fits = _shuffled(fits, cfg.seed)
        _write_store(directory / "eval", test.subset(fits), fits, "eval", meta)


def _shuffled(units: np.ndarray, seed: int) -> np.ndarray:
    return np.asarray(units)[np.random.default_rng([seed, 1]).permutation(len(units))]


def preprocess_preference(cfg: Any) -> PreprocessResult:
    """Build the preference stores of ``cfg`` (or find identical ones): ``axr preprocess`` with ``rl``."""
    from axr.data.preprocess import PreprocessResult, options_from_config
    from axr.train.preference import spec_of

    started = time.perf_counter()
    check_supported(cfg)
    options = options_from_config(cfg)
    # Spec errors (a key preference data does not read) come before the inputs are hashed.
    specs = [spec_of(entry, cfg) for entry in [*options["datasets"], *options["test_datasets"]]]
    fingerprint = _fingerprint(cfg, options, specs)
    prepared = Path(options["prepared_dir"])
    root = prepared / fingerprint
    stores = _existing(root)
    reused = stores is not None
    if stores is None:
        prepared.mkdir(parents=True, exist_ok=True)
        temporary = prepared / f"{fingerprint}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            _build(cfg, options, fingerprint, temporary)
            try:
                temporary.rename(root)
            except OSError:
                # Another run finished the same fingerprint first: its stores are identical.
                if _existing(root) is None:
                    raise
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
        stores = _existing(root)
        assert stores is not None
    metas = {split: read_meta(path) for split, path in stores.items()}
    return PreprocessResult(
        root=root,
        fingerprint=fingerprint,
        reused=reused,
        stores=stores,
        seconds=time.perf_counter() - started,
        metas=metas,
    )


def read_preference_store(store: Path) -> PreferenceSet:
    """The units of a preference store, memory-mapped; ``rows`` holds each unit's row number."""
    from axr.train.preference import PreferenceSet

    meta = read_meta(store)
    if not is_preference_store(meta):
        raise FormatError(
            f"{store}: not a preference store (built without rl); run axr preprocess with rl set"
        )
    per_unit, units = int(meta["per_unit"]), int(meta["units"])
    if len(meta["shards"]) != 1:
        raise FormatError(f"{store}: a preference store has one shard, found {len(meta['shards'])}")
    shard = meta["shards"][0]
    ids = np.memmap(store / shard["tokens"], dtype=TOKEN_DTYPES[meta["token_dtype"]], mode="r")
    mask = np.memmap(store / shard["mask"], dtype=MASK_DTYPE, mode="r")
    offsets = np.fromfile(store / shard["offsets"], dtype=OFFSET_DTYPE).astype(np.int64)
    rows = np.fromfile(store / ROWS_FILE, dtype=ROW_DTYPE).astype(np.int64)
    if (
        len(offsets) != units * per_unit + 1
        or len(ids) != len(mask)
        or int(offsets[-1]) != len(ids)
        or len(rows) != units
    ):
        raise FormatError(f"{store}: its tokens, mask, offsets and rows do not match meta.json")
    desirable = None
    if (store / LABELS_FILE).is_file():
        desirable = np.fromfile(store / LABELS_FILE, dtype=MASK_DTYPE).astype(bool)
        if len(desirable) != units * per_unit:
            raise FormatError(f"{store}: {LABELS_FILE} does not hold one label per sequence")
    data = PreferenceSet(
        input_ids=ids,
        trainable=mask.view(bool),
        offsets=offsets,
        per_unit=per_unit,
        desirable=desirable,
        units=np.arange(units, dtype=np.int64),
        rows=rows,
        meta=meta,
    )
    return data


def report_dropped(result: PreprocessResult) -> None:
    """The train-start line for units dropped as over-long (the preprocess summary shows them too)."""
    for split, meta in result.metas.items():
        counts = meta["counts"]
        dropped = counts["dropped"].get(DROPPED_REASON, 0)
        # A val split's eval store holds the train store's counts: report them once.
        if dropped and (split == "train" or "val_split" not in counts):
            what = "pairs" if meta["per_unit"] == 2 else "rows"
            print(
                f"axr: {dropped} of {counts['rows_read']} preference {what} ({split}) dropped: longer than "
                f"sequence_len {meta['options']['sequence_len']}",
                file=sys.stderr,
            )
