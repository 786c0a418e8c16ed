"""The data doctor, which runs inside the native pipeline on every row: each finding triggered by
data made to show it (on each dataset type, over corpora larger than the old 20,000-row limit),
`special_tokens_in_text = "error"`, the rows the old Python re-reader got wrong (U+2028, invalid
UTF-8), and `axr inspect`'s sample sources and doctor report read from the store."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import preprocess
from axr.data.doctor import FINDINGS, diagnose
from axr.errors import DataError

ROWS = 20_500  # more than the 20,000 rows the old summary examined
SPECIAL_EVERY = 1000
SPECIAL_ROWS = [index for index in range(ROWS) if index % SPECIAL_EVERY == 7]


def _chat(user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _store(
    workspace: Any,
    rows: list[dict[str, Any]],
    *,
    type: str = "chat_template",
    top: str = "",
    dataset: str = "",
) -> tuple[Path, Path, Path]:
    data = workspace.write_rows("rows.jsonl", rows)
    config = workspace.config(data, type=type, top=f"shuffle_merged_datasets = false\n{top}", dataset=dataset)
    return data, config, preprocess(load_config(config), progress=False).stores["train"]


def _counts(report: dict[str, Any]) -> dict[str, int]:
    return {name: finding["count"] for name, finding in report["findings"].items()}


def _chatml_tokenizer(source: Path, target: Path) -> Path:
    """The Mistral tokenizer with ChatML's markers added as special tokens (as Qwen's are)."""
    from tokenizers import AddedToken, Tokenizer

    shutil.copytree(source, target)
    tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
    tokenizer.add_special_tokens([AddedToken(text, special=True) for text in ("<|im_start|>", "<|im_end|>")])
    tokenizer.save(str(target / "tokenizer.json"))
    return target


def _large_corpus(kind: str) -> tuple[str, str, list[dict[str, Any]]]:
    """(type, field holding the special text, rows) with a special token's text in SPECIAL_ROWS."""
    special = set(SPECIAL_ROWS)
    if kind == "alpaca":
        rows = [
            {
                "instruction": f"Match number {i}",
                "input": "",
                "output": "(?P<s>\\d+)" if i in special else f"{i}",
            }
            for i in range(ROWS)
        ]
        return "alpaca", "output", rows
    if kind == "chat":
        rows = [_chat(f"say <|im_start|> {i}" if i in special else f"say {i}", f"{i}") for i in range(ROWS)]
        return "chat_template", "messages[0].content", rows
    rows = [{"text": f"<s> text {i}" if i in special else f"text {i}"} for i in range(ROWS)]
    return "completion", "text", rows


@pytest.mark.parametrize("kind", ["alpaca", "chat", "completion"])
def test_findings_on_each_dataset_type_are_counted_over_the_whole_corpus(
    preprocess_workspace: Any, mistral_tokenizer_dir: Path, tmp_path: Path, kind: str
) -> None:
    type_, field, rows = _large_corpus(kind)
    top, dataset = "", ""
    if kind == "chat":
        preprocess_workspace.tokenizer_dir = _chatml_tokenizer(mistral_tokenizer_dir, tmp_path / "chatml")
        dataset = 'chat_template = "chatml"'
    data, config, store = _store(preprocess_workspace, rows, type=type_, top=top, dataset=dataset)
    report = diagnose(store)
    counts = _counts(report)
    assert report["rows"] == ROWS
    assert counts["special_tokens_in_text"] == len(SPECIAL_ROWS) == 21
    assert report["findings"]["special_tokens_in_text"]["examples"] == [
        f"{data}:{index + 1}" for index in SPECIAL_ROWS[:5]
    ]
    expected = dict.fromkeys(FINDINGS, 0)
    expected["special_tokens_in_text"] = 21
    if kind == "chat":
        # ChatML writes no BOS while the Mistral tokenizer adds one to plain text: every row.
        expected["missing_bos"] = ROWS
    if kind == "completion":
        # "<s> text" tokenizes as BOS and the tokenizer adds its own before it.
        expected["double_bos"] = 21
    assert counts == expected
    # `error` stops at the first such row, naming file, line and field.
    first = re.escape(f"{data}:{SPECIAL_ROWS[0] + 1}: {field}: holds the special token text")
    with pytest.raises(DataError, match=first):
        preprocess(load_config(config, ["--special_tokens_in_text=error"]), progress=False)


