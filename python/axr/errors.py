"""The exception classes of axr, defined in the native module (the one import site).

``AxrError`` is the root; ``ConfigError``, ``DataError``, ``TokenizerError`` and
``FormatError`` are its leaves. Python-side code raises the same classes, so a
caller catches one hierarchy whether the error came from Rust or Python.

File-system failures have a class per kind, each also a built-in ``OSError`` subclass with the
path as ``filename``: ``NotFoundError`` (a ``FileNotFoundError``), ``PermissionDeniedError`` (a
``PermissionError``), ``DiskFullError`` and ``FileAccessError`` (the other ones).
"""

from __future__ import annotations

from axr._native import (
    AxrError,
    ConfigError,
    DataError,
    DiskFullError,
    FileAccessError,
    FormatError,
    NotFoundError,
    PermissionDeniedError,
    TokenizerError,
)

__all__ = [
    "AxrError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "FileAccessError",
    "FormatError",
    "NotFoundError",
    "PermissionDeniedError",
    "TokenizerError",
]
