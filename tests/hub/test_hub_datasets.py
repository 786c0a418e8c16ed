"""Datasets by hub id: subsets, splits, data files and revisions resolved to cached files, rows read
natively."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from axr.config import load_config
from axr.data.preprocess import options_from_config, preprocess
from axr.errors import ConfigError
from axr.testing.hub_server import alpaca_dataset_repo
from hub_support import DATASET_ID, SUBSETS_ID


def _config(
    tmp_path: Path, tokenizer_dir: Path, dataset: str, *, test_dataset: str = "", name: str = "c.toml"
) -> Path:
    path = tmp_path / name
    text = (
        f'base_model = "{tokenizer_dir}"\nsequence_len = 128\n'
        f'dataset_prepared_path = "{tmp_path / "prepared"}"\n'
        f'[[datasets]]\npath = "{DATASET_ID}"\ntype = "alpaca"\n{dataset}\n'
    )
    if test_dataset:
        text += f'[[test_datasets]]\npath = "{DATASET_ID}"\ntype = "alpaca"\n{test_dataset}\n'
    path.write_text(text)
    return path


def test_the_default_subset_reads_its_train_and_test_splits(
    fake_hub, hf_home, tmp_path, mistral_tokenizer_dir
):
    config = load_config(_config(tmp_path, mistral_tokenizer_dir, "", test_dataset='split = "test"'))
    result = preprocess(config, progress=False)
    assert result.metas["train"]["samples"] == 12
    assert result.metas["eval"]["samples"] == 4
    cached = hf_home / "hub" / "datasets--axr-test--alpaca-mini" / "snapshots"
    fetched = sorted(path.name for path in cached.glob("*/data/*.jsonl"))
    assert fetched == ["test-00000-of-00001.jsonl", "train-00000-of-00001.jsonl"]
    assert not list(cached.glob("*/parquet/*")), "another subset's files are not fetched"


def test_a_named_subset_of_parquet_files(fake_hub, tmp_path, mistral_tokenizer_dir):
    config = load_config(
        _config(
            tmp_path,
            mistral_tokenizer_dir,
            'name = "numbers_parquet"',
            test_dataset='name = "numbers_parquet"\nsplit = "test"',
        )
    )
    result = preprocess(config, progress=False)
    assert result.metas["train"]["samples"] == 6
    assert result.metas["eval"]["samples"] == 2


def test_name_as_a_list_reads_each_subset_in_order(fake_hub, tmp_path, mistral_tokenizer_dir):
    config = load_config(_config(tmp_path, mistral_tokenizer_dir, 'name = ["numbers_parquet", "default"]'))
    options = options_from_config(config)["datasets"]
    sha = fake_hub.repos[("dataset", DATASET_ID)].revisions["main"].sha
    assert [entry["source"]["origin"] for entry in options] == [
        f"hub dataset {DATASET_ID} at {sha} subset numbers_parquet",
        f"hub dataset {DATASET_ID} at {sha} subset default",
    ]
    assert preprocess(config, progress=False).metas["train"]["samples"] == 6 + 12
    empty = load_config(_config(tmp_path, mistral_tokenizer_dir, "name = []", name="empty.toml"))
    with pytest.raises(ConfigError, match=r"^datasets\[0\]\.name: an empty list names no subset"):
        options_from_config(empty)


def test_a_subset_folder_data_files_and_ds_type(fake_hub, tmp_path, mistral_tokenizer_dir):
    top = f'base_model = "{mistral_tokenizer_dir}"\nsequence_len = 128\n'
    top += f'dataset_prepared_path = "{tmp_path / "p"}"\n'
    subset = tmp_path / "subset.toml"
    subset.write_text(f'{top}[[datasets]]\npath = "{SUBSETS_ID}"\nname = "fr"\ntype = "alpaca"\n')
    assert preprocess(load_config(subset), progress=False).metas["train"]["samples"] == 7
    files = tmp_path / "files.toml"
    files.write_text(
        f'{top}[[datasets]]\npath = "{DATASET_ID}"\ndata_files = ["parquet/test-00000-of-00001.parquet"]\n'
        'ds_type = "parquet"\ntype = "alpaca"\n'
    )
    assert preprocess(load_config(files), progress=False).metas["train"]["samples"] == 2


def test_unknown_subsets_and_splits_are_named(fake_hub, tmp_path, mistral_tokenizer_dir):
    with pytest.raises(
        ConfigError, match=r"datasets\[0\]\.name: .* has no subset 'nope'; it has: default, num"
    ):
        preprocess(load_config(_config(tmp_path, mistral_tokenizer_dir, 'name = "nope"')), progress=False)
    validation = load_config(_config(tmp_path, mistral_tokenizer_dir, 'split = "validation"'))
    with pytest.raises(
        ConfigError, match=r"datasets\[0\]\.split: .* has no split 'validation'; it has: test, tr"
    ):
        preprocess(validation, progress=False)
    config = _config(tmp_path, mistral_tokenizer_dir, 'name = "de"').read_text()
    (tmp_path / "de.toml").write_text(config.replace(DATASET_ID, SUBSETS_ID))
    with pytest.raises(
        ConfigError, match=r"datasets\[0\]\.name: the hub dataset '[\w/-]+' has no subset 'de'"
    ):
        preprocess(load_config(tmp_path / "de.toml"), progress=False)


def test_a_new_revision_rebuilds_and_the_same_one_reuses(fake_hub, tmp_path, mistral_tokenizer_dir):
    path = _config(tmp_path, mistral_tokenizer_dir, "")
    first = preprocess(load_config(path), progress=False)
    again = preprocess(load_config(path), progress=False)
    assert again.reused
    assert again.fingerprint == first.fingerprint

    fake_hub.add_repo("dataset", DATASET_ID, alpaca_dataset_repo(train=12, tag=" again"), revision="v1")
    fake_hub.add_repo("dataset", DATASET_ID, alpaca_dataset_repo(train=10, tag=" again"))
    moved = preprocess(load_config(path), progress=False)
    new_sha = fake_hub.repos[("dataset", DATASET_ID)].revisions["main"].sha
    assert moved.metas["train"]["options"]["datasets"][0]["source"]["origin"] == (
        f"hub dataset {DATASET_ID} at {new_sha}"
    )
    assert not moved.reused
    assert moved.fingerprint != first.fingerprint
    assert moved.metas["train"]["samples"] == 10

    pinned = _config(tmp_path, mistral_tokenizer_dir, 'revision = "v1"', name="pinned.toml")
    at_v1 = preprocess(load_config(pinned), progress=False)
    assert at_v1.metas["train"]["samples"] == 12
    assert at_v1.fingerprint not in (first.fingerprint, moved.fingerprint)
    assert preprocess(load_config(pinned), progress=False).reused


def test_offline_a_cached_dataset_is_read_and_an_uncached_one_fails_at_once(
    fake_hub, hf_home, tmp_path, mistral_tokenizer_dir, monkeypatch
):
    path = _config(tmp_path, mistral_tokenizer_dir, "", test_dataset='split = "test"')
    online = preprocess(load_config(path), progress=False)
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = preprocess(load_config(path), progress=False)
    assert offline.reused
    assert offline.fingerprint == online.fingerprint
    missing = _config(tmp_path, mistral_tokenizer_dir, "", name="missing.toml")
    missing.write_text(missing.read_text().replace(DATASET_ID, "axr-test/never-fetched"))
    started = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=r"^datasets\[0\]: 'axr-test/never-fetched' is not in the local cache and the hub is offline$",
    ):
        preprocess(load_config(missing), progress=False)
    assert time.monotonic() - started < 5
    assert os.environ["HF_HUB_OFFLINE"] == "1"
