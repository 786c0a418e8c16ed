"""Two CPU processes (gloo) through `accelerate launch`: both train, on disjoint rows, and finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_config


@pytest.mark.slow
def test_two_processes_train_on_disjoint_rows(tmp_path, tiny_llama_dir):
    config = write_config(
        tmp_path / "ddp.toml", tiny_llama_dir, tmp_path / "out",
        micro_batch_size=2, max_steps=3, sample_packing=False, save_steps=2,
    )  # fmt: skip
    worker = Path(__file__).parent / "ddp_worker.py"
    # --multi_gpu selects accelerate's torchrun launcher; with no CUDA the processes form a gloo group.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "29517", str(worker), str(config), str(tmp_path),
    ]  # fmt: skip
    environment = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    read = [set(rank["read"]) for rank in ranks]
    assert read[0]
    assert read[1]
    assert not read[0] & read[1]
    assert len(ranks[0]["losses"]) == len(ranks[1]["losses"]) == 3
    # The logged loss is the global one (summed over ranks), so both ranks report the same numbers.
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert (tmp_path / "out" / "model.safetensors").exists()
    # The checkpoint's manifest, written by rank 0 after every rank saved, lists both ranks' RNG files.
    manifest = json.loads((tmp_path / "out" / "checkpoint-2" / "manifest.json").read_text())
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= set(manifest["files"])
