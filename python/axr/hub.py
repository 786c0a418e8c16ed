"""Hub ids → local folders in the standard Hugging Face cache, through ``huggingface_hub``.

Every config value that names a model, tokenizer, adapter or dataset may be a local path or a hub
id (``org/name``). A hub id is downloaded once into the cache (``HF_HOME``/``HF_HUB_CACHE``), only
the files axr reads (config, tokenizer files, safetensors weights; a dataset's data files), and the
snapshot folder is what transformers and the native data path then read. With ``HF_HUB_OFFLINE=1``
a cached id resolves from the cache and an uncached one fails at once naming the config key.

The environment (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``) is read at each call, not when
``huggingface_hub`` was imported, so a process can point at another hub or cache between calls.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from axr.errors import ConfigError

# Files a model folder needs besides weights: configs, tokenizers (fast, SentencePiece, tiktoken,
# BPE vocab/merges), chat templates.
_MODEL_FILES = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
_SAFETENSORS = ["*.safetensors"]
_PICKLES = ["*.bin", "*.pt", "*.pth"]
_DATA_FILES = ["*.jsonl", "*.json", "*.ndjson", "*.parquet", "*.arrow", "*.txt"]
# A missing local file such as ``data/train.jsonl`` is reported as missing, not looked up on the hub.
_FILE_SUFFIXES = (
    ".json",
    ".jsonl",
    ".ndjson",
    ".parquet",
    ".arrow",
    ".txt",
    ".csv",
    ".yml",
    ".yaml",
    ".toml",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """``org/name`` that is not a local path (a local folder of that name wins, as in transformers)."""
    if not _HUB_ID.match(name) or ".." in name or name.lower().endswith(_FILE_SUFFIXES):
        return False
    return not Path(name).expanduser().exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_dir() -> Path:
    """Where snapshots go: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _download(
    repo_id: str,
    key: str,
    *,
    repo_type: str,
    revision: str | None,
    allow: list[str],
    ignore: list[str] | None = None,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = "dataset" if repo_type == "dataset" else "model"
    try:
        folder = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            allow_patterns=allow,
            ignore_patterns=ignore,
            cache_dir=cache_dir(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=offline(),
        )
    except RevisionNotFoundError:
        raise ConfigError(f"{key}: the hub {what} {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{key}: no hub {what} {repo_id!r} (nor a local path of that name); check the id, or log in "
            "(HF_TOKEN) if it is private or gated"
        ) from None
    except LocalEntryNotFoundError:
        at = f" at revision {revision!r}" if revision else ""
        why = "the hub is offline" if offline() else "the hub cannot be reached"
        raise ConfigError(f"{key}: {repo_id!r}{at} is not in the local cache and {why}") from None
    return Path(folder)


def model_folder(
    name: str,
    key: str,
    *,
    revision: str | None = None,
    weights: bool = False,
    ignore_patterns: str | list[str] | None = None,
    code: bool = False,
) -> str:
    """``name`` itself when local, else the cached snapshot folder of the hub model ``name``.

    ``weights``: also fetch the weights (safetensors; pickled ``.bin`` only when the repo has no
    safetensors and ``AXR_ALLOW_PICKLE_WEIGHTS=1``). ``code``: also fetch the repo's ``.py`` files
    (only with ``trust_remote_code``).
    """
    if not is_hub_id(name):
        return name
    from axr.models.load import PICKLE_OPT_IN, pickle_weights_allowed

    ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else ignore_patterns
    allow = _MODEL_FILES + (["*.py"] if code else [])
    folder = _download(name, key, repo_type="model", revision=revision, allow=allow, ignore=ignore)
    if weights:
        folder = _download(name, key, repo_type="model", revision=revision, allow=_SAFETENSORS, ignore=ignore)
        if not any(folder.glob("*.safetensors")):
            if not pickle_weights_allowed():
                where = "in the local cache (the hub is offline)" if offline() else "on the hub"
                raise ConfigError(
                    f"{key}: {name!r} has no safetensors weights {where}; axr reads safetensors only "
                    f"(loading a pickle can run code). Set {PICKLE_OPT_IN}=1 to fetch and read its "
                    ".bin weights if you trust where they come from"
                )
            folder = _download(name, key, repo_type="model", revision=revision, allow=_PICKLES, ignore=ignore)
    return str(folder)


def model_source(cfg: Any, key: str, *, weights: bool = False) -> str:
    """The local folder for config key ``key`` (``base_model``, ``base_model_config``,
    ``tokenizer_config``, ``lora_model_dir``): a GGUF file's converted folder (``axr.models.gguf``),
    a hub id's cached snapshot, or the local path as given. ``revision_of_model`` applies to the
    base model's repo, ``base_model_ignore_patterns`` to what is fetched of it."""
    from axr.models.gguf import model_dir

    name = getattr(cfg, key)
    converted = model_dir(name, gguf_file=cfg.gguf_file if key == "base_model" else None, key=key)
    if converted != name:
        return converted
    same_repo = name == cfg.base_model
    return model_folder(
        name,
        key,
        revision=cfg.revision_of_model if same_repo else None,
        weights=weights,
        ignore_patterns=cfg.base_model_ignore_patterns if same_repo else None,
        code=bool(cfg.trust_remote_code),
    )


def adapter_folder(name: str) -> str:
    """``lora_model_dir`` as a local folder: a hub id fetches the adapter's config and weights."""
    if not is_hub_id(name):
        return name
    allow = ["adapter_config.json", "*.safetensors", *_MODEL_FILES]
    from axr.models.load import pickle_weights_allowed

    if pickle_weights_allowed():
        allow += _PICKLES
    return str(_download(name, "lora_model_dir", repo_type="model", revision=None, allow=allow))


@dataclass(frozen=True)
class HubDataset:
    """A hub dataset resolved to cached files: read ``folder`` (with ``data_files`` under it when set;
    then the split is already chosen and ``split`` is None)."""

    folder: Path
    sha: str
    data_files: list[str] | None
    split: str | None


def _front_matter(readme: Path) -> dict[str, Any]:
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _split_files(value: Any) -> dict[str, list[str]]:
    """A dataset card's ``data_files`` (a pattern, a list, or ``[{split, path}]``) by split."""
    if isinstance(value, str):
        return {"train": [value]}
    by_split: dict[str, list[str]] = {}
    for item in value or []:
        if isinstance(item, str):
            by_split.setdefault("train", []).append(item)
        elif isinstance(item, dict) and "path" in item:
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            by_split.setdefault(str(item.get("split", "train")), []).extend(str(path) for path in paths)
    return by_split


def dataset_files(
    repo_id: str,
    key: str,
    *,
    name: str | None,
    split: str | None,
    data_files: list[str] | None,
    revision: str | None,
) -> HubDataset:
    """Fetch the files of one split (or the given ``data_files``) of a hub dataset into the cache.

    The subset ``name`` is found as the hub does: a ``configs`` entry of the README's front matter
    (its ``data_files`` per split), else a top-level folder of that name.
    """
    card = _download(repo_id, key, repo_type="dataset", revision=revision, allow=["README.md"])
    sha = card.name
    if data_files:
        folder = _download(repo_id, key, repo_type="dataset", revision=revision, allow=list(data_files))
        return HubDataset(folder, sha, list(data_files), split)
    configs = [
        entry for entry in _front_matter(card / "README.md").get("configs") or [] if isinstance(entry, dict)
    ]
    chosen = None
    if name is not None:
        chosen = next((entry for entry in configs if entry.get("config_name") == name), None)
        if chosen is None and not configs:
            folder = _download(
                repo_id,
                key,
                repo_type="dataset",
                revision=revision,
                allow=[f"{name}/{pattern}" for pattern in _DATA_FILES],
            )
            if not (folder / name).is_dir():
                raise ConfigError(f"{key}.name: the hub dataset {repo_id!r} has no subset {name!r}")
            return HubDataset(folder / name, sha, None, split)
        if chosen is None:
            names = ", ".join(str(entry.get("config_name")) for entry in configs)
            raise ConfigError(
                f"{key}.name: the hub dataset {repo_id!r} has no subset {name!r}; it has: {names}"
            )
    elif configs:
        chosen = next(
            (entry for entry in configs if entry.get("default") or entry.get("config_name") == "default"),
            None,
        )
    if chosen is not None and chosen.get("data_files"):
        by_split = _split_files(chosen["data_files"])
        wanted = split or "train"
        if wanted not in by_split:
            raise ConfigError(
                f"{key}.split: the subset {chosen.get('config_name')!r} of {repo_id!r} has no split "
                f"{wanted!r}; it has: {', '.join(sorted(by_split))}"
            )
        patterns = by_split[wanted]
        folder = _download(repo_id, key, repo_type="dataset", revision=revision, allow=patterns)
        return HubDataset(folder, sha, patterns, None)
    folder = _download(repo_id, key, repo_type="dataset", revision=revision, allow=_DATA_FILES)
    return HubDataset(folder, sha, None, split)
