"""``push_dataset_to_hub``: prepared stores shared through a hub dataset repo, one folder per fingerprint.

After preprocessing, the prepared root (``train``/``eval`` stores and their ``meta.json``) is uploaded to
``<repo>/<fingerprint>/`` of a private dataset repo, unless that folder is already there. Before
building, a store missing locally is downloaded from that folder when the repo has it, so a second
machine (or a cleaned cache) reuses the tokenized data instead of rebuilding it, as Axolotl does with
its dataset hash. The fingerprint covers the options and the input files' bytes, so a store is only
ever reused for the exact same data and settings; the native reader still verifies what it reuses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from axr.errors import ConfigError

KEY = "push_dataset_to_hub"


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def _remote_files(repo_id: str) -> set[str] | None:
    """The repo's files, or None when it does not exist yet."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        return set(_api().list_repo_files(repo_id, repo_type="dataset"))
    except RepositoryNotFoundError:
        return None
    except (HfHubHTTPError, OSError) as error:
        raise ConfigError(f"{KEY}: cannot list the hub dataset {repo_id!r}: {error}") from None


def pull(repo_id: str, root: Path) -> bool:
    """Download ``<fingerprint>/`` of ``repo_id`` into ``root`` when missing locally; True if it did."""
    from axr.hub import offline

    if offline() or (root / "train" / "meta.json").is_file():
        return False
    fingerprint = root.name
    files = _remote_files(repo_id)
    if not files or f"{fingerprint}/train/meta.json" not in files:
        return False
    from huggingface_hub import snapshot_download

    staging = root.parent / f".{fingerprint}.pull-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        snapshot_download(
            repo_id,
            repo_type="dataset",
            allow_patterns=[f"{fingerprint}/**"],
            local_dir=staging,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
        shutil.rmtree(staging / fingerprint / ".cache", ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        (staging / fingerprint).rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def push(repo_id: str, root: Path) -> bool:
    """Upload ``root`` as ``<fingerprint>/`` of the private dataset repo ``repo_id``; False when the
    repo already holds that fingerprint (nothing is sent again)."""
    from huggingface_hub.errors import HfHubHTTPError

    from axr.hub import offline

    if not _main_process():
        return False
    if offline():
        raise ConfigError(f"{KEY}: cannot push to {repo_id!r}, the hub is offline (HF_HUB_OFFLINE)")
    fingerprint = root.name
    files = _remote_files(repo_id)
    if files is not None and f"{fingerprint}/train/meta.json" in files:
        return False
    api = _api()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(root),
            path_in_repo=fingerprint,
            commit_message=f"axr prepared dataset {fingerprint}",
        )
    except (HfHubHTTPError, OSError) as error:
        raise ConfigError(f"{KEY}: pushing to {repo_id!r} failed: {error}") from None
    return True
