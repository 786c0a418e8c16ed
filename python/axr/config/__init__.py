"""Config loading and validation: Axolotl's keys, TOML or YAML, every problem reported at once.

Importing this package never imports torch (``resolve_precision`` does, on use).
"""

from __future__ import annotations

from axr.config.load import explain_config, load_config, parse_overrides, read_config_file, validate_config
from axr.config.precision import PrecisionMode, device_supports_bf16, resolve_precision
from axr.config.schema import (
    AxrConfig,
    BnbConfigKwargs,
    DatasetConfig,
    FsdpConfig,
    LoftQConfig,
    PeftConfig,
    SpecialTokensConfig,
    UserDefinedFormat,
)

__all__ = [
    "AxrConfig",
    "BnbConfigKwargs",
    "DatasetConfig",
    "FsdpConfig",
    "LoftQConfig",
    "PeftConfig",
    "PrecisionMode",
    "SpecialTokensConfig",
    "UserDefinedFormat",
    "device_supports_bf16",
    "explain_config",
    "load_config",
    "parse_overrides",
    "read_config_file",
    "resolve_precision",
    "validate_config",
]
