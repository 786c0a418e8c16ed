"""In-memory training data for loop tests: (input_ids, labels) rows with a ``.lengths`` array."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

# Re-exported: the train tests import it from here with the row builders.
from axr.testing import InMemoryDataset as InMemoryDataset

QUESTIONS = [
    ("What colour is the sky?", "Blue as the sea."),
    ("Name a fruit.", "Apple pie is sweet."),
    ("Capital of France?", "Paris, in France."),
    ("What do cats say?", "Meow meow meow."),
    ("Opposite of hot?", "Cold like ice."),
    ("Two plus two?", "Four is the answer."),
    ("Best season?", "Summer with sun."),
    ("A musical instrument?", "The violin sings."),
]


def prompt_of(question: str) -> str:
    return f"Q: {question}\nA:"


def instruction_rows(tokenizer_dir: Path, repeat: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prompt masked, answer + EOS trained; the whole text tokenized once (as axr preprocess does)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = []
    for _ in range(repeat):
        for question, answer in QUESTIONS:
            prompt_ids = tokenizer(prompt_of(question))["input_ids"]
            full = tokenizer(prompt_of(question) + " " + answer)["input_ids"] + [tokenizer.eos_token_id]
            ids = np.array(full, dtype=np.int64)
            labels = ids.copy()
            labels[: len(prompt_ids)] = -100
            rows.append((ids, labels))
    return rows


def random_rows(
    count: int, seed: int = 0, low: int = 4, high: int = 40
) -> list[tuple[np.ndarray, np.ndarray]]:
    generator = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        length = int(generator.integers(low, high))
        ids = generator.integers(3, 32000, size=length)
        labels = ids.copy()
        labels[: length // 4] = -100
        rows.append((ids, labels))
    return rows


def write_config(path: Path, base_model: Path, output_dir: Path, **keys: object) -> Path:
    lines = [f'base_model = "{base_model}"', f'output_dir = "{output_dir}"']
    for key, value in keys.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list):
            lines.append(f"{key} = {value!r}".replace("'", '"'))
        else:
            lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


ALPACA_SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "alpaca_sample.jsonl"


def train_cli_resuming(
    tmp_path: Path, base_model: Path, checkpoint: Path, **keys: object
) -> subprocess.CompletedProcess[str]:
    """``axr train`` in a fresh process on the alpaca sample, resuming from ``checkpoint``."""
    config = write_config(
        tmp_path / "c.toml",
        base_model,
        tmp_path / "out",
        resume_from_checkpoint=str(checkpoint),
        sequence_len=128,
        dataset_prepared_path=str(tmp_path / "prepared"),
        **keys,
    )
    with config.open("a") as file:
        file.write(f'[[datasets]]\npath = "{ALPACA_SAMPLE}"\ntype = "alpaca"\n')
    return subprocess.run(
        [sys.executable, "-m", "axr.cli", "train", str(config)], capture_output=True, text=True, timeout=300
    )
