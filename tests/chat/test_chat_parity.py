"""Conversations: axr's ids equal ``tokenizer.apply_chat_template(messages, tokenize=True)`` row for row,
and the trained tokens are exactly those of the assistant contents (+ end-of-turn per train_on_eos).

The ids come from the real data path (format spec → chat formatter → Encoder, through
``_native.Encoder.encode_rows``); transformers renders with Jinja2 from the same template string, so
any difference in rendering, whitespace handling or tokenization shows up as an id mismatch.
The expected mask is derived independently of axr's span finder: from each style's assistant
header, the (possibly trimmed) content after it and the end-of-turn text that follows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from axr import _native
from axr.errors import ConfigError, DataError
from axr.testing.conversations import as_sharegpt

# Per style: text right before an assistant content, whether the style trims contents, and the
# text that ends an assistant turn ("EOS" = the tokenizer's EOS token).
STYLE_FACTS: dict[str, tuple[str, bool, str]] = {
    "chatml": ("<|im_start|>assistant\n", False, "<|im_end|>"),
    "qwen2": ("<|im_start|>assistant\n", False, "<|im_end|>"),
    "llama2": (" [/INST] ", True, "EOS"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", True, "<|eot_id|>"),
    "mistral": (" [/INST]", False, "EOS"),
    "vicuna_v1.1": ("ASSISTANT:", False, "EOS"),
    "alpaca": ("### Response:\n", False, "EOS"),
    "gemma": ("<start_of_turn>model\n", True, "<end_of_turn>"),
    "phi3": ("<|assistant|>\n", False, "<|end|>"),
    "pygmalion": ("<|model|> ", True, "EOS"),
}

# A multi-line template in the style of hub tokenizers, relying on trim_blocks/lstrip_blocks.
TOKENIZER_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n'  + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""


def expected_spans(text: str, messages: list[dict[str, str]], facts: tuple[str, bool, str], eos: str) -> list:
    """Character spans that must be trained: assistant contents and the end-of-turn after each."""
    prefix, trims, end_of_turn = facts
    end_of_turn = eos if end_of_turn == "EOS" else end_of_turn
    spans = []
    cursor = 0
    for message in messages:
        if message["role"] != "assistant":
            continue
        found = text.find(prefix, cursor)
        assert found >= 0, f"assistant header {prefix!r} not found after {cursor} in {text!r}"
        cursor = found + len(prefix)
        piece = message["content"].strip() if trims else message["content"]
        if prefix == "ASSISTANT:" and piece:
            cursor += 1  # FastChat writes "ASSISTANT: content", but "ASSISTANT:" when empty
        assert text.startswith(piece, cursor), (piece, text[cursor : cursor + 80])
        spans.append((cursor, cursor + len(piece)))
        cursor += len(piece)
        after = cursor + len(text[cursor:]) - len(text[cursor:].lstrip())
        if text.startswith(end_of_turn, after):
            spans.append((after, after + len(end_of_turn)))
    return [span for span in spans if span[0] < span[1]]


def expected_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    return [
        any(start < span_end and end > span_start for span_start, span_end in spans) for start, end in offsets
    ]


def encode(rows: list[dict[str, Any]], spec: dict[str, Any], tokenizer_dir: Path) -> list:
    return _native.Encoder(tokenizer_dir).encode_rows([json.dumps(row) for row in rows], json.dumps(spec))


def check_rows(
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    encoded: list,
    facts: tuple[str, bool, str],
    chat_template: str | None,
) -> None:
    id_mismatches, mask_mismatches = [], []
    for index, (messages, (ids, trainable)) in enumerate(zip(conversations, encoded, strict=True)):
        expected_ids = tokenizer.apply_chat_template(
            messages, chat_template=chat_template, tokenize=True, return_dict=False
        )
        if ids.tolist() != list(expected_ids):
            id_mismatches.append(index)
            continue
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
        encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        assert encoding.ids == list(expected_ids)
        mask = expected_mask(encoding.offsets, expected_spans(text, messages, facts, tokenizer.eos_token))
        if trainable.tolist() != mask:
            mask_mismatches.append(index)
    assert not id_mismatches, (
        f"{len(id_mismatches)} rows differ from apply_chat_template: {id_mismatches[:10]}"
    )
    assert not mask_mismatches, f"{len(mask_mismatches)} rows have wrong masks: {mask_mismatches[:10]}"


@pytest.fixture(scope="module", params=["mistral", "tekken", pytest.param("smollm2", marks=pytest.mark.slow)])
def tokenizer_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.getfixturevalue(f"{request.param}_tokenizer_dir"))


def test_every_style_matches_transformers(tokenizer_dir: Path, conversations: list) -> None:
    assert sorted(STYLE_FACTS) == sorted(_native.chat_style_names())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"messages": messages} for messages in conversations]
    for style, facts in STYLE_FACTS.items():
        encoded = encode(rows, {"type": "chat_template", "chat_template": style}, tokenizer_dir)
        try:
            check_rows(tokenizer, conversations, encoded, facts, _native.chat_style_source(style))
        except AssertionError as error:
            raise AssertionError(f"style {style}: {error}") from error


def test_tokenizer_template_matches_transformers(
    tokenizer_dir: Path, conversations: list, tmp_path: Path
) -> None:
    with_template = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_dir, with_template)
    config_path = with_template / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = TOKENIZER_TEMPLATE
    config_path.write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(with_template)
    rows = [{"messages": messages} for messages in conversations]
    # No chat_template key: today's default is the tokenizer's own template.
    encoded = encode(rows, {"type": "chat_template"}, with_template)
    check_rows(tokenizer, conversations, encoded, ("<|assistant|>\n", False, "EOS"), None)


@pytest.mark.slow
def test_a_real_models_own_template_matches_transformers(
    smollm2_tokenizer_dir: Path, conversations: list
) -> None:
    # SmolLM2-135M-Instruct's template as its GGUF file ships it: chatml turns, and a default system
    # message inserted when a conversation has none. No chat_template key: the tokenizer's own is used.
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.chat_template
    rows = [{"messages": messages} for messages in conversations]
    encoded = encode(rows, {"type": "chat_template"}, smollm2_tokenizer_dir)
    check_rows(tokenizer, conversations, encoded, ("<|im_start|>assistant\n", False, "<|im_end|>"), None)


def test_sharegpt_2024_schema_renders_like_vicuna(mistral_tokenizer_dir: Path, conversations: list) -> None:
    tokenizer = AutoTokenizer.from_pretrained(mistral_tokenizer_dir)
    rows = [{"conversations": as_sharegpt(messages)} for messages in conversations]
    encoded = encode(rows, {"type": "sharegpt", "conversation": "vicuna_v1.1"}, mistral_tokenizer_dir)
    check_rows(
        tokenizer,
        conversations,
        encoded,
        STYLE_FACTS["vicuna_v1.1"],
        _native.chat_style_source("vicuna_v1.1"),
    )


@pytest.mark.parametrize("mode", ["none", "all", "last"])
def test_train_on_eos_modes(mistral_tokenizer_dir: Path, conversations: list, mode: str) -> None:
    rows = [{"messages": messages} for messages in conversations[:60]]
    options = json.dumps({"chat_template": "chatml", "train_on_eos": mode})
    rendered = _native.chat_render("chat_template", options, [json.dumps(row) for row in rows])
    for messages, (text, trainable, turns) in zip(conversations[:60], rendered, strict=True):
        data = text.encode()  # ranges are byte offsets
        trained_text = b"".join(data[start:end] for start, end in trainable).decode()
        ends = [turn[3] for turn in turns if turn[3] is not None]
        pieces = []
        for message, turn in zip(messages, turns, strict=True):
            if message["role"] == "assistant":
                pieces.append(message["content"])
            end = turn[3]
            if end is not None and (mode == "all" or (mode == "last" and end == ends[-1])):
                pieces.append("<|im_end|>")
        assert trained_text == "".join(pieces)


def test_bad_rows_name_file_line_and_field(mistral_tokenizer_dir: Path) -> None:
    spec = {"type": "chat_template", "chat_template": "chatml"}
    good = {"messages": [{"role": "user", "content": "hi"}]}
    cases = [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]},
            r"messages\[1\]\.role",
        ),
        ({"messages": [{"role": "user"}]}, r"messages\[0\]\.content"),
        ({"messages": [{"role": "user", "content": ["parts"]}]}, r"messages\[0\]\.content.*list"),
        ({"messages": "hello"}, r"messages: expected a list"),
        ({"conversations": []}, r"messages: missing"),
    ]
    for bad, pattern in cases:
        with pytest.raises(DataError, match=r"<rows>:2: " + pattern):
            encode([good, bad], spec, mistral_tokenizer_dir)


def test_config_errors_name_the_key(mistral_tokenizer_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"chat_template: unknown chat template `chatmel`.*chatml"):
        encode([], {"type": "chat_template", "chat_template": "chatmel"}, mistral_tokenizer_dir)
    # The Mistral tokenizer ships no chat template, so tokenizer_default has nothing to use.
    with pytest.raises(ConfigError, match=r"no chat_template in tokenizer_config.json"):
        encode([], {"type": "chat_template"}, mistral_tokenizer_dir)


def test_tekken_ids_match_mistral_common(tekken_tokenizer_dir: Path, conversations: list) -> None:
    """The converted tokenizer.json gives tekken's own ids (mistral-common's Tekkenizer)."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from tokenizers import Tokenizer

    from axr.testing.tokenizers import mistral_common_data_dir

    reference = Tekkenizer.from_file(str(mistral_common_data_dir() / "tekken_240911.json"))
    converted = Tokenizer.from_file(str(tekken_tokenizer_dir / "tokenizer.json"))
    texts = [message["content"] for messages in conversations for message in messages][:600]
    texts += ["", " ", "  two  spaces ", "tab\there", "\r\n", "x" * 500, "naïve 😀 中文"]
    assert len(texts) >= 300
    mismatched = [
        text
        for text in texts
        if converted.encode(text, add_special_tokens=False).ids
        != reference.encode(text, bos=False, eos=False)
    ]
    assert not mismatched, mismatched[:3]
    assert converted.encode("hi").ids[0] == reference.bos_id
    assert np.all(np.array(converted.encode("hi").ids[1:]) >= 1000)
