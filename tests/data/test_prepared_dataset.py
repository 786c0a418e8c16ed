"""`PreparedDataset`: the store read through np.memmap agrees with meta.json and the label mask."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from axr.config import load_config
from axr.data import PreparedDataset, preprocess
from axr.errors import FormatError
from preprocess_support import PreprocessWorkspace, alpaca_rows


@pytest.fixture
def store(preprocess_workspace: PreprocessWorkspace) -> PreparedDataset:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(30))
    config = preprocess_workspace.config(data, top="shuffle_merged_datasets = false")
    result = preprocess(load_config(config), progress=False)
    return PreparedDataset(result.stores["train"])


def test_samples_lengths_and_labels_agree_with_the_files(store: PreparedDataset) -> None:
    assert len(store) == store.meta["samples"] == 30
    assert int(store.lengths.sum()) == store.meta["tokens"]
    trained = 0
    for index in range(len(store)):
        input_ids, labels = store[index]
        assert input_ids.dtype == np.uint16
        assert labels.dtype == np.int64
        assert len(input_ids) == store.lengths[index]
        mask = store.mask(index)
        np.testing.assert_array_equal(labels[mask == 1], input_ids[mask == 1].astype(np.int64))
        assert (labels[mask == 0] == -100).all()
        trained += int(mask.sum())
        # No copy: the ids are a view of the mapped tokens file.
        assert isinstance(input_ids, np.memmap) or isinstance(input_ids.base, np.memmap)
    assert trained == store.meta["trainable_tokens"]
    np.testing.assert_array_equal(store[-1][0], store[len(store) - 1][0])
    with pytest.raises(IndexError):
        store[len(store)]


def test_first_sample_is_the_first_row_in_order(store: PreparedDataset) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(store.tokenizer_dir / "tokenizer.json"))
    input_ids, labels = store[0]
    answer = tokenizer.decode([int(token) for token in input_ids[labels != -100]], skip_special_tokens=False)
    assert answer.strip() == "It is 0.</s>"


def test_pickles_by_path_and_opens_a_prepared_root(store: PreparedDataset) -> None:
    payload = pickle.dumps(store)
    assert len(payload) < 2048
    copy = pickle.loads(payload)
    np.testing.assert_array_equal(copy[3][1], store[3][1])
    assert len(PreparedDataset(store.path.parent)) == len(store)


def test_other_format_versions_are_refused(store: PreparedDataset) -> None:
    meta_path = store.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="format version 99"):
        PreparedDataset(store.path)
