"""CPU DPO training throughput: axr's packed pairs against TRL's padded DPOTrainer, same run.

    python benches/preference_train_bench.py [--pairs 64] [--hidden 256] [--layers 4] [--batch 8] [--row 1024]

Both train the same random Llama (built locally, Mistral tokenizer) with the same LoRA (r 8 on every
linear layer, the reference being the adapter disabled) on the same synthetic pairs for one epoch:

- axr: `axr train` with `rl: dpo`, `chatml.intel` rows, `sample_packing: true`, one packed row of
  `--row` tokens per step (`micro_batch_size` counts packed rows: as many pairs as fit, their
  sequences side by side with block-diagonal attention);
- trl: trl 1.16's `DPOTrainer` on the same texts (prompt = the chatml prompt, chosen/rejected =
  answer + `<|im_end|>`), `--batch` pairs per step, every sequence padded to the batch's longest.

Both rates count the same tokens (every pair's prompt + chosen and prompt + rejected, as axr
tokenizes them) over the summed times of every optimizer step (model loading and data preparation
excluded); tokens per CPU-second are printed too, as a shared machine's wall time measures the neighbours.
Prints one JSON object. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = ["the", "a", "model", "answer", "good", "bad", "river", "stone", "light", "green", "quick", "dark"]
PROMPT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def corpus(pairs: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"question": _text(rng, 8, 80), "chosen": _text(rng, 4, 120), "rejected": _text(rng, 4, 120)}
        for _ in range(pairs)
    ]


def run_axr(root: Path, model_dir: Path, data: Path, options: argparse.Namespace) -> dict[str, Any]:
    from axr.config.load import validate_config
    from axr.train.loop import train

    output = root / "axr"
    cfg = validate_config(
        {
            "base_model": str(model_dir),
            "output_dir": str(output),
            "dataset_prepared_path": str(root / "prepared"),
            "rl": "dpo",
            "datasets": [{"path": str(data), "type": "chatml.intel"}],
            "sequence_len": options.row,
            "sample_packing": True,
            "micro_batch_size": 1,
            "num_epochs": 1,
            "learning_rate": 1e-4,
            "adapter": "lora",
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_target_linear": True,
            "save_strategy": "no",
            "seed": 1,
        }
    )
    train(cfg)
    steps = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step in steps if "step_seconds" in step]
    return {
        "steps": len(steps),
        "seconds": sum(step["step_seconds"] for step in steps),
        "cpu_seconds": sum(step["step_cpu_seconds"] for step in steps),
        "tokens": sum(step["tokens"] for step in steps),
    }


def run_trl(
    root: Path, model_dir: Path, rows: list[dict[str, str]], options: argparse.Namespace
) -> dict[str, Any]:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimes(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []
            self.started = (0.0, 0.0)

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter(), time.process_time()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append((time.perf_counter() - self.started[0], time.process_time() - self.started[1]))

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = datasets.Dataset.from_list(
        [
            {
                "prompt": PROMPT.format(question=row["question"]),
                "chosen": row["chosen"] + "<|im_end|>",
                "rejected": row["rejected"] + "<|im_end|>",
            }
            for row in rows
        ]
    )
    args = DPOConfig(
        output_dir=str(root / "trl"),
        per_device_train_batch_size=options.batch,
        num_train_epochs=1,
        learning_rate=1e-4,
        max_length=options.row,
        # TRL turns gradient checkpointing on by default; axr's run has none.
        gradient_checkpointing=False,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        logging_steps=1000,
        dataset_num_proc=None,
        seed=1,
    )
    timer = StepTimes()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir)),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[timer],
    )
    trainer.train()
    return {
        "steps": len(timer.times),
        "seconds": sum(wall for wall, _ in timer.times),
        "cpu_seconds": sum(cpu for _, cpu in timer.times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--row", type=int, default=1024)
    options = parser.parse_args()
    import numpy as np

    from axr.testing import build_mistral_tokenizer, build_tiny_llama
    from axr.train.preference import open_preference_data

    with tempfile.TemporaryDirectory(prefix="axr-dpo-bench-") as folder:
        root = Path(folder)
        tokenizer_dir = build_mistral_tokenizer(root / "tokenizer")
        model_dir = build_tiny_llama(
            root / "model",
            tokenizer_dir,
            hidden_size=options.hidden,
            intermediate_size=options.hidden * 3,
            num_hidden_layers=options.layers,
        )
        rows = corpus(options.pairs)
        data = root / "pairs.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        axr = run_axr(root, model_dir, data, options)
        trl = run_trl(root, model_dir, rows, options)
        # TRL trains every pair once: count them as axr tokenizes them.
        from axr.config.load import validate_config

        cfg = validate_config(
            {
                "base_model": str(model_dir),
                "rl": "dpo",
                "datasets": [{"path": str(data), "type": "chatml.intel"}],
                "sequence_len": options.row,
            }
        )
        trl["tokens"] = int(np.diff(open_preference_data(cfg).train.offsets).sum())
    report = {
        "pairs": options.pairs,
        "hidden": options.hidden,
        "layers": options.layers,
        "cpu_count": os.cpu_count(),
    }
    for name, result in (("axr_packed", axr), ("trl_padded", trl)):
        report[f"{name}_steps"] = result["steps"]
        report[f"{name}_tokens"] = result["tokens"]
        report[f"{name}_tokens_per_second"] = round(result["tokens"] / result["seconds"])
        report[f"{name}_tokens_per_cpu_second"] = round(result["tokens"] / result["cpu_seconds"])
    report["axr_over_trl"] = round(
        report["axr_packed_tokens_per_second"] / report["trl_padded_tokens_per_second"], 2
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
