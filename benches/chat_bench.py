"""Benchmark: conversation preprocessing against plain tokenization and transformers' chat path.

Generates a deterministic multi-turn corpus (axr.testing.conversations: 1-12 messages, long-tailed
lengths), then measures on the same rows, each in a child process with the same thread count:

- axr: `axr preprocess` of a `type = "chat_template"` dataset (render + spans + tokenize + mask +
  store), tokens/s over the whole run;
- encode_batch: the `tokenizers` library's `encode_batch` on the very strings axr renders
  (rendered untimed beforehand with axr's own formatter); the ceiling for "render costs nothing";
  in the same child and on the same strings, axr's own encoder (`Encoder.encode_texts`, the fast encoder
  when the tokenizer is recognised) side by side: its time, ratio, id mismatches, word-cache hits;
- apply_chat_template: `tokenizer.apply_chat_template(messages, tokenize=True)` row by row in
  Python, what a plain transformers user runs (on a sample of rows when `--template-rows` is set).

Prints one JSON object with the three rates and the ratios. Not a test: nothing asserts.

    python benches/chat_bench.py                      # 50k conversations, chatml, all cores
    python benches/chat_bench.py --rows 10000 --threads 2 --style llama3

Target (issue #4): axr / encode_batch >= 0.85.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_AXR_CHILD = """
import json, sys
from axr.config import load_config
from axr.data import preprocess
result = preprocess(load_config(sys.argv[1]), progress=False)
meta = result.metas["train"]
print(json.dumps({"seconds": result.seconds, "reused": result.reused, "tokens": meta["tokens"],
                  "samples": meta["samples"], "counts": meta["counts"]}))
"""

_ENCODE_BATCH_CHILD = """
import json, sys, time
from tokenizers import Tokenizer
from axr._native import Encoder, chat_render
tokenizer_dir, data, style, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = Tokenizer.from_file(tokenizer_dir + "/tokenizer.json")
axr_encoder = Encoder(tokenizer_dir)
options = json.dumps({"chat_template": style})
seconds, tokens, axr_seconds, mismatches, hits, misses, encoder = 0.0, 0, 0.0, 0, 0, 0, ""
with open(data) as handle:
    lines = handle.readlines()
for start in range(0, len(lines), batch):
    texts = [text for text, _, _ in chat_render("chat_template", options, lines[start:start + batch],
                                                 bos_token="<s>", eos_token="</s>")]
    began = time.perf_counter()
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    seconds += time.perf_counter() - began
    tokens += sum(len(encoding.ids) for encoding in encodings)
    ids, spent, summary = axr_encoder.encode_texts(texts, add_special_tokens=False)
    axr_seconds += spent
    mismatches += sum(mine != theirs.ids for mine, theirs in zip(ids, encodings))
    summary = json.loads(summary)
    encoder = summary["path"] + ": " + summary["detail"]
    # The counters run from the encoder's load, over every batch so far.
    hits = (summary["stats"] or {}).get("cache_hits", 0)
    misses = (summary["stats"] or {}).get("cache_misses", 0)
print(json.dumps({"seconds": seconds, "tokens": tokens, "axr_seconds": axr_seconds, "mismatches": mismatches,
                  "hit_rate": hits / max(hits + misses, 1), "encoder": encoder}))
"""

_TEMPLATE_CHILD = """
import json, sys, time
from transformers import AutoTokenizer
from axr._native import chat_style_source
tokenizer_dir, data, style, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
source = chat_style_source(style)
with open(data) as handle:
    rows = [json.loads(line)["messages"] for line in handle][:limit]
began = time.perf_counter()
tokens = sum(len(tokenizer.apply_chat_template(messages, chat_template=source, tokenize=True,
                                               return_dict=False)) for messages in rows)
print(json.dumps({"seconds": time.perf_counter() - began, "tokens": tokens, "rows": len(rows)}))
"""


def _child(code: str, *args: str, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--style", default="chatml")
    parser.add_argument("--template-rows", type=int, default=0, help="rows for apply_chat_template (0: all)")
    arguments = parser.parse_args()

    from axr.testing import build_mistral_tokenizer
    from axr.testing.conversations import generate_conversations

    with tempfile.TemporaryDirectory(prefix="axr-chat-bench-") as scratch:
        root = Path(scratch)
        tokenizer_dir = build_mistral_tokenizer(root / "tokenizer")
        data = root / "chats.jsonl"
        conversations = generate_conversations(arguments.rows, seed=1)
        data.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in conversations))
        config = root / "config.toml"
        config.write_text(
            f'base_model = "{tokenizer_dir}"\nsequence_len = 1048576\n'
            f'dataset_prepared_path = "{root / "prepared"}"\nshuffle_merged_datasets = false\n'
            f"dataset_num_proc = {arguments.threads}\n"
            f'[[datasets]]\npath = "{data}"\ntype = "chat_template"\nchat_template = "{arguments.style}"\n'
        )
        axr = _child(_AXR_CHILD, str(config), threads=arguments.threads)
        batch = _child(
            _ENCODE_BATCH_CHILD,
            str(tokenizer_dir),
            str(data),
            arguments.style,
            "4096",
            threads=arguments.threads,
        )
        limit = arguments.template_rows or arguments.rows
        template = _child(
            _TEMPLATE_CHILD,
            str(tokenizer_dir),
            str(data),
            arguments.style,
            str(limit),
            threads=arguments.threads,
        )

    axr_rate = axr["tokens"] / axr["seconds"]
    batch_rate = batch["tokens"] / batch["seconds"]
    template_rate = template["tokens"] / template["seconds"]
    print(
        json.dumps(
            {
                "rows": arguments.rows,
                "threads": arguments.threads,
                "style": arguments.style,
                "tokens": axr["tokens"],
                "axr_tokens_per_s": round(axr_rate),
                "encode_batch_tokens_per_s": round(batch_rate),
                "apply_chat_template_tokens_per_s": round(template_rate),
                "apply_chat_template_rows": template["rows"],
                "ratio_axr_vs_encode_batch": round(axr_rate / batch_rate, 3),
                "ratio_axr_vs_apply_chat_template": round(axr_rate / template_rate, 2),
                "axr_seconds": round(axr["seconds"], 2),
                # Rows with no trained token (a lone user turn, an empty answer) are dropped and
                # counted by preprocess; encode_batch tokenizes them too.
                "axr_rows_dropped": axr["counts"]["dropped"],
                "encode_batch_tokens": batch["tokens"],
                "side_by_side": {
                    "encoder": batch["encoder"],
                    "axr_encode_seconds": round(batch["axr_seconds"], 3),
                    "encode_batch_seconds": round(batch["seconds"], 3),
                    "ratio_axr_encode_vs_encode_batch": round(batch["seconds"] / batch["axr_seconds"], 2),
                    "mismatches": batch["mismatches"],
                    "word_cache_hit_rate": round(batch["hit_rate"], 4),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
