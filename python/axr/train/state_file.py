"""Training state (optimizer, scheduler, random generators) as safetensors files: no pickle anywhere.

``torch.save``/``torch.load`` write and read pickles, and unpickling a file can run any code
it names, so a checkpoint downloaded or shared like a model would be a way to run code on
the machine that resumes from it. These files hold the tensors as safetensors and every
other value as JSON in the file's metadata; reading one only parses JSON and copies bytes.

The structure is kept exactly: tuples stay tuples, integer dict keys (optimizer state is
keyed by parameter index) stay integers, numpy arrays come back as numpy arrays, and
non-finite floats survive.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from axr.errors import ConfigError

_METADATA_KEY = "axr_state"
_FORMAT = "axr-state-1"


def _encode(value: Any, tensors: dict[str, Any], where: str) -> Any:
    import torch

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        # A copy on the CPU: safetensors refuses tensors that share storage and wants contiguous bytes.
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__ndarray__": name}
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors, where)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            items = value.items()
            return {"__dict__": {key: _encode(item, tensors, f"{where}.{key}") for key, item in items}}
        if all(isinstance(key, int) and not isinstance(key, bool) for key in value):
            return {
                "__intdict__": [
                    [key, _encode(item, tensors, f"{where}[{key}]")] for key, item in value.items()
                ]
            }
    raise TypeError(f"{where}: a {type(value).__name__} cannot be saved in a checkpoint without pickle")


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    ((tag, body),) = value.items()
    if tag == "__float__":
        return float(body)
    if tag == "__tensor__":
        return tensors[body]
    if tag == "__ndarray__":
        return tensors[body].numpy()
    if tag == "__tuple__":
        return tuple(_decode(item, tensors) for item in body)
    if tag == "__dict__":
        return {key: _decode(item, tensors) for key, item in body.items()}
    if tag == "__intdict__":
        return {int(key): _decode(item, tensors) for key, item in body}
    raise ValueError(f"unknown entry {tag!r}")


def save_state(value: Any, path: str | Path) -> None:
    """Write ``value`` (nested dicts, lists, tuples, numbers, strings, tensors, arrays) to ``path``."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    structure = _encode(value, tensors, Path(path).stem)
    metadata = {"format": _FORMAT, _METADATA_KEY: json.dumps(structure, allow_nan=False)}
    save_file(tensors, str(path), metadata=metadata)


def load_state(path: str | Path, *, key: str = "resume_from_checkpoint") -> Any:
    """Read what ``save_state`` wrote; anything else is a ConfigError naming ``path`` and ``key``."""
    from safetensors import safe_open

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}: {file} is missing")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise ConfigError(
            f"{key}: {file} is not a readable safetensors file ({error}); the checkpoint is damaged"
        ) from None
    if metadata.get("format") != _FORMAT or _METADATA_KEY not in metadata:
        raise ConfigError(f"{key}: {file} was not written by axr (no {_FORMAT} metadata)")
    try:
        return _decode(json.loads(metadata[_METADATA_KEY]), tensors)
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{key}: {file} holds a damaged state description ({error})") from None
