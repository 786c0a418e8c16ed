"""Benchmark: `axr preprocess` on large corpora — memory, the data doctor's cost, tokens kept, sharding.

Generates, in a temporary folder, a completion corpus whose documents have realistic lengths
(lognormal, p50 ~1k tokens, p90 ~3.5k tokens with the Mistral tokenizer) and a chat corpus
(axr.testing.conversations), then runs the `axr preprocess` command in child processes and
prints one JSON object with, side by side:

- peak RSS of `axr preprocess` with default settings (doctor on) and with `--no-doctor`, on both
  corpora, and on the completion corpus at size S and 2S (flat memory: the ratio should be ~1);
- the doctor's share of the command's wall time (default vs --no-doctor): `--rounds` pairs of runs,
  doctor on and off alternately (A/B, then B/A, ...) so a shared machine's changing load hits both
  sides alike; the median of the per-round shares, and each round's;
- tokens kept / tokens tokenized on the completion corpus (default settings vs a run whose
  sequence_len keeps every document whole);
- the time of a 4-part sharded build (`--shard I/4`, `--jobs` parts at a time, the cores split
  between them) plus `--merge`, over a single `--no-doctor` run's, on the same cores; and
  whether the merged store equals the single run's byte for byte.

    python benches/corpus_scale.py                          # 16 MB completion + 8 MB chat
    python benches/corpus_scale.py --completion-mb 500 --chat-mb 230   # the issue's sizes

Peak RSS is the child's own (os.wait4 rusage). Not a test: nothing here asserts. A build without
`--shard` reports the sharding figures as unsupported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_MEDIAN_TOKENS = 1000.0
_P90_TOKENS = 3500.0
_SIGMA = math.log(_P90_TOKENS / _MEDIAN_TOKENS) / 1.2816  # 1.2816: the normal distribution's 90th percentile


class _Text:
    """Zipf-distributed pseudo-English words with sentences, digits and paragraphs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ne", "ta", "ri", "so", "ul", "ex", "an", "the", "ing", "er", "pro"]
        words = set()
        while len(words) < 5000:
            words.add("".join(self.rng.choice(syllables) for _ in range(self.rng.randint(1, 4))))
        common = ["the", "of", "and", "to", "a", "in", "is", "it", "that", "for", "on", "with", "as"]
        self.vocabulary = common + sorted(words)
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
            sentences.append(" ".join(sentence) + self.rng.choice([".", ".", "?", "!"]))
            start += length
            if self.rng.random() < 0.15:
                sentences.append("\n\n")
        return " ".join(sentences)


def _tokens_per_word(tokenizer_dir: Path) -> float:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    text = _Text(99)
    sample = [text.words(400) for _ in range(20)]
    tokens = sum(len(encoding.ids) for encoding in tokenizer.encode_batch(sample, add_special_tokens=False))
    return tokens / (400 * 20)


def _completion_corpus(path: Path, megabytes: float, tokens_per_word: float, seed: int) -> int:
    text, rng = _Text(seed), random.Random(seed + 1)
    written, documents = 0, 0
    with open(path, "w") as handle:
        while written < megabytes * 1e6:
            tokens = rng.lognormvariate(math.log(_MEDIAN_TOKENS), _SIGMA)
            line = json.dumps({"text": text.words(max(1, int(tokens / tokens_per_word)))}) + "\n"
            handle.write(line)
            written += len(line)
            documents += 1
    return documents


def _chat_corpus(path: Path, megabytes: float, seed: int) -> int:
    from axr.testing.conversations import generate_conversations

    written, rows, batch = 0, 0, 0
    with open(path, "w") as handle:
        while written < megabytes * 1e6:
            for messages in generate_conversations(500, seed=seed + batch):
                line = json.dumps({"messages": messages}) + "\n"
                handle.write(line)
                written += len(line)
                rows += 1
            batch += 1
    return rows


