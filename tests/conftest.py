"""Shared fixtures: all offline. Tokenizers are built from packages installed with the dev extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr.testing import build_mistral_tokenizer
from preprocess_support import PreprocessWorkspace


@pytest.fixture(scope="session")
def mistral_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tokenizer.json folder: Mistral-7B's SentencePiece BPE (32k vocab) from mistral-common."""
    return build_mistral_tokenizer(tmp_path_factory.mktemp("mistral-tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, mistral_tokenizer_dir: Path) -> Path:
    """A random-weight 2-layer Llama (hidden 64) with the Mistral tokenizer, loadable by Auto* classes."""
    from axr.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), mistral_tokenizer_dir)


@pytest.fixture
def preprocess_workspace(tmp_path: Path, mistral_tokenizer_dir: Path) -> PreprocessWorkspace:
    return PreprocessWorkspace(tmp_path, mistral_tokenizer_dir)
