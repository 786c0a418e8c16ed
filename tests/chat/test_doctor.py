"""The data doctor (axr.data.doctor) and `axr inspect`'s turn display: each finding triggered by a
small dataset made to show it, and a clean dataset that shows none."""

from __future__ import annotations

from typing import Any

import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import preprocess
from axr.data.doctor import FINDINGS, diagnose
from axr.errors import DataError


def _chat(user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _store(
    workspace: Any,
    rows: list[dict[str, Any]],
    *,
    type: str = "chat_template",
    top: str = "",
    dataset: str = "",
):
    data = workspace.write_rows("rows.jsonl", rows)
    config = workspace.config(data, type=type, top=f"shuffle_merged_datasets = false\n{top}", dataset=dataset)
    return data, config, preprocess(load_config(config), progress=False).stores["train"]


def _counts(report: dict[str, Any]) -> dict[str, int]:
    return {name: finding["count"] for name, finding in report["findings"].items()}


def test_clean_conversations_have_no_findings(preprocess_workspace: Any) -> None:
    rows = [_chat(f"What is {index} + 1?", f"It is {index + 1}.") for index in range(40)]
    _, _, store = _store(preprocess_workspace, rows, top='chat_template = "mistral"')
    report = diagnose(store)
    assert report["rows"] == 40
    assert _counts(report) == dict.fromkeys(FINDINGS, 0)
    # The tokenizer carries the template, so the first 32 rows are checked against transformers.
    assert (report["template_checked"], report["template_skipped"]) == (32, 0)


def test_row_limit_examines_a_prefix_and_says_so(preprocess_workspace: Any, capsys: Any) -> None:
    rows = [_chat("hi", "hello") for _ in range(5)]
    _, config, store = _store(preprocess_workspace, rows, dataset='chat_template = "chatml"')
    limited = diagnose(store, max_rows_per_dataset=2)
    assert (limited["rows"], limited["limited"], _counts(limited)["missing_bos"]) == (2, True, 2)
    whole = diagnose(store, max_rows_per_dataset=5)
    assert (whole["rows"], whole["limited"], _counts(whole)["missing_bos"]) == (5, False, 5)
    assert main(["preprocess", str(config), "--no-progress", "--doctor-rows", "2"]) == 0
    assert "2 rows examined (the first of each dataset" in capsys.readouterr().out


def test_missing_bos_and_template_the_tokenizer_lacks(preprocess_workspace: Any) -> None:
    # chatml writes no BOS while the Mistral tokenizer adds one to plain text; the tokenizer has no
    # template of its own, so the prompt check is skipped and counted.
    rows = [_chat("hi", "hello") for _ in range(3)]
    data, _, store = _store(preprocess_workspace, rows, dataset='chat_template = "chatml"')
    report = diagnose(store)
    counts = _counts(report)
    assert counts["missing_bos"] == 3
    assert counts["double_bos"] == 0
    assert report["findings"]["missing_bos"]["examples"] == [f"{data}:1", f"{data}:2", f"{data}:3"]
    assert (report["template_checked"], report["template_skipped"]) == (0, 3)


def test_double_bos_in_completion_text(preprocess_workspace: Any) -> None:
    rows = [{"text": "plain text"}, {"text": "<s> starts with a literal BOS"}]
    data, _, store = _store(preprocess_workspace, rows, type="completion")
    report = diagnose(store)
    assert report["findings"]["double_bos"] == {"count": 1, "examples": [f"{data}:2"]}
    assert _counts(report)["missing_bos"] == 0


def test_special_token_text_is_reported_or_an_error(preprocess_workspace: Any) -> None:
    rows = [_chat("fine", "fine"), _chat("what does </s> mean?", "it ends a text"), _chat("ok", "<s> too")]
    data, config, store = _store(preprocess_workspace, rows, top='chat_template = "mistral"')
    report = diagnose(store)
    assert report["findings"]["special_tokens_in_text"] == {
        "count": 2,
        "examples": [f"{data}:2", f"{data}:3"],
    }
    with pytest.raises(DataError, match=rf"{data}:2: message 0 \(user\) holds the special token text '</s>'"):
        preprocess(load_config(config, ["--special_tokens_in_text=error"]), progress=False)


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


def test_generation_prompt_that_differs_from_the_training_render(preprocess_workspace: Any) -> None:
    # The generation prompt adds a newline the training render does not have before the answer.
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}"
    )
    rows = [_chat("hi", "hello"), _chat("yo", "hey")]
    data, _, store = _store(
        preprocess_workspace,
        rows,
        top=f'chat_template = "jinja"\nchat_template_jinja = "{template}"',
    )
    report = diagnose(store)
    assert report["template_checked"] == 2
    assert report["findings"]["template_prompt_mismatch"] == {
        "count": 2,
        "examples": [f"{data}:1", f"{data}:2"],
    }


def test_inspect_shows_turns_and_doctor(preprocess_workspace: Any, capsys: Any) -> None:
    rows = [_chat(f"question {index}", f"answer {index}") for index in range(4)]
    data, _, store = _store(preprocess_workspace, rows, top='chat_template = "chatml"')
    assert main(["inspect", str(store), "--index", "2"]) == 0
    out = capsys.readouterr().out
    assert f"(source {data}:3)" in out
    lines = out.splitlines()
    user = lines.index("[user] <|im_start|>user")
    assert lines[user + 1] == "question 2<|im_end|>"
    assert "[assistant] " in lines
    assert "[[answer 2<|im_end|>]]" in lines
    assert main(["inspect", str(store), "--doctor"]) == 0
    out = capsys.readouterr().out
    assert "missing bos: 4" in out


def test_preprocess_summary_carries_the_doctor(preprocess_workspace: Any, capsys: Any) -> None:
    rows = [_chat("hi", "hello"), _chat("what is </s>?", "a token")]
    data, config, _ = _store(preprocess_workspace, rows, dataset='chat_template = "chatml"')
    assert main(["preprocess", str(config)]) == 0
    out = capsys.readouterr().out
    assert "doctor 2 rows examined" in out
    assert f"special tokens in text: 1 (e.g. {data}:2)" in out
    assert main(["preprocess", str(config), "--no-doctor"]) == 0
    assert "doctor" not in capsys.readouterr().out


def test_eval_store_of_test_datasets_is_read_from_them(preprocess_workspace: Any, capsys: Any) -> None:
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