def _config(path: Path, tokenizer: Path, data: Path, prepared: Path, *, chat: bool, threads: int) -> Path:
    dataset = 'type = "chat_template"' if chat else 'type = "completion"'
    top = 'chat_template = "chatml"\n' if chat else ""
    path.write_text(
        f'base_model = "{tokenizer}"\nsequence_len = 2048\n{top}'
        f'dataset_prepared_path = "{prepared}"\ndataset_num_proc = {threads}\n'
        f'[[datasets]]\npath = "{data}"\n{dataset}\n'
    )
    return path


def _run(args: list[str]) -> dict[str, Any]:
    """Runs `axr ...` in a child; returns its wall seconds, peak RSS, exit code and output."""
    command = [sys.executable, "-m", "axr.cli", *args]
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        # wait4, not wait: it returns the child's own rusage (its peak RSS).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        output.seek(0)
        text = output.read()
    return {
        "seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "code": os.waitstatus_to_exitcode(status),
        "output": text,
    }


def _checked(args: list[str]) -> dict[str, Any]:
    result = _run(args)
    if result["code"] != 0:
        sys.exit(f"axr {' '.join(args)} failed ({result['code']}):\n{result['output']}")
    return result


def _fresh(prepared: Path) -> None:
    import shutil

    shutil.rmtree(prepared, ignore_errors=True)