def test_clean_conversations_have_no_findings_and_mistral_prompts_are_token_prefixes(
    preprocess_workspace: Any,
) -> None:
    # Mistral's template puts the space before an answer into the assistant part, so the prompt
    # string is not a prefix of the training text; its token ids are, which is what inference sees.
    rows = [_chat(f"What is {index} + 1?", f"It is {index + 1}.") for index in range(40)]
    _, _, store = _store(preprocess_workspace, rows, top='chat_template = "mistral"')
    report = diagnose(store)
    assert report["rows"] == 40
    assert _counts(report) == dict.fromkeys(FINDINGS, 0)
    assert (report["template_checked"], report["template_skipped"]) == (32, 0)


def test_generation_prompt_whose_ids_are_not_a_prefix(preprocess_workspace: Any) -> None:
    # The generation prompt adds a newline the training render does not have before the answer.
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}"
    )
    rows = [_chat("hi", "hello"), _chat("yo", "hey"), {"messages": [{"role": "user", "content": "q"}]}]
    data, _, store = _store(
        preprocess_workspace,
        rows,
        top=f'chat_template = "jinja"\nchat_template_jinja = "{template}"\ntrain_on_inputs = true',
    )
    report = diagnose(store)
    # The third row has no answer to generate: skipped.
    assert (report["template_checked"], report["template_skipped"]) == (2, 1)
    assert report["findings"]["template_prompt_mismatch"] == {
        "count": 2,
        "examples": [f"{data}:1", f"{data}:2"],
    }


def test_missing_and_double_bos(preprocess_workspace: Any) -> None:
    rows = [_chat("hi", "hello") for _ in range(3)]
    data, _, store = _store(preprocess_workspace, rows, dataset='chat_template = "chatml"')
    report = diagnose(store)
    assert report["findings"]["missing_bos"] == {
        "count": 3,
        "examples": [f"{data}:1", f"{data}:2", f"{data}:3"],
    }
    assert _counts(report)["double_bos"] == 0


def test_rows_without_trained_tokens_use_the_pipeline_count(preprocess_workspace: Any) -> None:
    rows = [_chat("a", "b"), {"messages": [{"role": "user", "content": "nobody answers"}]}, _chat("c", "d")]
    data, _, store = _store(preprocess_workspace, rows, top='chat_template = "mistral"')
    report = diagnose(store)
    assert report["findings"]["no_trainable_tokens"] == {"count": 1, "examples": [f"{data}:2"]}


def test_end_of_turn_cut_by_truncation(preprocess_workspace: Any) -> None:
    rows = [_chat("short", "fine"), _chat("long", "word " * 300)]
    data, _, store = _store(
        preprocess_workspace, rows, top='chat_template = "chatml"\nexcess_length_strategy = "truncate"'
    )
    report = diagnose(store)
    assert report["findings"]["end_of_turn_not_trained"] == {"count": 1, "examples": [f"{data}:2"]}


@pytest.mark.parametrize(("train_on_eos", "flagged"), [("turn", 2), ("last", 2), ("none", 0)])
def test_template_without_end_of_turn(preprocess_workspace: Any, train_on_eos: str, flagged: int) -> None:
    # Nothing marks the end of an answer, so there is no end-of-turn to train.
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    rows = [_chat("hi", "hello"), _chat("yo", "hey")]
    _, _, store = _store(
        preprocess_workspace,
        rows,
        top=f'chat_template = "jinja"\nchat_template_jinja = "{template}"',
        dataset=f'train_on_eos = "{train_on_eos}"',
    )
    assert diagnose(store)["findings"]["end_of_turn_not_trained"]["count"] == flagged


def test_line_separator_inside_a_json_string_does_not_split_a_row(preprocess_workspace: Any) -> None:
    # U+2028 is legal raw inside a JSON string; str.splitlines() would cut the row in two.
    rows = [_chat("one\u2028two", "fine"), _chat("what is </s>\u2028?", "a token"), _chat("three", "ok")]
    data = preprocess_workspace.root / "rows.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    config = preprocess_workspace.config(
        data, type="chat_template", top='shuffle_merged_datasets = false\nchat_template = "mistral"'
    )
    store = preprocess(load_config(config), progress=False).stores["train"]
    report = diagnose(store)
    assert report["rows"] == 3
    assert report["findings"]["special_tokens_in_text"] == {"count": 1, "examples": [f"{data}:2"]}
    with pytest.raises(DataError, match=rf"{data}:2: messages\[0\]\.content: holds the special token text"):
        preprocess(load_config(config, ["--special_tokens_in_text=error"]), progress=False)


