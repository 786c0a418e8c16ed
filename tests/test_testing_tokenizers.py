"""The offline tokenizer fixture gives SentencePiece's own ids (checked against sentencepiece itself)."""

from __future__ import annotations

import sentencepiece
from transformers import AutoTokenizer

from axr.testing import mistral_common_data_dir

SAMPLES = [
    "Hello world",
    " leading space",
    "trailing space ",
    "double  space",
    "tab\there",
    "日本語のテキスト 🤗 emoji",
    "",
    "def f(x):\n    return x + 1\n",
    "\n\nnewlines first",
]


def test_mistral_tokenizer_matches_sentencepiece(mistral_tokenizer_dir):
    processor = sentencepiece.SentencePieceProcessor(
        model_file=str(mistral_common_data_dir() / "tokenizer.model.v1")
    )
    tokenizer = AutoTokenizer.from_pretrained(mistral_tokenizer_dir)
    for text in SAMPLES:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == processor.encode(text), text
    assert tokenizer("Hi")["input_ids"][0] == processor.bos_id()
