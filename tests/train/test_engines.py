"""DDP, FSDP2, ZeRO-2 and ZeRO-3 on 2 CPU processes (gloo) equal one process on the same global batches.

Each engine run: 2 ranks x micro-batch 1 x gradient accumulation 2, 3 steps, so every step reads
4 rows, the rows a 1-process run with accumulation 4 reads in the same step (the padded plan
deals micro-batches round-robin). The loop's loss is a sum over tokens divided by the step's
trainable tokens, so the losses, gradient norms and trained weights agree up to float32
summation order: losses to 1e-6 relative, gradient norms to 1e-4 relative, logits of the
trained model to 1e-5 absolute. The eval split has one row, so rank 1 has no eval row and
must still take part in the forward (a hang fails the run by timeout).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import write_config

WORKER = Path(__file__).parent / "engine_worker.py"
# DeepSpeed JIT-compiles a shared-memory op on its first CPU start (~40 s, or minutes on a busy
# machine) and caches it here: one place for every launch of the session and later sessions.
TORCH_EXTENSIONS_DIR = os.environ.get(
    "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
)
LAUNCH_TIMEOUT = 600
LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True}
NO_SAVES = {"save_strategy": "no"}
ENGINES: dict[str, tuple[dict[str, Any], str]] = {
    # name: (top-level keys, extra TOML text)
    "ddp": ({"save_steps": 2}, ""),
    # ZeRO writes a checkpoint at step 2 (each rank's partitions, no pickle) and resumes from it.
    "zero2": ({"deepspeed": "zero2", "save_steps": 2}, ""),
    "zero3": ({"deepspeed": "deepspeed_configs/zero3.json", "save_steps": 2}, ""),
    # LoRA under ZeRO-3 in bf16 with optimizer and parameters offloaded to the CPU (axr's torch AdamW
    # kept instead of DeepSpeed's CPU Adam): the fp32 masters must come back from the checkpoint exactly.
    "zero3_lora_bf16": (
        {**LORA, "bf16": True, "save_steps": 2},
        "[deepspeed]\nzero_force_ds_cpu_optimizer = false\nbf16 = { enabled = true }\n"
        '[deepspeed.zero_optimization]\nstage = 3\noffload_optimizer = { device = "cpu" }\n'
        'offload_param = { device = "cpu" }\n',
    ),
    # FSDP2 writes a checkpoint at step 2 (its optimizer state gathered, no pickle) and resumes from it.
    "fsdp2_lora": (
        {**LORA, "fsdp_version": 2, "save_steps": 2},
        # The FSDP2-era spelling (no fsdp_ prefix); the prefixed one is read the same way.
        '[fsdp_config]\nauto_wrap_policy = "TRANSFORMER_BASED_WRAP"\n'
        'transformer_layer_cls_to_wrap = "LlamaDecoderLayer"\nreshard_after_forward = true\n',
    ),
}
# FSDP1 (flat parameters) on CPU processes, in Axolotl's FSDP1 spelling. axr keeps the original
# parameters (use_orig_params = false is a printed note) so the optimizer's groups stay exact.
ENGINES["fsdp1_full"] = (
    {"fsdp_version": 1, "save_steps": 2},
    '[fsdp_config]\nfsdp_auto_wrap_policy = "TRANSFORMER_BASED_WRAP"\n'
    'fsdp_transformer_layer_cls_to_wrap = "LlamaDecoderLayer"\nfsdp_use_orig_params = false\n'
    'fsdp_sharding_strategy = "FULL_SHARD"\n',
)
# SHARDED_STATE_DICT: each rank writes its shards of the weights and moments (no pickle, no gather).
SHARDED = '\nstate_dict_type = "SHARDED_STATE_DICT"\n'
ENGINES["fsdp2_sharded"] = ({"fsdp_version": 2, "save_steps": 2}, ENGINES["fsdp2_lora"][1] + SHARDED)
ENGINES["fsdp2_lora_sharded"] = (
    {**LORA, "fsdp_version": 2, "save_steps": 2},
    ENGINES["fsdp2_lora"][1] + SHARDED,
)
# QLoRA under FSDP2: 4-bit weights stored as bf16 (bnb_4bit_quant_storage) so FSDP shards them too.
ENGINES["fsdp2_qlora"] = (
    {**LORA, "adapter": "qlora", "load_in_4bit": True, "fsdp_version": 2, "save_steps": 2},
    ENGINES["fsdp2_lora"][1],
)
COMMON = {"max_steps": 3, "sample_packing": False, "learning_rate": 0.001}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_environment() -> dict[str, str]:
    return dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        TORCH_EXTENSIONS_DIR=TORCH_EXTENSIONS_DIR,
        # ninja (for DeepSpeed's JIT build) is installed next to this Python.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def run_engine(
    tmp_path: Path, tiny_llama_dir: Path, name: str, run_name: str = "", **more: Any
) -> tuple[dict[str, Any], Path]:
    keys, extra = ENGINES[name]
    run_name = run_name or name
    output = tmp_path / run_name
    config = write_config(
        tmp_path / f"{run_name}.toml", tiny_llama_dir, output,
        micro_batch_size=1, gradient_accumulation_steps=2, **COMMON, **keys, **more,
    )  # fmt: skip
    if extra:
        config.write_text(config.read_text() + extra)
    record = tmp_path / f"{run_name}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(WORKER), str(config), str(record),
    ]  # fmt: skip
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=launch_environment()
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return json.loads(record.read_text()), output


ADAPTERS: dict[str, dict[str, Any]] = {
    "full": {},
    "lora": LORA,
    "qlora": {**LORA, "adapter": "qlora", "load_in_4bit": True},
}


def adapter_of(name: str) -> str:
    return "qlora" if "qlora" in name else "lora" if "lora" in name else "full"


def run_reference(tmp_path: Path, tiny_llama_dir: Path, adapter: str) -> dict[str, Any]:
    """One process, accumulation 4: the same rows in every step as 2 ranks x accumulation 2."""
    from engine_worker import run

    name = f"reference_{adapter}"
    config = write_config(
        tmp_path / f"{name}.toml", tiny_llama_dir, tmp_path / name,
        micro_batch_size=1, gradient_accumulation_steps=4, **COMMON, **NO_SAVES, **ADAPTERS[adapter],
    )  # fmt: skip
    run(str(config), tmp_path / f"{name}.json")
    result: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    return result


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Any:
    """The 1-process run of an adapter kind, made on first use."""
    folder = tmp_path_factory.mktemp("references")
    made: dict[str, dict[str, Any]] = {}

    def reference(adapter: str) -> dict[str, Any]:
        if adapter not in made:
            made[adapter] = run_reference(folder, tiny_llama_dir, adapter)
        return made[adapter]

    return reference


def saved_model_logits(output: Path, tiny_llama_dir: Path, adapter: str) -> list[float]:
    """Logits of the saved final model, loaded by plain transformers (and PEFT for an adapter, on a
    4-bit base quantized as axr does for QLoRA)."""
    import torch
    from engine_worker import PROBE
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if adapter != "full":
        from peft import PeftModel

        quantized = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )  # fmt: skip
        options = {"quantization_config": quantized, "device_map": "cpu"} if adapter == "qlora" else {}
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, **options)
        model = PeftModel.from_pretrained(base, output)
        if adapter == "qlora":
            from axr.models.quantization import keep_4bit_layout_trainable

            # As in training: not bitsandbytes' bf16 CPU inference kernel, which the eval mode would pick.
            keep_4bit_layout_trainable(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(output)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE)).logits
    return [float(x) for x in logits[0, -1, :64]]


@pytest.mark.slow
@pytest.mark.timeout(LAUNCH_TIMEOUT + 120)
@pytest.mark.parametrize("name", list(ENGINES))
def test_two_ranks_equal_one_process(tmp_path, tiny_llama_dir, references, name):
    adapter = adapter_of(name)
    got, output = run_engine(tmp_path, tiny_llama_dir, name)
    if name.endswith("bf16"):
        check_bf16_zero3(tmp_path, tiny_llama_dir, name, got, output)
        return
    reference = references(adapter)

    assert got["losses"] == pytest.approx(reference["losses"], rel=1e-6)
    assert got["grad_norms"] == pytest.approx(reference["grad_norms"], rel=1e-4)
    # The eval split (one row) left rank 1 without a row; the run finished and counted the row once.
    assert len(got["eval_losses"]) == 1
    assert got["eval_losses"] == pytest.approx(reference["eval_losses"], rel=1e-6)
    # The trained model (read through the engine) equals the 1-process one, and so does the saved one.
    assert got["logits"] == pytest.approx(reference["logits"], abs=1e-5)
    assert saved_model_logits(output, tiny_llama_dir, adapter) == pytest.approx(got["logits"], abs=1e-5)

    if name == "ddp" or name.startswith("fsdp2"):
        # Rank 0 wrote the checkpoint's manifest after every rank saved its RNG state.
        manifest = json.loads((output / "checkpoint-2" / "manifest.json").read_text())
        assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= set(manifest["files"])
    if name.startswith("fsdp2"):
        # accelerate silently runs plain replicas on CPU unless FSDP is entered: check the shards.
        assert got["sharded_dtensors"] == got["parameters"] > 0
        whole = not name.endswith("sharded")
        assert (output / "checkpoint-2" / "optimizer.safetensors").is_file() == whole
    elif name.startswith("fsdp1"):
        # FSDP1's flat parameters: every wrapped unit (2 decoder layers and the root) holds a shard.
        assert got["fsdp1_sharded_units"] == 3
        assert got["dtensor_parameters"] == 0
    else:
        assert got["dtensor_parameters"] == 0
    if name.startswith("zero"):
        # 6 micro-batches per rank, accumulation 2: DeepSpeed steps its optimizer once per step.
        assert got["deepspeed_optimizer_steps"] == 3
        assert got["zero_stage"] == int(name[4])
    if name == "zero3":
        assert got["zero3_partitioned"] > 0
    if name == "fsdp2_qlora":
        # The 4-bit weights (bf16 storage) are sharded like every other parameter.
        assert got["sharded_4bit"] == 14
    elif name != "ddp":
        check_exact_resume(tmp_path, tiny_llama_dir, name, got, output)


def check_exact_resume(
    tmp_path: Path, tiny_llama_dir: Path, name: str, got: dict[str, Any], output: Path
) -> None:
    """Resuming from checkpoint-2 (a fresh launch) trains step 3 exactly as the uninterrupted run did."""
    checkpoint = output / "checkpoint-2"
    assert not [p for p in checkpoint.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    if name.endswith("sharded"):
        # Each rank's shards of the weights and moments, and nothing gathered whole.
        names = {p.name for p in checkpoint.iterdir()}
        shards = {f"{kind}_shard_{rank}.safetensors" for kind in ("model", "optimizer") for rank in (0, 1)}
        assert shards <= names
        assert not [n for n in names if n.startswith(("model.", "adapter_model.", "optimizer."))]
    if name.startswith("zero"):
        # Each rank's ZeRO partitions, and no whole optimizer file.
        names = {p.name for p in checkpoint.iterdir()}
        assert {"optimizer_0.safetensors", "optimizer_1.safetensors"} <= names
        assert not (checkpoint / "optimizer.safetensors").exists()
    resumed, _ = run_engine(
        tmp_path, tiny_llama_dir, name, run_name=f"{name}_resumed", resume_from_checkpoint=str(checkpoint)
    )
    assert resumed["losses"] == pytest.approx(got["losses"][2:], rel=1e-6)
    assert resumed["grad_norms"] == pytest.approx(got["grad_norms"][2:], rel=1e-5)
    assert resumed["logits"] == pytest.approx(got["logits"], abs=1e-5)
    if name.startswith("zero3"):
        assert resumed["zero3_partitioned"] > 0
    if name.startswith("zero"):
        # The resumed engine stepped once, on top of the 2 steps restored from the checkpoint.
        assert resumed["deepspeed_optimizer_steps"] == 3


def check_bf16_zero3(
    tmp_path: Path, tiny_llama_dir: Path, name: str, got: dict[str, Any], output: Path
) -> None:
    """LoRA under ZeRO-3 in bf16: really partitioned, trains in bf16 with fp32 masters, resumes exactly."""
    assert got["zero_stage"] == 3
    assert got["zero3_partitioned"] > 0
    assert got["deepspeed_bf16"] is True
    assert got["deepspeed_offload"] == {"optimizer": "cpu", "param": "cpu"}
    assert got["deepspeed_optimizer_steps"] == 3
    assert all(math.isfinite(loss) for loss in got["losses"])
    check_exact_resume(tmp_path, tiny_llama_dir, name, got, output)
