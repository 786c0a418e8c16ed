"""GGUF files as base models: converted once into an ordinary model folder, then loaded like any other.

llama.cpp and Ollama users have their models as ``.gguf`` files. ``base_model`` may name one
(or a folder holding it, with ``gguf_file``). transformers reads GGUF with the ``gguf`` package and
dequantizes the weights to float; axr saves that once as a plain folder (``model.safetensors``,
``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` with the chat template) under
``<cache>/gguf/<file stem>-<content hash>/`` and every command then loads the folder: the native
data path tokenizes with its ``tokenizer.json``, training, inference and merging load its weights.

The cache is ``$AXR_CACHE`` when set, else ``$XDG_CACHE_HOME/axr``, else ``~/.cache/axr``. The key
is the SHA-256 of the file's bytes, so a renamed or copied file reuses its conversion and a changed
file gets a new one; deleting the cache folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from axr.errors import ConfigError

SUFFIX = ".gguf"
MARKER = "axr_gguf.json"
# Bumped when the converted folder's layout changes, so old conversions are not reused.
LAYOUT_VERSION = 1

# (path, size, mtime) -> converted folder: one hash and one message per file and process.
_converted: dict[tuple[str, int, int], Path] = {}


def cache_root() -> Path:
    """Where axr keeps what it derives once and reuses (see the module docstring)."""
    if os.environ.get("AXR_CACHE"):
        return Path(os.environ["AXR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "axr"


def model_dir(name: str, *, gguf_file: str | None = None, key: str = "base_model") -> str:
    """``name`` as given, or, when it is a GGUF model, the folder of its conversion.

    A GGUF model is ``name`` ending in ``.gguf``, or the folder ``name`` with ``gguf_file`` inside.
    ``key`` is the config key ``name`` came from, for the errors.
    """
    path = Path(name).expanduser()
    if gguf_file:
        if not path.is_dir():
            raise ConfigError(
                f"gguf_file: {key} must be the local folder holding {gguf_file!r}; {name!r} is not"
            )
        file = path / gguf_file
        if not file.is_file():
            raise ConfigError(f"gguf_file: {file} does not exist{_listing(path)}")
    elif path.suffix.lower() == SUFFIX:
        if not path.is_file():
            raise ConfigError(f"{key}: the GGUF file {name!r} does not exist")
        file = path
    elif path.is_dir() and not (path / "config.json").exists() and any(path.glob(f"*{SUFFIX}")):
        raise ConfigError(
            f"{key}: {path} has no config.json but holds GGUF files{_listing(path)}; set {key} to the "
            "file, or gguf_file to its name"
        )
    else:
        return name
    return str(converted_folder(file))


def _listing(folder: Path) -> str:
    names = sorted(child.name for child in folder.glob(f"*{SUFFIX}"))
    return f" (GGUF files there: {', '.join(names)})" if names else f" (no {SUFFIX} file in {folder})"


def file_digest(file: Path) -> str:
    """SHA-256 of the file's bytes."""
    with file.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def converted_folder(file: Path, *, log: TextIO | None = None) -> Path:
    """The converted model folder of the GGUF ``file``: reused from the cache, else made now (once)."""
    log = sys.stderr if log is None else log
    stat = file.stat()
    memo_key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key in _converted:
        return _converted[memo_key]
    digest = file_digest(file)
    root = cache_root() / "gguf"
    # Named after the file it came from, found by its bytes: a renamed copy reuses the conversion.
    done = [folder for folder in sorted(root.glob(f"*-{digest[:16]}")) if _is_complete(folder, digest)]
    target = done[0] if done else root / f"{file.stem}-{digest[:16]}"
    if done:
        print(f"axr: {file} -> {target} (GGUF converted earlier, reused)", file=log)
    else:
        print(f"axr: converting {file} into {target} (once; later runs reuse it)", file=log)
        started = time.monotonic()
        _convert(file, target, digest)
        print(f"axr: GGUF converted in {time.monotonic() - started:.0f} s", file=log)
    _converted[memo_key] = target
    return target


def _is_complete(folder: Path, digest: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("sha256") == digest and marker.get("layout") == LAYOUT_VERSION)


def _convert(file: Path, target: Path, digest: str) -> None:
    """Dequantize ``file`` with transformers and save it as a plain folder at ``target``."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"base_model: reading the GGUF file {file} needs the gguf package: pip install gguf "
            '(it comes with pip install "axr[train]")'
        )
    import torch
    import transformers

    folder, name = str(file.parent), file.name
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"base_model: transformers cannot read the GGUF file {file}: {error}") from error
    # The weights are plain float tensors by now; the GGUF marker left on the config (and its
    # quantizer) only makes save_pretrained refuse the model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    _template_into_tokenizer_config(staging, tokenizer.chat_template)
    marker = {
        "source": str(file.resolve()),
        "sha256": digest,
        "layout": LAYOUT_VERSION,
        "transformers": transformers.__version__,
    }
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    # Another process may have finished the same conversion meanwhile: keep whichever landed first.
    if _is_complete(target, digest):
        shutil.rmtree(staging, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_complete(target, digest):
            raise


def _template_into_tokenizer_config(folder: Path, template: str | dict | None) -> None:
    """Move the chat template from chat_template.jinja into tokenizer_config.json: the native data
    path reads it there, and one copy means an edit cannot leave training and inference disagreeing."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
        jinja.unlink()
    if not template:
        return
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
