"""One prepared GPU check: a ~0.45B Llama (random weights from a config, no hub), LoRA, bf16.

    python benches/gpu_check.py            # on a CUDA machine (about 5 minutes)
    python benches/gpu_check.py --tiny     # the same script on the CPU with a tiny model (a dry run)

1. Packed equals unpacked on the device: the loss and LoRA gradients of a packed
   batch vs the same samples one by one, with SDPA in fp32 and, when flash-attn is
   installed, the flash-attn varlen path in bf16 (tolerances printed with the result).
2. Training tokens/s, packed vs padded, same data, same model: flash-attn varlen when
   installed (else SDPA), LoRA on every linear layer, bf16 autocast.
3. QLoRA: packed equals unpacked on a 4-bit nf4 base (bf16 compute), and a packed QLoRA
   training run (tokens/s, first and last loss, the quantized layers axr reported loading).
4. The model-family matrix on the device (``axr.testing.families``, the families of
   tests/train/test_model_matrix.py): per family, packed equals unpacked with SDPA fp32 and,
   with flash-attn, the varlen path (``cu_seqlens``) in bf16; and the start-up packing guard
   (``axr.train.packing_guard.check_packing``) on each, with its time. The guard is also timed on
   the large model (the figure to scale to a 7B model: three forward passes of at most 24 tokens,
   memory-bound, so about proportional to the weight bytes read).

``--families-only`` runs part 4 alone (about a minute on a GPU).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from train_bench import run as run_training
from train_bench import synthetic_rows

LARGE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def packed_equals_unpacked(
    model_dir: Path, attention: str, dtype: str, device: str, *, four_bit: bool = False
) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from axr.data.collate import collate_packed, collate_padded
    from axr.train.loss import forward_summed_loss

    torch.manual_seed(0)
    if four_bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=getattr(torch, dtype),
            attn_implementation=attention,
            quantization_config=quantization,
            device_map={"": device},
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), attn_implementation=attention
        )
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    )
    model.to(device)
    rows = synthetic_rows(6, 256, seed=1)
    samples = [rows[index] for index in range(6)]
    packed = collate_packed([samples[:3], samples[3:]], pad_token_id=0)

    def loss_and_grads(batches: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
        model.zero_grad()
        total, count = 0.0, 0
        for batch in batches:
            loss = forward_summed_loss(model, batch, attention, device, select=True)
            loss.backward()
            total += loss.item()
            count += batch["num_trainable"]
        grads = {name: p.grad.float() / count for name, p in model.named_parameters() if p.grad is not None}
        return total / count, grads

    packed_loss, packed_grads = loss_and_grads([packed])
    singles = []
    for sample in samples:
        batch = collate_padded([sample], pad_token_id=0)
        del batch["attention_mask"]
        if attention == "flash_attention_2":
            length = batch["input_ids"].shape[1]
            batch["position_ids"] = torch.arange(length)[None]
            batch["cu_seqlens"] = torch.tensor([0, length], dtype=torch.int32)
            batch["max_seqlen"] = length
        singles.append(batch)
    single_loss, single_grads = loss_and_grads(singles)
    worst = max(
        float((packed_grads[name] - grad).abs().max() / grad.abs().max().clamp_min(1e-12))
        for name, grad in single_grads.items()
    )
    return {
        "attention": attention,
        "dtype": dtype,
        "base_weights": "4-bit nf4" if four_bit else dtype,
        "packed_loss": packed_loss,
        "unpacked_loss": single_loss,
        "loss_relative_difference": abs(packed_loss - single_loss) / abs(single_loss),
        "worst_gradient_difference_over_max": worst,
    }


def qlora_check(
    workdir: Path, model_dir: Path, rows: Any, options: argparse.Namespace, device: str, has_flash: bool
) -> dict[str, Any]:
    """Packed vs unpacked on a 4-bit base, then a packed QLoRA run (bitsandbytes needed)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes is not installed"}
    dtype = "bfloat16" if device == "cuda" else "float32"
    checks = [packed_equals_unpacked(model_dir, "sdpa", dtype, device, four_bit=True)]
    folder = workdir / "qlora"
    folder.mkdir()
    extra = [
        'adapter = "qlora"',
        "load_in_4bit = true",
        "lora_r = 16",
        "lora_alpha = 32",
        "lora_target_linear = true",
        f"bf16 = {'true' if device == 'cuda' else 'false'}",
        "flash_attention = true" if has_flash else "sdp_attention = true",
    ]
    import contextlib
    import io

    messages = io.StringIO()
    with contextlib.redirect_stderr(messages):
        speed = run_training(folder, model_dir, rows, packing=True, args=options, extra=extra)
    metrics = [json.loads(line) for line in (folder / "packed" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in metrics if "loss" in line]
    loaded = [line for line in messages.getvalue().splitlines() if "base weights:" in line]
    return {
        "packed_equals_unpacked": checks,
        "training": speed,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "loaded": loaded,
    }


def family_matrix(workdir: Path, tokenizer_dir: Path, device: str, has_flash: bool) -> list[dict[str, Any]]:
    """Part 3: every family's packed == unpacked and packing-guard result on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    from axr.testing.families import FAMILIES, build_tiny_family
    from axr.train.packing_guard import PACKING_UNSAFE, PackingLeakError, check_packing

    cells: list[dict[str, Any]] = []
    for name, family in FAMILIES.items():
        model_dir = build_tiny_family(name, workdir / "families" / name, tokenizer_dir)
        model_type = family.config(8).model_type
        backends = [("sdpa", "float32"), ("eager", "float32")]
        if has_flash:
            backends.append(("flash_attention_2", "bfloat16"))
        for attention, dtype in backends:
            cell: dict[str, Any] = {"family": name, "attention": attention, "dtype": dtype}
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    model_dir, dtype=getattr(torch, dtype), attn_implementation=attention
                ).to(device)
            except (ValueError, ImportError) as error:  # the family has no such backend in transformers
                cells.append({**cell, "unsupported": str(error).splitlines()[0][:160]})
                continue
            try:
                guard = check_packing(model, attention, device)
                cell["guard"] = {"difference": guard.difference, "seconds": guard.seconds}
            except PackingLeakError as error:
                cell["guard"] = {"refused": str(error)[:160]}
            if model_type not in PACKING_UNSAFE:
                cell.update(packed_equals_unpacked(model_dir, attention, dtype, device))
            cells.append(cell)
            del model
    return cells


def guard_seconds(model_dir: Path, attention: str, dtype: str, device: str) -> dict[str, Any]:
    """The packing guard on the large model: its time, best of 3 after one warm-up run."""
    import torch
    from transformers import AutoModelForCausalLM

    from axr.train.packing_guard import check_packing

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), attn_implementation=attention
    ).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    runs = [check_packing(model, attention, device) for _ in range(4)]
    return {
        "attention": attention,
        "dtype": dtype,
        "parameters": parameters,
        "difference": runs[-1].difference,
        "seconds_first": runs[0].seconds,
        "seconds_best": min(run.seconds for run in runs[1:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny model on the CPU (checks the script itself)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families-only", action="store_true", help="run part 3 (the family matrix) alone")
    args = parser.parse_args()

    import importlib.util

    import torch

    from axr.testing import build_mistral_tokenizer, build_tiny_llama

    device = "cuda" if torch.cuda.is_available() else "cpu"
    has_flash = importlib.util.find_spec("flash_attn") is not None and device == "cuda"
    shape = TINY if args.tiny else LARGE
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model": shape,
    }
    with tempfile.TemporaryDirectory(prefix="axr-gpu-check-") as folder:
        workdir = Path(folder)
        tokenizer_dir = build_mistral_tokenizer(workdir / "tokenizer")
        report["families"] = family_matrix(workdir, tokenizer_dir, device, has_flash)
        if args.families_only:
            print(json.dumps(report, indent=2))
            return 0
        model_dir = build_tiny_llama(workdir / "model", tokenizer_dir, **shape)
        half = "bfloat16" if device == "cuda" else "float32"
        report["guard"] = [guard_seconds(model_dir, "sdpa", half, device)]
        if has_flash:
            report["guard"].append(guard_seconds(model_dir, "flash_attention_2", "bfloat16", device))
        checks = [packed_equals_unpacked(model_dir, "sdpa", "float32", device)]
        if has_flash:
            checks.append(packed_equals_unpacked(model_dir, "flash_attention_2", "bfloat16", device))
        report["packed_equals_unpacked"] = checks

        options = argparse.Namespace(
            steps=args.steps,
            warmup=3,
            sequence_len=256 if args.tiny else 2048,
            packed_rows=1 if args.tiny else 4,
        )
        rows = synthetic_rows(400 if args.tiny else 4000, options.sequence_len, seed=0)
        extra = [
            'adapter = "lora"',
            "lora_r = 16",
            "lora_alpha = 32",
            "lora_target_linear = true",
            f"bf16 = {'true' if device == 'cuda' else 'false'}",
            'attn_implementation = "flash_attention_2"' if has_flash else 'attn_implementation = "sdpa"',
        ]
        packed = run_training(workdir, model_dir, rows, packing=True, args=options, extra=extra)
        padded = run_training(workdir, model_dir, rows, packing=False, args=options, extra=extra)
        report["attention"] = "flash_attention_2" if has_flash else "sdpa"
        report["training"] = {
            "packed": packed,
            "padded": padded,
            "packed_over_padded_tokens_per_second": packed["tokens_per_second"] / padded["tokens_per_second"],
        }
        report["mean_sample_tokens"] = float(np.mean(rows.lengths))
        report["qlora"] = qlora_check(workdir, model_dir, rows, options, device, has_flash)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
