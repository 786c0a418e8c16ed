"""axr: fine-tune causal language models from a config, with a native Rust data path.

Importing ``axr`` is cheap: it never imports torch. Heavy modules load on use.
"""

from __future__ import annotations

from axr._native import __version__ as _native_version
from axr.errors import AxrError, ConfigError, DataError, FormatError, TokenizerError

__version__ = _native_version

__all__ = ["AxrError", "ConfigError", "DataError", "FormatError", "TokenizerError", "__version__"]
