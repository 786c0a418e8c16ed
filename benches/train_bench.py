"""CPU training throughput: packed vs padded batches on the same data and model; data-wait share.

    python benches/train_bench.py [--steps 12] [--hidden 512] [--layers 4] [--sequence-len 512]

Both runs train the same tiny random Llama (built locally, Mistral tokenizer) on
the same synthetic rows (log-normal lengths, as in SFT sets; the first third of
each row masked) for the same number of optimizer steps, through the real data
path: the rows are written as pretokenized JSONL, `train` builds the prepared
store (memory-mapped) and reads it through the packing sampler or the padded
plan. Throughput counts real tokens only (padding is work, not progress). The
data-wait share is the time spent building a step's batches (sampler + reading
the store + collating) over the step time. On a shared machine compare the
tokens per CPU-second (this process's CPU time, all threads): wall time there
measures the neighbours too. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from axr.testing import InMemoryDataset


def synthetic_rows(count: int, sequence_len: int, seed: int) -> InMemoryDataset:
    generator = np.random.default_rng(seed)
    lengths = np.clip(
        generator.lognormal(mean=np.log(sequence_len / 6), sigma=0.8, size=count), 8, sequence_len
    )
    rows = []
    for length in lengths.astype(int):
        ids = generator.integers(3, 32000, size=length)
        labels = ids.copy()
        labels[: length // 3] = -100
        rows.append((ids, labels))
    return InMemoryDataset(rows)


def write_pretokenized(path: Path, rows: InMemoryDataset) -> Path:
    """The rows as pretokenized JSONL (input_ids, attention_mask, labels), for `axr preprocess`."""
    with path.open("w") as stream:
        for ids, labels in rows.rows:
            row = {"input_ids": ids.tolist(), "attention_mask": [1] * len(ids), "labels": labels.tolist()}
            stream.write(json.dumps(row) + "\n")
    return path


def run(
    workdir: Path,
    model_dir: Path,
    rows: InMemoryDataset,
    *,
    packing: bool,
    args: argparse.Namespace,
    extra: Sequence[str] = (),
    jsonl: Path | None = None,
) -> dict:
    from axr.config import load_config
    from axr.train.loop import TrainingData, train

    name = "packed" if packing else "padded"
    config_path = workdir / f"{name}.toml"
    # Same tokens per step: a packed row holds about sequence_len / mean_length samples.
    mean_length = float(rows.lengths.mean())
    rows_per_step = max(1, round(args.packed_rows * args.sequence_len / mean_length))
    config_path.write_text(
        "\n".join(
            [
                f'base_model = "{model_dir}"',
                f'output_dir = "{workdir / name}"',
                f"sequence_len = {args.sequence_len}",
                f"sample_packing = {'true' if packing else 'false'}",
                f"micro_batch_size = {args.packed_rows if packing else rows_per_step}",
                f"max_steps = {args.steps}",
                'save_strategy = "no"',
                "learning_rate = 1e-4",
                "seed = 0",
                *extra,
                *(
                    [f'dataset_prepared_path = "{workdir / "prepared"}"', "[[datasets]]", f'path = "{jsonl}"']
                    if jsonl is not None
                    else []
                ),
            ]
        )
        + "\n"
    )
    data = None if jsonl is not None else TrainingData(train=rows)
    result = train(load_config(config_path), data=data)
    lines = [json.loads(line) for line in (workdir / name / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in lines if "tokens" in line][args.warmup :]
    tokens = sum(line["tokens"] for line in timed)
    seconds = sum(line["step_seconds"] for line in timed)
    cpu_seconds = sum(line["step_cpu_seconds"] for line in timed)
    data_seconds = sum(line["data_seconds"] for line in timed)
    return {
        "rows_per_micro_batch": args.packed_rows if packing else rows_per_step,
        "timed_steps": len(timed),
        "real_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "tokens_per_cpu_second": tokens / cpu_seconds,
        "median_step_seconds": statistics.median(line["step_seconds"] for line in timed),
        "data_wait_share": data_seconds / seconds,
        "final_loss": result.losses[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sequence-len", type=int, default=512)
    parser.add_argument("--packed-rows", type=int, default=1, help="packed rows per micro-batch")
    # The body must outweigh the 32k-vocabulary head for padding to cost what it costs in real models:
    # the head runs on trained positions only, so padding is paid in the body alone.
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}): nothing would be timed")

    import torch

    from axr.testing import build_mistral_tokenizer, build_tiny_llama

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="axr-train-bench-") as folder:
        workdir = Path(folder)
        tokenizer_dir = build_mistral_tokenizer(workdir / "tokenizer")
        model_dir = build_tiny_llama(
            workdir / "model",
            tokenizer_dir,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 3,
            num_hidden_layers=args.layers,
        )
        rows = synthetic_rows(args.samples, args.sequence_len, seed=0)
        jsonl = write_pretokenized(workdir / "rows.jsonl", rows)
        packed = run(workdir, model_dir, rows, packing=True, args=args, jsonl=jsonl)
        padded = run(workdir, model_dir, rows, packing=False, args=args, jsonl=jsonl)
    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 32000},
        "sequence_len": args.sequence_len,
        "mean_sample_tokens": float(rows.lengths.mean()),
        "packed": packed,
        "padded": padded,
        "packed_over_padded_tokens_per_second": packed["tokens_per_second"] / padded["tokens_per_second"],
        "packed_over_padded_tokens_per_cpu_second": packed["tokens_per_cpu_second"]
        / padded["tokens_per_cpu_second"],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