def test_invalid_utf8_row_skipped_by_preprocessing_is_not_examined(preprocess_workspace: Any) -> None:
    data = preprocess_workspace.root / "rows.jsonl"
    good = [json.dumps(_chat(f"q{index}", "<s> a")).encode() for index in range(3)]
    data.write_bytes(b"\n".join([good[0], b'{"messages": "\xff\xfe"}', good[1], good[2]]) + b"\n")
    config = preprocess_workspace.config(
        data,
        type="chat_template",
        top='shuffle_merged_datasets = false\nchat_template = "mistral"\non_bad_row = "skip"',
    )
    result = preprocess(load_config(config), progress=False)
    assert result.metas["train"]["counts"]["skipped_bad_rows"] == 1
    report = diagnose(result.stores["train"])
    assert report["rows"] == 3
    assert report["findings"]["special_tokens_in_text"]["examples"] == [f"{data}:1", f"{data}:3", f"{data}:4"]


def test_special_tokens_error_is_checked_once_when_the_store_is_built(preprocess_workspace: Any) -> None:
    rows = [_chat("fine", "fine"), _chat("also fine", "ok")]
    _, config, _ = _store(
        preprocess_workspace, rows, top='special_tokens_in_text = "error"', dataset='chat_template = "chatml"'
    )
    again = preprocess(load_config(config), progress=False)
    assert again.reused  # nothing re-read or re-encoded: the build already checked every row


def test_inspect_shows_each_samples_source_and_the_doctor(preprocess_workspace: Any, capsys: Any) -> None:
    rows = [_chat(f"question {index}", f"answer {index}") for index in range(6)]
    data = preprocess_workspace.write_rows("rows.jsonl", rows)
    # Shuffled: the source is read from the store, not inferred from the sample's position.
    config = preprocess_workspace.config(data, type="chat_template", dataset='chat_template = "chatml"')
    store = preprocess(load_config(config), progress=False).stores["train"]
    assert main(["inspect", str(store), "-n", "6"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("\n--- sample ")[1:]
    lines = sorted(int(block.split(f"(source {data}:")[1].split(")")[0]) for block in blocks)
    assert lines == [1, 2, 3, 4, 5, 6]
    for block in blocks:
        line = int(block.split(f"(source {data}:")[1].split(")")[0])
        assert f"question {line - 1}" in block
    assert main(["inspect", str(store), "--doctor"]) == 0
    assert "missing bos: 6" in capsys.readouterr().out


def test_preprocess_summary_carries_the_doctor(preprocess_workspace: Any, capsys: Any) -> None:
    rows = [_chat("hi", "hello"), _chat("what is </s>?", "a token")]
    data, config, store = _store(preprocess_workspace, rows, dataset='chat_template = "chatml"')
    shutil.rmtree(store.parent)
    assert main(["preprocess", str(config), "--no-doctor"]) == 0
    assert "doctor" not in capsys.readouterr().out
    assert "doctor" not in json.loads((store / "meta.json").read_text())
    assert main(["inspect", str(store), "--doctor"]) == 2
    assert "built with the data doctor off" in capsys.readouterr().err
    shutil.rmtree(store.parent)
    assert main(["preprocess", str(config)]) == 0
    out = capsys.readouterr().out
    assert "doctor 2 rows examined" in out
    assert f"special tokens in text: 1 (e.g. {data}:2)" in out


def test_eval_store_of_test_datasets_has_its_own_report(preprocess_workspace: Any, capsys: Any) -> None:
    train = preprocess_workspace.write_rows("train.jsonl", [_chat("train q", "train a")])
    held_out = preprocess_workspace.write_rows("held_out.jsonl", [_chat("eval q", "<s> eval a")])
    config = preprocess_workspace.config(
        train,
        type="chat_template",
        top='chat_template = "mistral"',
        dataset=f'[[test_datasets]]\npath = "{held_out}"\ntype = "chat_template"\n',
    )
    stores = preprocess(load_config(config), progress=False).stores
    report = diagnose(stores["eval"])
    assert report["rows"] == 1
    assert report["findings"]["special_tokens_in_text"]["examples"] == [f"{held_out}:1"]
    assert diagnose(stores["train"])["findings"]["special_tokens_in_text"]["count"] == 0
    assert main(["inspect", str(config), "--split", "eval"]) == 0
    assert f"(source {held_out}:1)" in capsys.readouterr().out
