"""`axr preprocess` end to end: stores, reuse and invalidation, bad input, skip counts, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import PreparedDataset, prepared_store_for, preprocess
from preprocess_support import PreprocessWorkspace, alpaca_rows


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_preprocess_writes_train_and_eval_stores_then_reuses_them(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(60))
    config = preprocess_workspace.config(data, top="val_set_size = 0.1")
    code, out, _ = _run_cli(["preprocess", str(config)], capsys)
    assert code == 0
    assert "prepared" in out
    assert "rows read 60, kept 60" in out
    cfg = load_config(config)
    root = prepared_store_for(cfg)
    train, evaluation = PreparedDataset(root / "train"), PreparedDataset(root / "eval")
    assert (len(train), len(evaluation)) == (54, 6)
    assert train.meta["counts"]["rows_read"] == 60
    assert train.meta["options"]["sequence_len"] == 256
    assert train.meta["token_dtype"] == "uint16"

    code, out, _ = _run_cli(["preprocess", str(config)], capsys)
    assert code == 0
    assert out.startswith("reused")
    assert _entries(preprocess_workspace.prepared) == [root.name]


def test_completion_text_round_trips_through_the_tokenizer(preprocess_workspace: PreprocessWorkspace) -> None:
    from tokenizers import Tokenizer

    texts = ["Hello world.", "Ünïcödé and   spaces\nnew line", "x" * 40]
    data = preprocess_workspace.write_rows("text.jsonl", [{"text": text} for text in texts])
    config = preprocess_workspace.config(data, type="completion", top="shuffle_merged_datasets = false")
    result = preprocess(load_config(config), progress=False)
    dataset = PreparedDataset(result.stores["train"])
    reference = Tokenizer.from_file(str(dataset.tokenizer_dir / "tokenizer.json"))
    for index, text in enumerate(texts):
        input_ids, labels = dataset[index]
        assert reference.decode(input_ids, skip_special_tokens=True) == text
        assert isinstance(input_ids.base, np.memmap) or isinstance(input_ids, np.memmap)
        assert (labels != -100).any()


def test_edits_to_data_or_settings_rebuild(preprocess_workspace: PreprocessWorkspace) -> None:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(20))
    config = preprocess_workspace.config(data)
    first = preprocess(load_config(config), progress=False)
    assert not first.reused
    assert preprocess(load_config(config), progress=False).reused

    # Same bytes under another name reuse the store: the fingerprint hashes contents, not names.
    renamed = preprocess_workspace.root / "renamed.jsonl"
    renamed.write_bytes(data.read_bytes())
    assert preprocess(
        load_config(preprocess_workspace.config(renamed, name="renamed.toml")), progress=False
    ).reused

    shorter = preprocess(load_config(config, ["--sequence_len=64"]), progress=False)
    assert not shorter.reused
    assert shorter.root != first.root

    content = bytearray(data.read_bytes())
    content[content.index(b"number")] = ord("N")
    data.write_bytes(bytes(content))
    edited = preprocess(load_config(config), progress=False)
    assert not edited.reused
    assert edited.root not in (first.root, shorter.root)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', ":2: -: malformed JSON"),
        (b'{"instruction": "a", "output": "b"}\n\n{"output": "b"}\n', ":3: instruction:"),
        (b'{"instruction": "\xff\xfe", "output": "b"}\n', ":1: -: invalid UTF-8"),
        (b'{"instruction": 5, "output": "b"}\n', ":1: instruction:"),
        (b"", ":0: -: the file is empty"),
    ],
)
def test_bad_input_names_file_line_and_field_and_writes_nothing(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str], content: bytes, where: str
) -> None:
    data = preprocess_workspace.root / "bad.jsonl"
    data.write_bytes(content)
    config = preprocess_workspace.config(data)
    code, _, err = _run_cli(["preprocess", str(config)], capsys)
    assert code == 2
    assert f"bad.jsonl{where}" in err, err
    assert len(err.strip().splitlines()) == 1
    assert _entries(preprocess_workspace.prepared) == []


def test_skip_mode_counts_bad_rows(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    data = preprocess_workspace.root / "mixed.jsonl"
    good = [json.dumps(row) for row in alpaca_rows(5)]
    data.write_text(
        "\n".join([good[0], "{not json", good[1], '{"output": "no instruction"}', *good[2:]]) + "\n"
    )
    config = preprocess_workspace.config(data, top='on_bad_row = "skip"')
    code, out, _ = _run_cli(["preprocess", str(config)], capsys)
    assert code == 0
    assert "skipped bad rows 2" in out
    meta = PreparedDataset(prepared_store_for(load_config(config))).meta
    assert meta["samples"] == 5
    assert meta["counts"]["skipped_bad_rows"] == 2
    assert any("mixed.jsonl:2: -: malformed JSON" in line for line in meta["counts"]["skipped_examples"])


def test_too_long_rows_are_dropped_or_truncated_and_counted(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    rows = [*alpaca_rows(4), {"instruction": "long", "input": "", "output": "word " * 400}]
    data = preprocess_workspace.write_rows("data.jsonl", rows)
    dropped = preprocess(load_config(preprocess_workspace.config(data)), progress=False)
    assert dropped.metas["train"]["counts"]["dropped"] == {"longer_than_sequence_len": 1}
    assert dropped.metas["train"]["samples"] == 4
    truncated = preprocess(
        load_config(preprocess_workspace.config(data, top='excess_length_strategy = "truncate"')),
        progress=False,
    )
    assert truncated.metas["train"]["counts"]["truncated"] == {"longer_than_sequence_len": 1}
    assert truncated.metas["train"]["longest"] == 256


def test_an_uncached_hub_dataset_offline_is_a_clear_error(
    preprocess_workspace: PreprocessWorkspace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = preprocess_workspace.config(Path("tatsu-lab/alpaca"))
    code, _, err = _run_cli(["preprocess", str(config)], capsys)
    assert code == 2
    assert "datasets[0]: 'tatsu-lab/alpaca' is not in the local cache and the hub is offline" in err


@pytest.mark.parametrize(
    "url", ["s3://bucket/rows.jsonl", "gs://bucket/rows.jsonl", "https://example.org/r.jsonl"]
)
def test_url_dataset_paths_offline_fail_at_once_naming_the_url(
    preprocess_workspace: PreprocessWorkspace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    url: str,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AXR_CACHE", str(tmp_path / "empty-cache"))
    config = preprocess_workspace.config(Path("placeholder"))
    config.write_text(config.read_text().replace('path = "placeholder"', f'path = "{url}"'))
    code, _, err = _run_cli(["preprocess", str(config)], capsys)
    assert code == 2
    assert f"datasets[0].path: {url} is not in the local cache" in err
    assert err.rstrip().endswith("and the hub is offline")


# The child records its resident memory at every progress tick (each chunk), so the figure is the
# pipeline's own peak, not the tokenizer-loading peak that ru_maxrss would report.
_RSS_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from axr._native import preprocess
    page = os.sysconf("SC_PAGE_SIZE")
    peak = [0]
    def tick(stage, done, total, rows, tokens):
        with open("/proc/self/statm") as statm:
            peak[0] = max(peak[0], int(statm.read().split()[1]) * page // 1024)
    preprocess(sys.argv[1], progress=tick)
    print(peak[0])
    """
)


