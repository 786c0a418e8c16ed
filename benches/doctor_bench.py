"""Benchmark: what the data doctor costs in `axr preprocess`, in peak memory and wall time.

Generates a deterministic chat corpus of about `--mb` MB (a few special-token texts among ordinary
conversations), then runs `axr preprocess` in fresh child processes twice per mode, doctor on
and `--no-doctor`, each into an empty prepared folder, recording each child's peak resident
memory (VmHWM) and wall time. Prints one JSON object. Not a test: nothing asserts. The `axr`
that runs is the one on PYTHONPATH, so the same script measures any checkout:

    PYTHONPATH=python python benches/doctor_bench.py --mb 100
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MEASURED_CLI = textwrap.dedent(
    """
    import sys, time
    from axr.cli import main
    started = time.monotonic()
    code = main(sys.argv[1:])
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"MEASURED {code} {peak} {time.monotonic() - started:.2f}", file=sys.stderr)
    """
)
WORDS = [
    "the",
    "a",
    "model",
    "data",
    "token",
    "answer",
    "question",
    "because",
    "which",
    "train",
    "learn",
    "river",
    "stone",
    "light",
    "code",
]


def write_corpus(path: Path, megabytes: float) -> int:
    rng = random.Random(0)
    target = int(megabytes * 1e6)
    written = rows = 0
    with path.open("w") as handle:
        while written < target:

            def text(count: int) -> str:
                return " ".join(rng.choice(WORDS) for _ in range(count))

            user = text(rng.randint(10, 120))
            if rows % 5000 == 17:
                user += " </s>"
            messages = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": text(rng.randint(20, 400))},
            ]
            line = json.dumps({"messages": messages}) + "\n"
            handle.write(line)
            written += len(line)
            rows += 1
    return rows


def measure(args: list[str]) -> dict[str, float]:
    completed = subprocess.run([sys.executable, "-c", MEASURED_CLI, *args], capture_output=True, text=True)
    line = next((line for line in completed.stderr.splitlines() if line.startswith("MEASURED ")), None)
    if line is None:
        raise SystemExit(completed.stderr[-3000:])
    _, code, peak, seconds = line.split()
    return {"exit": int(code), "peak_rss_mib": round(int(peak) / 1024, 1), "seconds": float(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from axr.testing import build_mistral_tokenizer

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        tokenizer = build_mistral_tokenizer(root / "tokenizer")
        data = root / "chats.jsonl"
        rows = write_corpus(data, args.mb)
        prepared = root / "prepared"
        config = root / "config.toml"
        config.write_text(
            f'base_model = "{tokenizer}"\nsequence_len = 2048\nchat_template = "chatml"\n'
            f'dataset_prepared_path = "{prepared}"\n'
            f'[[datasets]]\npath = "{data}"\ntype = "chat_template"\n'
        )
        runs: dict[str, list[dict[str, float]]] = {"doctor": [], "no_doctor": []}
        for _ in range(args.repeat):
            for mode, extra in (("no_doctor", ["--no-doctor"]), ("doctor", [])):
                shutil.rmtree(prepared, ignore_errors=True)
                runs[mode].append(measure(["preprocess", str(config), "--no-progress", *extra]))
    best = {mode: min(results, key=lambda run: run["seconds"]) for mode, results in runs.items()}
    print(
        json.dumps(
            {
                "rows": rows,
                "megabytes": args.mb,
                "runs": runs,
                "time_doctor_over_no_doctor": round(
                    best["doctor"]["seconds"] / best["no_doctor"]["seconds"], 3
                ),
                "rss_doctor_over_no_doctor": round(
                    best["doctor"]["peak_rss_mib"] / best["no_doctor"]["peak_rss_mib"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
