"""The fast encoder against Hugging Face `tokenizers`, on the real tokenizers available offline.

Differential: every text is encoded by axr (the fast encoder, which must be the path taken) and
by `tokenizers`' `encode_batch`; ids must be identical. Offsets and masks are compared in the
core's own tests and by `axr preprocess --verify-encoder` below.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from axr._native import Encoder
from axr.cli import main
from axr.testing.conversations import generate_conversations
from preprocess_support import PreprocessWorkspace, alpaca_rows

EDGE_CASES = [
    "",
    " ",
    "   leading and trailing   ",
    "emoji 😀👍🏽🇫🇷 family 👨‍👩‍👧",
    "CJK 中文字 日本語のテキスト 한국어 ﾃｽﾄ",
    "combining e\u0301 a\u0301\u0302 n\u0303",
    "control \x00\x01\x07\x1b\x7f\x85 chars",
    "line\u2028separator\u2029para",
    " " * 200 + "x" + "\t" * 50 + "\n" * 30,
    "digits 0 12 345 6789 3.14159 1,000,000 ١٢٣ Ⅻ",
    "a" * 3000,
    "x" + "é" * 500,
    "it's don't WE'LL they're I'M",
    "literal ▁ marks ▁▁ here▁",
    "</s>",
    "<s>hi</s>",
    "text</s>touching<s>specials </s> spaced",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "[INST] tekken control [/INST]",
    "\r\n\r\n\n  \r ",
    "path/to/file.py // comment\n/* c */",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = [
        *"abcXYZ é中😀 \n\t\r'▁0123456789.,;/<>|_-\u0301\u2028",
        "</s>",
        "<s>",
        "<|im_end|>",
        " the",
        "ing",
        "  ",
    ]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def _corpus() -> list[str]:
    texts = list(EDGE_CASES)
    for conversation in generate_conversations(240, seed=0):
        texts.extend(message["content"] for message in conversation)
        texts.append("\n".join(f"{message['role']}: {message['content']}" for message in conversation))
    return texts + _random_texts(2000, seed=1)


def _assert_identical(tokenizer_dir: Path, texts: list[str], rendered: list[str]) -> dict:
    reference = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    summary: dict = {}
    encoder = Encoder(tokenizer_dir)
    for add_special_tokens in (True, False):
        for corpus in (texts, rendered):
            ids, _, summary_json = encoder.encode_texts(corpus, add_special_tokens=add_special_tokens)
            summary = json.loads(summary_json)
            assert summary["path"] == "fast", summary
            expected = [
                encoding.ids
                for encoding in reference.encode_batch(corpus, add_special_tokens=add_special_tokens)
            ]
            mismatches = [index for index in range(len(corpus)) if ids[index] != expected[index]]
            assert not mismatches, [corpus[index][:80] for index in mismatches[:5]]
    return summary


def _rendered(tokenizer_dir: Path) -> list[str]:
    rows = [json.dumps(row) for row in alpaca_rows(300)]
    spec = json.dumps({"type": "alpaca", "train_on_inputs": False})
    return [text for text, _ in Encoder(tokenizer_dir).render_rows(rows, spec)]


def test_sentencepiece_mistral_is_identical(mistral_tokenizer_dir: Path) -> None:
    summary = _assert_identical(mistral_tokenizer_dir, _corpus(), _rendered(mistral_tokenizer_dir))
    assert "SentencePiece" in summary["detail"]
    assert summary["stats"]["cache_hits"] > summary["stats"]["cache_misses"] > 0


def _relaid(source: Path, target: Path, **changes: object) -> Path:
    """A copy of the tokenizer folder `source` whose tokenizer.json has `changes` (weights left out)."""
    for path in source.iterdir():
        if path.is_file() and path.suffix not in (".safetensors", ".gguf", ".bin"):
            (target / path.name).write_bytes(path.read_bytes())
    layout = json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
    layout.update(changes)
    (target / "tokenizer.json").write_text(json.dumps(layout), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("scheme", "split"),
    [("first", False), ("always", False), ("first", True), ("always", True), ("never", True)],
)
def test_sentencepiece_mistral_in_the_metaspace_layout_is_identical(
    mistral_tokenizer_dir: Path, tmp_path: Path, scheme: str, split: bool
) -> None:
    """The same vocabulary as transformers conversions write it: no normalizer, Metaspace (older
    Llama/Mistral conversions split, recent ones do not)."""
    pre_tokenizer = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
    _relaid(mistral_tokenizer_dir, tmp_path, normalizer=None, pre_tokenizer=pre_tokenizer)
    summary = _assert_identical(tmp_path, _corpus(), _rendered(tmp_path))
    name = 'Metaspace "\u2581" split' if split else 'Metaspace "\u2581"'
    assert summary["detail"] == f"SentencePiece BPE ({name}, byte fallback)"


def _trimming_post_processor(layout: str, bos_id: int) -> dict[str, object]:
    """GPT-2's post-processor (ByteLevel trimming offsets), alone or before a BOS template."""
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": layout != "alone",
        "trim_offsets": True,
        "use_regex": True,
    }
    if layout == "alone":
        return byte_level
    bos = {"id": "<|endoftext|>", "ids": [bos_id], "tokens": ["<|endoftext|>"]}
    template = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": bos},
    }
    return {"type": "Sequence", "processors": [byte_level, template]}


