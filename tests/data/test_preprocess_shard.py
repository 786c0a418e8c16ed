"""Sharded preprocessing: `axr preprocess CONFIG --shard I/N` for every part, then `--merge`, gives the
store of a single `axr preprocess CONFIG`, byte for byte; and the errors when parts do not fit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import preprocess
from preprocess_support import PreprocessWorkspace, alpaca_rows


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _documents(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "ünï", "code", "x=1;", "\n", "42"]
    return [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(1, 120)))} for _ in range(count)]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _single_store(workspace: PreprocessWorkspace, config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The store a single run of the same config builds, moved aside (its meta.json names the
    prepared folder, so both runs use the same one)."""
    code, out, _ = _run(["preprocess", str(config), "--no-progress"], capsys)
    assert code == 0, out
    root = preprocess(load_config(config), progress=False).root
    reference = workspace.root / "reference" / root.name
    reference.parent.mkdir()
    root.rename(reference)
    return reference


def _assert_four_parts_merge_to(
    workspace: PreprocessWorkspace,
    config: Path,
    expected: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    keep_parts: bool = False,
) -> None:
    read = 0
    for index in range(4):
        code, out, _ = _run(["preprocess", str(config), "--shard", f"{index}/4", "--no-progress"], capsys)
        assert code == 0, out
        assert f"built part {index}/4" in out
        rows = int(out.split("rows read ")[1].split(", kept")[0].replace(",", ""))
        assert rows > 0  # each part reads its own share
        read += rows
    # The doctor on (the default) on both sides: its findings and sources.bin are merged too.
    keep = ["--keep-parts"] if keep_parts else []
    code, out, _ = _run(["preprocess", str(config), "--merge", "--no-progress", *keep], capsys)
    assert code == 0, out
    # The merged store replaces its parts unless asked to keep them.
    parts = sorted(path.name for path in (workspace.prepared / "parts").glob("*/*"))
    assert parts == ([f"{index:05}-of-00004" for index in range(4)] if keep_parts else [])
    merged = Path(out.splitlines()[0].split()[1])
    assert merged.name == expected.name  # one fingerprint
    assert _tree(merged) == _tree(expected)
    meta = json.loads((merged / "train" / "meta.json").read_text())
    assert meta["counts"]["rows_read"] == read  # every row read by exactly one part


