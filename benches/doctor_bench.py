"""Benchmark: what the data doctor costs next to the preprocessing it examines.

Generates a deterministic conversation corpus (axr.testing.conversations), preprocesses it
(`type = "chat_template"`, top-level chatml, Mistral SentencePiece tokenizer) and runs
`axr.data.doctor.diagnose` on the store, timing both in this process. Prints one JSON object
with both times and their ratio. Not a test: nothing asserts.

    python benches/doctor_bench.py --rows 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()

    from axr.config import load_config
    from axr.data import preprocess
    from axr.data.doctor import diagnose
    from axr.testing import build_mistral_tokenizer
    from axr.testing.conversations import generate_conversations

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        tokenizer = build_mistral_tokenizer(root / "tokenizer")
        data = root / "chats.jsonl"
        conversations = generate_conversations(args.rows, seed=1)
        data.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in conversations))
        config = root / "config.toml"
        config.write_text(
            f'base_model = "{tokenizer}"\nsequence_len = 100000\nchat_template = "chatml"\n'
            f'dataset_prepared_path = "{root / "prepared"}"\n'
            f'[[datasets]]\npath = "{data}"\ntype = "chat_template"\n'
        )
        start = time.perf_counter()
        result = preprocess(load_config(config), progress=False)
        preprocess_seconds = time.perf_counter() - start
        start = time.perf_counter()
        report = diagnose(result.stores["train"])
        doctor_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rows": args.rows,
                "tokens": result.metas["train"]["tokens"],
                "preprocess_seconds": round(preprocess_seconds, 2),
                "doctor_seconds": round(doctor_seconds, 2),
                "doctor_over_preprocess": round(doctor_seconds / preprocess_seconds, 2),
                "findings": {name: finding["count"] for name, finding in report["findings"].items()},
            }
        )
    )


if __name__ == "__main__":
    main()
