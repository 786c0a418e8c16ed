"""Benchmark: `axr preprocess` of a parquet corpus against the same corpus as JSON lines.

Generates corpus_scale.py's completion corpus (realistic document lengths) and chat corpus, writes
each also as parquet (pyarrow, row groups of 1,000 rows), then runs `axr preprocess --no-doctor` in
child processes on the JSON-lines and the parquet twin, alternately (J/P, then P/J, ...) for
`--rounds` rounds, each from an empty prepared folder. Prints one JSON object: the median wall
seconds of each format and the median of the per-round parquet/JSON-lines ratios. Run it with two
builds of axr (PYTHONPATH) to compare a change of the parquet reader before and after.

    python benches/parquet_bench.py                          # 32 MB completion + 16 MB chat
    python benches/parquet_bench.py --completion-mb 200 --chat-mb 100 --rounds 5

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_scale import _chat_corpus, _checked, _completion_corpus, _config, _fresh, _tokens_per_word


def _to_parquet(jsonl: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    path = jsonl.with_suffix(".parquet")
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    return path


def _rounds(configs: dict[str, tuple[Path, Path]], rounds: int) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for index in range(rounds):
        # Alternate the order so a drift of the machine's load hits both sides alike.
        for name in names if index % 2 == 0 else names[::-1]:
            config, prepared = configs[name]
            _fresh(prepared)
            seconds[name].append(
                _checked(["preprocess", str(config), "--no-progress", "--no-doctor"])["seconds"]
            )
    ratios = [parquet / jsonl for jsonl, parquet in zip(seconds["jsonl"], seconds["parquet"], strict=True)]
    return {
        "seconds_median": {name: round(statistics.median(values), 3) for name, values in seconds.items()},
        "parquet_over_jsonl_median": round(statistics.median(ratios), 3),
        "parquet_over_jsonl_each": [round(ratio, 3) for ratio in ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--completion-mb", type=float, default=32.0)
    parser.add_argument("--chat-mb", type=float, default=16.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the corpora here (default: a temp dir)"
    )
    args = parser.parse_args()

    import axr
    from axr.testing import build_mistral_tokenizer

    with tempfile.TemporaryDirectory(prefix="axr-parquet-bench-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        tokenizer = build_mistral_tokenizer(work / "tokenizer")
        completion, chat = work / "completion.jsonl", work / "chat.jsonl"
        if not completion.exists():
            _completion_corpus(completion, args.completion_mb, _tokens_per_word(tokenizer), args.seed)
            _chat_corpus(chat, args.chat_mb, args.seed)
        report: dict[str, Any] = {"axr": str(Path(axr.__file__).parent), "threads": args.threads}
        for kind, jsonl in (("completion", completion), ("chat", chat)):
            parquet = jsonl.with_suffix(".parquet")
            if not parquet.exists():
                parquet = _to_parquet(jsonl)
            configs = {
                fmt: (
                    _config(
                        work / f"{kind}-{fmt}.toml",
                        tokenizer,
                        data,
                        work / f"prepared-{kind}-{fmt}",
                        chat=kind == "chat",
                        threads=args.threads,
                    ),
                    work / f"prepared-{kind}-{fmt}",
                )
                for fmt, data in (("jsonl", jsonl), ("parquet", parquet))
            }
            report[kind] = {
                "megabytes_jsonl": round(jsonl.stat().st_size / 1e6, 1),
                "megabytes_parquet": round(parquet.stat().st_size / 1e6, 1),
                **_rounds(configs, args.rounds),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
