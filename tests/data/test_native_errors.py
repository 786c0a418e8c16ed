"""Errors from the native module: one class per kind of file-system failure, each with the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr import _native
from axr.errors import (
    AxrError,
    DiskFullError,
    FileAccessError,
    FormatError,
    NotFoundError,
    PermissionDeniedError,
)


def test_a_missing_tokenizer_is_not_found_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(NotFoundError) as caught:
        _native.Encoder(missing)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, AxrError)
    assert not isinstance(caught.value, FormatError)
    assert caught.value.filename == str(missing / "tokenizer.json")
    assert str(missing) in str(caught.value)


def test_a_full_disk_is_disk_full_not_a_format_problem(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DiskFullError) as caught:
        _native.Encoder(mistral_tokenizer_dir).save(out)
    assert caught.value.filename == str(out / "tokenizer.json")
    assert "No space left on device" in str(caught.value)
    assert not isinstance(caught.value, (FormatError, FileAccessError))


def test_a_refused_folder_is_permission_denied(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    # sysfs refuses new folders (EPERM, or EROFS where it is mounted read-only), even to root,
    # for whom chmod would not refuse anything.
    target = Path("/sys/axr-cannot-create")
    with pytest.raises(PermissionDeniedError) as caught:
        _native.Encoder(mistral_tokenizer_dir).save(target)
    assert isinstance(caught.value, PermissionError)
    assert caught.value.filename == str(target)
