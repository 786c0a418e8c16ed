"""Multi-rank start (2 CPU processes, gloo): rank 0 builds the store, rank 1 receives its path
without hashing the inputs, and waits no longer than ddp_timeout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import ALPACA_SAMPLE, write_config
from launch import free_port, launch_environment

WORKER = Path(__file__).parent / "store_worker.py"


def _launch(tmp_path: Path, tiny_llama_dir: Path, *, delay: float = 0.0, **keys: object) -> dict[int, dict]:
    config = write_config(
        tmp_path / "c.toml", tiny_llama_dir, tmp_path / "out",
        sequence_len=128, dataset_prepared_path=str(tmp_path / "prepared"), **keys,
    )  # fmt: skip
    with config.open("a") as file:
        file.write(f'[[datasets]]\npath = "{ALPACA_SAMPLE}"\ntype = "alpaca"\n')
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(WORKER), str(config), str(tmp_path),
    ]  # fmt: skip
    environment = {**launch_environment(), "RANK0_DELAY": str(delay)}
    subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    return {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}


def test_rank_zero_builds_and_the_others_receive_the_path(tmp_path: Path, tiny_llama_dir: Path) -> None:
    records = _launch(tmp_path, tiny_llama_dir)
    assert "error" not in records[1], records[1]
    assert records[1]["store"] == records[0]["store"]
    assert records[1]["samples"] == records[0]["samples"] > 0
    assert Path(records[0]["store"]).parent.parent == tmp_path / "prepared"


def test_other_ranks_wait_at_most_ddp_timeout(tmp_path: Path, tiny_llama_dir: Path) -> None:
    # Rank 0 starts 6 s late; with ddp_timeout = 2 rank 1 gives up after about 2 s, long before.
    records = _launch(tmp_path, tiny_llama_dir, delay=6.0, ddp_timeout=2)
    assert "error" in records[1], records[1]
    assert "waited ddp_timeout (2 s) for rank 0" in records[1]["error"], records[1]
    assert records[1]["waited"] < 5, records[1]
