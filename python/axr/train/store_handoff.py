"""Multi-rank start: rank 0 builds or finds the prepared stores, the other ranks receive their paths.

The other ranks never call the native preprocess: finding a store by its fingerprint hashes every
input byte, which on a huge corpus costs minutes per rank for nothing. They wait on a gloo group
of its own whose timeout is ``ddp_timeout`` (transformers' default of 1800 s when unset), not the
default collective timeout of the training process group (10 minutes under NCCL), so a long first
build on rank 0 does not kill the run. A failure on rank 0 reaches every rank as an error.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from axr.errors import DataError

# transformers' TrainingArguments.ddp_timeout default, which Axolotl inherits.
DEFAULT_DDP_TIMEOUT = 1800


def stores_from_rank_zero(cfg: Any, accelerator: Any) -> dict[str, Path]:
    """The prepared stores of ``cfg`` by split, built (or found) by rank 0 and sent to every rank."""
    import torch.distributed as dist

    from axr.data import preprocess

    seconds = cfg.ddp_timeout if cfg.ddp_timeout is not None else DEFAULT_DDP_TIMEOUT
    message: list[Any] = [None]
    try:
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))
        # Every rank is a member of the group (new_group gets no `ranks`), never NON_GROUP_MEMBER.
        assert isinstance(group, dist.ProcessGroup)
        try:
            if accelerator.is_main_process:
                try:
                    message[0] = {split: str(path) for split, path in preprocess(cfg).stores.items()}
                except BaseException as error:
                    message[0] = f"{type(error).__name__}: {error}"
                    dist.broadcast_object_list(message, src=0, group=group)
                    raise
            dist.broadcast_object_list(message, src=0, group=group)
        finally:
            dist.destroy_process_group(group)
    except RuntimeError as error:  # torch's store and gloo timeouts
        if accelerator.is_main_process:
            raise
        raise DataError(
            f"rank {accelerator.process_index} waited ddp_timeout ({seconds:g} s) for rank 0 to prepare the "
            f"data and gave up ({error}); raise ddp_timeout, or run axr preprocess before training"
        ) from error
    received = message[0]
    if isinstance(received, str):
        raise DataError(f"rank 0 could not prepare the data: {received}")
    return {split: Path(path) for split, path in received.items()}
