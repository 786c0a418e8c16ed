"""Benchmark: preference-pair preprocessing, axr's native path against TRL's DPO data preparation.

Generates a deterministic `chat_template.default` corpus (a user prompt, a chosen and a rejected
assistant message of varying lengths) and, on the same rows, tokenizer and chat template (chatml):

- axr: `axr._native.encode_preference` (read JSONL, render prompt + chosen and prompt + rejected
  with the chat template, tokenize each once, mask the prompt), what `axr train` runs for `rl: dpo`;
- trl: `DPOTrainer._prepare_dataset` of trl 1.16 on a `datasets.Dataset` of the same rows (three
  `apply_chat_template` calls per row: prompt, prompt + chosen, prompt + rejected), one process.

Both rates count the same tokens (axr's prompt + completion sequences). Prints one JSON object.
Not a test: nothing asserts.

    python benches/preference_bench.py                 # 4000 pairs
    python benches/preference_bench.py --rows 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import types
from pathlib import Path

WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "good",
    "bad",
    "river",
    "stone",
    "light",
    "green",
    "quick",
    "slow",
    "bright",
    "dark",
]


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def corpus(rows: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "messages": [{"role": "user", "content": _text(rng, 8, 120)}],
            "chosen": {"role": "assistant", "content": _text(rng, 4, 200)},
            "rejected": {"role": "assistant", "content": _text(rng, 4, 200)},
        }
        for _ in range(rows)
    ]


def run_axr(path: Path, tokenizer_dir: Path) -> tuple[float, int]:
    from axr._native import encode_preference

    source = json.dumps({"path": str(path), "key": "datasets[0]"})
    spec = json.dumps({"type": "chat_template.default", "chat_template": "chatml"})
    began = time.perf_counter()
    ids, _, _, _, _ = encode_preference(source, spec, str(tokenizer_dir), "dpo")
    return time.perf_counter() - began, len(ids)


def run_trl(rows: list[dict[str, object]], tokenizer_dir: Path) -> float:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DPOTrainer

    from axr._native import chat_style_source

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.chat_template = chat_style_source("chatml")
    dataset = Dataset.from_list(
        [
            {"prompt": row["messages"], "chosen": [row["chosen"]], "rejected": [row["rejected"]]}
            for row in rows
        ]
    )
    trainer = object.__new__(DPOTrainer)
    trainer._tokenizer = tokenizer
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    began = time.perf_counter()
    DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, "train")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    options = parser.parse_args()
    from axr.testing import build_mistral_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tokenizer_dir = build_mistral_tokenizer(root / "tokenizer")
        rows = corpus(options.rows)
        path = root / "pairs.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        axr_seconds, tokens = run_axr(path, tokenizer_dir)
        trl_seconds = run_trl(rows, tokenizer_dir)
    print(
        json.dumps(
            {
                "rows": options.rows,
                "tokens": tokens,
                "cpu_count": os.cpu_count(),
                "axr_tokens_per_second": round(tokens / axr_seconds),
                "trl_tokens_per_second": round(tokens / trl_seconds),
                "axr_over_trl": round(trl_seconds / axr_seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