def test_four_parts_of_several_files_merge_into_the_single_run_store(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = preprocess_workspace
    folder = workspace.root / "corpus"
    folder.mkdir()
    for index in range(3):
        (folder / f"part-{index}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in _documents(70 + 40 * index, index))
        )
    pq.write_table(pa.Table.from_pylist(_documents(50, 9)), folder / "part-3.parquet")
    (folder / "part-4.json").write_text(json.dumps(_documents(30, 10)))
    config = workspace.config(
        folder,
        type="completion",
        top='val_set_size = 0.05\nsequence_len = 128\nexcess_length_strategy = "truncate"',
    )
    config.write_text(config.read_text().replace("sequence_len = 256\n", "", 1))
    expected = _single_store(workspace, config, capsys)
    assert (expected / "eval").is_dir()
    _assert_four_parts_merge_to(workspace, config, expected, capsys)


def test_one_big_jsonl_is_cut_by_byte_ranges_and_train_merges_the_parts(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = preprocess_workspace
    rows = alpaca_rows(2400)
    rows[1733]["output"] = ""  # dropped: nothing to train, in part 2 of 4
    data = workspace.write_rows("big.jsonl", rows)
    config = workspace.config(data)
    expected = _single_store(workspace, config, capsys)
    _assert_four_parts_merge_to(workspace, config, expected, capsys, keep_parts=True)
    # Found by part 2, which numbers the lines of its byte range from 1: the merge makes it the file's.
    doctor = json.loads((expected / "train" / "meta.json").read_text())["doctor"]
    assert doctor["findings"]["no_trainable_tokens"] == {"count": 1, "examples": [f"{data}:1734"]}

    # `axr train` calls preprocess(cfg): with all parts present and no store, it merges them.
    import shutil

    shutil.rmtree(workspace.prepared / expected.name)
    stages: set[str] = set()
    result = preprocess(load_config(config), callback=lambda stage, *_: stages.add(stage))
    assert "merge" in stages, stages
    assert "tokenize train" not in stages, stages
    assert not result.reused
    assert result.root.name == expected.name
    assert _tree(result.root) == _tree(expected)


def test_missing_foreign_and_out_of_range_parts_are_clear_errors(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = preprocess_workspace
    data = workspace.write_rows("data.jsonl", alpaca_rows(200))
    config = workspace.config(data)

    code, _, err = _run(["preprocess", str(config), "--shard", "4/4"], capsys)
    assert code == 2
    assert "--shard" in err
    assert "4/4" in err
    code, _, err = _run(["preprocess", str(config), "--shard", "two"], capsys)
    assert code == 2
    assert "expected I/N" in err

    for index in (0, 1, 3):
        assert _run(["preprocess", str(config), "--shard", f"{index}/4", "--no-progress"], capsys)[0] == 0
    code, _, err = _run(["preprocess", str(config), "--merge", "--no-progress"], capsys)
    assert code == 2
    assert "part 2/4 missing" in err
    assert "--shard 2/4" in err

    # Part 2 built from a config with another sequence_len cannot be merged with the others.
    code, _, _ = _run(
        ["preprocess", str(config), "--shard", "2/4", "--no-progress", "--sequence_len=200"], capsys
    )
    assert code == 0
    code, _, err = _run(["preprocess", str(config), "--merge", "--no-progress"], capsys)
    assert code == 2
    assert "part 2/4 missing" in err
    assert "other settings" in err
    assert not any(path.name != "parts" for path in workspace.prepared.iterdir())


def test_conversation_doctor_report_of_the_merge_is_the_single_runs(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from axr.data import preprocess_shard
    from axr.errors import DataError

    workspace = preprocess_workspace
    # The generation prompt adds a newline the training render lacks: every checked row is a
    # mismatch. 32 rows are checked, more than part 0 of 4 holds, so the merge picks them across
    # parts; some rows have no answer (skipped) and some hold "<s>" (found in every part).
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\\\\n{% endif %}"
    )
    rows: list[dict[str, object]] = []
    for index in range(100):
        user = {"role": "user", "content": f"question {index} " + "word " * (index % 13)}
        answer = {"role": "assistant", "content": f"answer {index}" + (" <s>" if index % 17 == 5 else "")}
        rows.append({"messages": [user] if index % 10 == 3 else [user, answer]})
    data = workspace.write_rows("chat.jsonl", rows)
    config = workspace.config(
        data,
        type="chat_template",
        top=f'chat_template = "jinja"\nchat_template_jinja = "{template}"\ntrain_on_inputs = true',
    )
    expected = _single_store(workspace, config, capsys)
    cfg = load_config(config)
    parts = [preprocess_shard(cfg, index, 4, progress=False) for index in range(4)]
    assert all(part.train["rows_read"] > 0 for part in parts)
    assert parts[0].train["rows_read"] < 32
    merged = preprocess(cfg, progress=False, merge=True)
    assert merged.root.name == expected.name
    assert _tree(merged.root) == _tree(expected)
    doctor = json.loads((expected / "train" / "meta.json").read_text())["doctor"]
    assert (doctor["template_checked"], doctor["template_skipped"]) == (29, 3)
    assert doctor["findings"]["template_prompt_mismatch"]["count"] == 29
    assert doctor["findings"]["special_tokens_in_text"] == {
        "count": 5,  # row 73 has no answer
        "examples": [f"{data}:{index + 1}" for index in (5, 22, 39, 56, 90)],
    }

    # special_tokens_in_text = "error": the part that meets the row names the file's own line.
    strict = workspace.config(
        data,
        type="chat_template",
        top=f'chat_template = "jinja"\nchat_template_jinja = "{template}"\nspecial_tokens_in_text = "error"',
        name="strict.toml",
    )
    with pytest.raises(DataError, match=r"chat.jsonl:57: .*<s>"):
        preprocess_shard(load_config(strict), 2, 4, progress=False)
