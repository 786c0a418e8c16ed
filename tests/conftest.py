"""Shared fixtures: all offline. Tokenizers are built from packages installed with the dev extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr.testing import build_mistral_tokenizer


@pytest.fixture(scope="session")
def mistral_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tokenizer.json folder: Mistral-7B's SentencePiece BPE (32k vocab) from mistral-common."""
    return build_mistral_tokenizer(tmp_path_factory.mktemp("mistral-tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, mistral_tokenizer_dir: Path) -> Path:
    """A random-weight 2-layer Llama (hidden 64) with the Mistral tokenizer, loadable by Auto* classes."""
    from axr.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), mistral_tokenizer_dir)


class PreprocessWorkspace:
    """A folder with a config file and JSONL data for `axr preprocess` tests (C2)."""

    def __init__(self, root: Path, tokenizer_dir: Path) -> None:
        self.root = root
        self.tokenizer_dir = tokenizer_dir
        self.prepared = root / "prepared"

    def write_rows(self, name: str, rows: list[dict[str, object]]) -> Path:
        import json

        path = self.root / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    def config(
        self, data: Path, *, type: str = "alpaca", top: str = "", dataset: str = "", name: str = "config.toml"
    ) -> Path:
        path = self.root / name
        path.write_text(
            f'base_model = "{self.tokenizer_dir}"\nsequence_len = 256\n'
            f'dataset_prepared_path = "{self.prepared}"\n{top}\n'
            f'[[datasets]]\npath = "{data}"\ntype = "{type}"\n{dataset}\n'
        )
        return path


def alpaca_rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "instruction": f"Say the number {index}",
            "input": "" if index % 3 else f"ctx {index}",
            "output": f"It is {index}.",
        }
        for index in range(count)
    ]


@pytest.fixture
def preprocess_workspace(tmp_path: Path, mistral_tokenizer_dir: Path) -> PreprocessWorkspace:
    return PreprocessWorkspace(tmp_path, mistral_tokenizer_dir)