@pytest.mark.parametrize("layout", ["alone", "sequence"])
def test_byte_level_trimming_offsets_is_identical(
    smollm2_tokenizer_dir: Path, tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SmolLM2's byte-level vocabulary with GPT-2's offset-trimming post-processor: ids, and the
    label masks the trimmed offsets decide, equal `tokenizers`'."""
    bos_id = Tokenizer.from_file(str(smollm2_tokenizer_dir / "tokenizer.json")).token_to_id("<|endoftext|>")
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    _relaid(smollm2_tokenizer_dir, folder, post_processor=_trimming_post_processor(layout, bos_id))
    summary = _assert_identical(folder, _corpus(), _rendered(folder))
    assert summary["detail"] == "byte-level BPE, GPT-2 split"

    # Masks come from offsets: outputs led and trailed by spaces put trimmed tokens at the edges
    # of the trained spans.
    workspace = PreprocessWorkspace(tmp_path, folder)
    rows = alpaca_rows(60) + [
        {"instruction": f"q{index}  ", "input": "", "output": "  " * (index % 3 + 1) + text + " \t "}
        for index, text in enumerate(EDGE_CASES)
        if len(text) < 150
    ]
    config = workspace.config(workspace.write_rows("data.jsonl", rows), top="train_on_inputs = false")
    assert main(["preprocess", str(config), "--no-doctor", "--no-progress", "--verify-encoder", "1000"]) == 0
    out = capsys.readouterr().out
    assert "encode fast encoder: byte-level BPE, GPT-2 split" in out, out
    assert f"verified {len(rows)} texts against tokenizers: identical" in out, out


def test_byte_level_tekken_is_identical(tekken_tokenizer_dir: Path) -> None:
    summary = _assert_identical(tekken_tokenizer_dir, _corpus(), _rendered(tekken_tokenizer_dir))
    assert summary["detail"] == "byte-level BPE, tekken split"


def test_byte_level_smollm2_is_identical(smollm2_tokenizer_dir: Path) -> None:
    summary = _assert_identical(smollm2_tokenizer_dir, _corpus(), _rendered(smollm2_tokenizer_dir))
    assert summary["detail"] == "byte-level BPE, GPT-2 split"


def test_disabled_fast_encoder_falls_back_and_says_why(
    mistral_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AXR_FAST_ENCODER", "0")
    ids, _, summary_json = Encoder(mistral_tokenizer_dir).encode_texts(["hello world"])
    summary = json.loads(summary_json)
    assert summary["path"] == "tokenizers"
    assert "AXR_FAST_ENCODER=0" in summary["detail"]
    reference = Tokenizer.from_file(str(mistral_tokenizer_dir / "tokenizer.json"))
    assert ids == [reference.encode("hello world").ids]


def test_preprocess_verify_encoder_checks_every_text(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = alpaca_rows(120)
    rows += [
        {"instruction": text, "input": "", "output": text + "</s>"}
        for text in EDGE_CASES
        if 0 < len(text) < 150
    ]
    data = preprocess_workspace.write_rows("data.jsonl", rows)
    config = preprocess_workspace.config(data, top="train_on_inputs = false")
    assert main(["preprocess", str(config), "--no-doctor", "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "encode fast encoder: SentencePiece" in first
    # A second run would reuse the store; verification rebuilds it and encodes both ways.
    assert main(["preprocess", str(config), "--no-doctor", "--no-progress", "--verify-encoder", "1000"]) == 0
    out = capsys.readouterr().out
    assert f"verified {len(rows)} texts against tokenizers: identical" in out, out
