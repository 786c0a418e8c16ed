"""Fixtures of the conversation tests: a byte-level BPE tokenizer and the shared corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr.testing.conversations import generate_conversations
from axr.testing.tokenizers import build_tekken_tokenizer


@pytest.fixture(scope="session")
def tekken_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mistral's tekken (tiktoken-style byte-level BPE, 131k vocab) as a tokenizer.json folder."""
    return build_tekken_tokenizer(tmp_path_factory.mktemp("tekken-tokenizer"))


@pytest.fixture(scope="session")
def conversations() -> list[list[dict[str, str]]]:
    """240 awkward conversations (see axr.testing.conversations)."""
    return generate_conversations(240, seed=0)


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(smollm2_dir: Path) -> Path:
    """SmolLM2-135M-Instruct's byte-level BPE (49k vocab) with its real chat template, from its GGUF file."""
    return smollm2_dir
