#!/usr/bin/env bash
# axr end to end on the CPU, offline, in about a minute:
#   1. set up .venv (make install) when it is not there yet;
#   2. build a real tokenizer (Mistral-7B's, from the mistral-common package) and a tiny
#      random-weight Llama that uses it, into ./axr-demo/tiny-llama;
#   3. preprocess the bundled alpaca sample (examples/alpaca_lora.toml) into ./axr-demo/prepared;
#   4. train a LoRA adapter on it for a few steps, with packed batches, into ./axr-demo/out.
# Run from anywhere: bash examples/demo.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=examples/alpaca_lora.toml

if [ ! -x .venv/bin/axr ]; then
    echo "==> make install (creates .venv, builds the Rust extension)"
    make install
fi
PYTHON=.venv/bin/python
AXR=.venv/bin/axr

echo "==> building the tokenizer and a tiny Llama into ./axr-demo/tiny-llama"
"$PYTHON" - <<'PY'
from axr.testing import build_mistral_tokenizer, build_tiny_llama

tokenizer = build_mistral_tokenizer("axr-demo/tokenizer")
model = build_tiny_llama("axr-demo/tiny-llama", tokenizer)
print(f"model: {model}")
PY

echo "==> axr preprocess $CONFIG"
"$AXR" preprocess "$CONFIG"

echo "==> axr train $CONFIG"
"$AXR" train "$CONFIG"

OUT=$("$PYTHON" -c "from axr.config import load_config; print(load_config('$CONFIG').output_dir)")
"$PYTHON" - "$OUT/metrics.jsonl" <<'PY'
import json
import sys

losses = [(r["step"], r["loss"]) for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
if losses:
    (first_step, first), (last_step, last) = losses[0], losses[-1]
    print(f"training loss: {first:.3f} at step {first_step} -> {last:.3f} at step {last_step}")
PY
echo
echo "Done. The LoRA adapter is in $OUT (adapter_model.safetensors, adapter_config.json),"
echo "with the tokenizer, the resolved config (axr_config.json) and the training log (metrics.jsonl)."
