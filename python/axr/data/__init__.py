"""Prepared data: build stores from a config (``preprocess``) and read them (``PreparedDataset``).

Importing this package never imports torch.
"""

from __future__ import annotations

from axr.data.dataset import PreparedDataset
from axr.data.preprocess import (
    PartResult,
    PreprocessResult,
    options_from_config,
    prepared_store_for,
    preprocess,
    preprocess_shard,
)

__all__ = [
    "PartResult",
    "PreparedDataset",
    "PreprocessResult",
    "options_from_config",
    "prepared_store_for",
    "preprocess",
    "preprocess_shard",
]