def _peak_rss_kib(workspace: PreprocessWorkspace, rows: int, name: str) -> int:
    data = workspace.root / f"{name}.jsonl"
    sentence = "The quick brown fox jumps over the lazy dog while the model learns to count. "
    with data.open("w") as handle:
        for index in range(rows):
            # Every 10th row holds a special token's text, so the doctor records findings throughout.
            special = "</s> " if index % 10 == 0 else ""
            handle.write(json.dumps({"text": f"{index} {special}" + sentence * (4 + index % 7)}) + "\n")
    options = {
        "datasets": [{"source": {"path": str(data)}, "format": {"type": "completion"}}],
        "tokenizer_dir": str(workspace.tokenizer_dir),
        "sequence_len": 2048,
        "prepared_dir": str(workspace.root / f"prepared-{name}"),
        "num_threads": 2,
        "chunk_rows": 256,
        "chunk_bytes": 128 * 1024,
        "doctor": True,
    }
    child = [sys.executable, "-c", _RSS_CHILD, json.dumps(options)]
    completed = subprocess.run(child, capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_corpus_size(preprocess_workspace: PreprocessWorkspace) -> None:
    # ~0.5 MB vs ~5.5 MB of text (~1.3M tokens) with 128 KiB chunks: the big corpus is ~40 chunks.
    # Holding it (text + ids + masks) would add well over 10 MiB; the shuffle order adds 8 bytes a
    # sample (80 KiB) and the rest is allocator noise.
    small = _peak_rss_kib(preprocess_workspace, 1_000, "small")
    large = _peak_rss_kib(preprocess_workspace, 10_000, "large")
    assert large - small < 6 * 1024, f"peak RSS while preprocessing grew from {small} KiB to {large} KiB"
    # The doctor ran over every row of the large corpus in that same pass.
    meta = json.loads(
        next((preprocess_workspace.root / "prepared-large").glob("*/train/meta.json")).read_text()
    )
    assert meta["doctor"]["rows"] == 10_000
    assert meta["doctor"]["findings"]["special_tokens_in_text"]["count"] == 1_000


def test_interrupt_from_the_progress_callback_stops_and_leaves_no_store(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    data = preprocess_workspace.write_rows("data.jsonl", alpaca_rows(50))
    config = preprocess_workspace.config(data)
    stages: list[str] = []

    def interrupt(stage: str, done: int, total: int, rows: int, tokens: int) -> None:
        stages.append(stage)
        if stage.startswith("tokenize"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(load_config(config), callback=interrupt)
    assert stages[-1] == "tokenize train"
    assert _entries(preprocess_workspace.prepared) == []
