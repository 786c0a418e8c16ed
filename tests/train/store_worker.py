"""Run under `torchrun` by test_store_handoff.py: every rank opens the training data of a config.

Ranks other than 0 have the native preprocess and store lookup replaced by a failure, so a rank
that hashes the inputs (or builds a store) fails the test. Each rank records what it received,
and how long it waited, in `<record_dir>/rank<N>.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(config_path: str, record_dir: str) -> None:
    from accelerate import Accelerator

    import axr._native as native
    from axr.config import load_config
    from axr.train.loop import open_training_data

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"rank {rank} reached the native preprocess")

    if rank != 0:
        native.preprocess = refuse
        native.locate_prepared = refuse
    else:
        time.sleep(float(os.environ.get("RANK0_DELAY", "0")))
    started = time.monotonic()
    try:
        data = open_training_data(load_config(config_path), accelerator)
        record: dict[str, object] = {"store": str(data.train.path), "samples": len(data.train)}
    except Exception as error:
        record = {"error": f"{type(error).__name__}: {error}"}
    record["waited"] = time.monotonic() - started
    (Path(record_dir) / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
