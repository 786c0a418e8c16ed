"""The exception classes of axr, defined in the native module (the one import site).

``AxrError`` is the root; ``ConfigError``, ``DataError``, ``TokenizerError`` and
``FormatError`` are its leaves. Python-side code raises the same classes, so a
caller catches one hierarchy whether the error came from Rust or Python.
"""

from __future__ import annotations

from axr._native import AxrError, ConfigError, DataError, FormatError, TokenizerError

__all__ = ["AxrError", "ConfigError", "DataError", "FormatError", "TokenizerError"]
