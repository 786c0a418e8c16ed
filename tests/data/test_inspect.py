"""`axr inspect`: decoded samples with trained tokens marked, and ids with labels on request."""

from __future__ import annotations

import pytest

from axr.cli import main
from preprocess_support import PreprocessWorkspace, alpaca_rows


def test_inspect_marks_trained_tokens_and_prints_labels(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(4))
    config = preprocess_workspace.config(data, top="shuffle_merged_datasets = false")
    assert main(["inspect", str(config), "-n", "1"]) == 0  # builds the store first
    out = capsys.readouterr().out
    assert "### Instruction:\nSay the number 0" in out
    assert "### Response:\n[[It is 0.</s>]]" in out
    assert out.count("[[") == 1

    store = next((preprocess_workspace.prepared).iterdir()) / "train"
    assert main(["inspect", str(store), "--index", "2", "--ids"]) == 0
    out = capsys.readouterr().out
    assert "sample 2:" in out
    assert "sample 0:" not in out
    assert "<s>(1, -100)" in out
    assert "</s>(2, 2)" in out


def test_inspect_rejects_an_index_outside_the_store(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(2))
    config = preprocess_workspace.config(data)
    assert main(["inspect", str(config), "--index", "5"]) == 2
    assert "the store has 2 samples" in capsys.readouterr().err