def _store_root(output: str) -> Path:
    return Path(output.splitlines()[0].split()[1])


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _meta(root: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((root / "train" / "meta.json").read_text())
    return meta


def _sharded(config: Path, prepared: Path, parts: int, jobs: int, threads: int) -> dict[str, Any]:
    _fresh(prepared)
    per_part = max(1, threads // jobs)
    started = time.perf_counter()

    def part(index: int) -> dict[str, Any]:
        return _run(
            [
                "preprocess",
                str(config),
                "--shard",
                f"{index}/{parts}",
                "--no-progress",
                f"--dataset_num_proc={per_part}",
            ]
        )

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(part, range(parts)))
    if any(result["code"] != 0 for result in results):
        failed = next(result for result in results if result["code"] != 0)
        if "--shard: unknown key" in failed["output"]:  # a build from before sharded preprocessing
            return {"supported": False}
        sys.exit(f"a part failed:\n{failed['output']}")
    built = time.perf_counter() - started
    merge = _checked(["preprocess", str(config), "--merge", "--no-progress", "--no-doctor"])
    return {
        "supported": True,
        "parts": parts,
        "jobs": jobs,
        "threads_per_part": per_part,
        "parts_seconds": round(built, 2),
        "merge_seconds": round(merge["seconds"], 2),
        "seconds": round(built + merge["seconds"], 2),
        "part_peak_rss_mb": round(max(result["peak_rss_mb"] for result in results), 1),
        "merge_peak_rss_mb": round(merge["peak_rss_mb"], 1),
        "root": _store_root(merge["output"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--completion-mb", type=float, default=16.0, help="size S of the completion corpus")
    parser.add_argument("--chat-mb", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument(
        "--jobs", type=int, default=0, help="parts built at once (default: min(parts, threads))"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="doctor on/off pairs timed, alternately, per corpus"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the corpora here (default: a temp dir)"
    )
    args = parser.parse_args()

    from axr.testing import build_mistral_tokenizer

    with tempfile.TemporaryDirectory(prefix="axr-corpus-scale-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        tokenizer = build_mistral_tokenizer(work / "tokenizer")
        ratio = _tokens_per_word(tokenizer)
        completion, double, chat = (
            work / "completion.jsonl",
            work / "completion-2x.jsonl",
            work / "chat.jsonl",
        )
        documents = _completion_corpus(completion, args.completion_mb, ratio, args.seed)
        _completion_corpus(double, 2 * args.completion_mb, ratio, args.seed)
        chat_rows = _chat_corpus(chat, args.chat_mb, args.seed)

        def config(name: str, data: Path, *, is_chat: bool = False) -> tuple[Path, Path]:
            prepared = work / f"prepared-{name}"
            return _config(
                work / f"{name}.toml", tokenizer, data, prepared, chat=is_chat, threads=args.threads
            ), prepared

        def preprocess(name: str, data: Path, *extra: str, is_chat: bool = False) -> dict[str, Any]:
            # Each run starts from an empty prepared folder; what is needed of its store is read now.
            path, prepared = config(name, data, is_chat=is_chat)
            _fresh(prepared)
            result = _checked(["preprocess", str(path), "--no-progress", *extra])
            root = _store_root(result["output"])
            result["root"], result["meta"], result["digest"] = root, _meta(root), _tree_digest(root)
            return result

        c_doctor = preprocess("completion", completion)
        c_plain = preprocess("completion", completion, "--no-doctor")
        c_double = preprocess("completion-2x", double)
        c_whole = preprocess("completion", completion, "--no-doctor", "--sequence_len=16777216")
        h_doctor = preprocess("chat", chat, is_chat=True)
        h_plain = preprocess("chat", chat, "--no-doctor", is_chat=True)

        def doctor_share(name: str, data: Path, *, is_chat: bool = False) -> dict[str, Any]:
            path, prepared = config(name, data, is_chat=is_chat)
            shares, seconds = [], {"default": [], "no_doctor": []}
            for index in range(args.rounds):
                sides = [("default", ()), ("no_doctor", ("--no-doctor",))]
                for side, extra in sides if index % 2 == 0 else sides[::-1]:
                    _fresh(prepared)
                    seconds[side].append(
                        _checked(["preprocess", str(path), "--no-progress", *extra])["seconds"]
                    )
                shares.append(1 - seconds["no_doctor"][-1] / seconds["default"][-1])
            return {
                "median": round(statistics.median(shares), 3),
                "each_round": [round(share, 3) for share in shares],
                "seconds_median": {
                    side: round(statistics.median(values), 2) for side, values in seconds.items()
                },
            }

        c_share = doctor_share("completion", completion)
        h_share = doctor_share("chat", chat, is_chat=True)
        kept = c_doctor["meta"]["counts"]
        whole = c_whole["meta"]["counts"]
        single_root = c_plain["root"]
        single_digest = c_plain["digest"]
        single_seconds = c_plain["seconds"]
        # The same config and prepared folder as the single run: meta.json records the options.
        shard_config, shard_prepared = config("completion", completion)
        jobs = args.jobs or min(args.parts, args.threads)
        sharded = _sharded(shard_config, shard_prepared, args.parts, jobs, args.threads)
        if sharded["supported"]:
            merged_root = sharded.pop("root")
            sharded["over_single_run"] = round(sharded["seconds"] / single_seconds, 3)
            sharded["single_run_seconds"] = round(single_seconds, 2)
            sharded["same_fingerprint"] = merged_root.name == single_root.name
            sharded["byte_identical"] = _tree_digest(merged_root) == single_digest

        report = {
            "threads": args.threads,
            "completion": {
                "megabytes": args.completion_mb,
                "documents": documents,
                "tokens_per_word": round(ratio, 3),
                "peak_rss_mb": {
                    "default": round(c_doctor["peak_rss_mb"], 1),
                    "no_doctor": round(c_plain["peak_rss_mb"], 1),
                    "default_2x_size": round(c_double["peak_rss_mb"], 1),
                    "2x_over_1x": round(c_double["peak_rss_mb"] / c_doctor["peak_rss_mb"], 3),
                },
                "seconds": {
                    "default": round(c_doctor["seconds"], 2),
                    "no_doctor": round(c_plain["seconds"], 2),
                    "default_2x_size": round(c_double["seconds"], 2),
                },
                "doctor_share_of_wall_time": c_share,
                "tokens_kept": kept["tokens"],
                "tokens_tokenized": whole["tokens"],
                "tokens_kept_over_tokenized": round(kept["tokens"] / max(whole["tokens"], 1), 4),
                "documents_dropped": kept["dropped"],
            },
            "chat": {
                "megabytes": args.chat_mb,
                "rows": chat_rows,
                "peak_rss_mb": {
                    "default": round(h_doctor["peak_rss_mb"], 1),
                    "no_doctor": round(h_plain["peak_rss_mb"], 1),
                },
                "seconds": {
                    "default": round(h_doctor["seconds"], 2),
                    "no_doctor": round(h_plain["seconds"], 2),
                },
                "doctor_share_of_wall_time": h_share,
            },
            "sharded": sharded,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
