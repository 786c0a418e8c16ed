"""Type stubs of the native extension. Users import from axr.* modules, not from here."""

import os
from collections.abc import Callable
from typing import final

import numpy as np
from numpy.typing import NDArray

__version__: str
IGNORE_INDEX: int

class AxrError(Exception): ...
class ConfigError(AxrError): ...
class DataError(AxrError): ...
class TokenizerError(AxrError): ...
class FormatError(AxrError): ...
class NotFoundError(AxrError, FileNotFoundError): ...
class PermissionDeniedError(AxrError, PermissionError): ...
class DiskFullError(AxrError, OSError): ...
class FileAccessError(AxrError, OSError): ...

def suggest(key: str, candidates: list[str]) -> str | None: ...

# --- packing (rust/axr-py/src/packing.rs); users call axr.packing ---
_PackingArrays = tuple[NDArray[np.uint64], NDArray[np.uint32], NDArray[np.uint32], NDArray[np.uint32], int]

def pack(
    lengths: NDArray[np.uint32],
    capacity: int,
    *,
    strategy: str = "bfd",
    max_items_per_bin: int | None = None,
    drop_oversized: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> _PackingArrays: ...
def plan_epoch(
    lengths: NDArray[np.uint32],
    capacity: int,
    micro_batch_size: int,
    *,
    strategy: str = "bfd",
    seed: int = 0,
    epoch: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    max_items_per_bin: int | None = None,
    drop_oversized: bool = False,
) -> tuple[
    _PackingArrays, int, NDArray[np.uint64], NDArray[np.uint32], NDArray[np.uint32], NDArray[np.uint32]
]: ...
def plan_rows(
    lengths: NDArray[np.uint32],
    micro_batch_size: int,
    *,
    order: str = "shuffled",
    seed: int = 0,
    epoch: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> tuple[
    _PackingArrays, int, NDArray[np.uint64], NDArray[np.uint32], NDArray[np.uint32], NDArray[np.uint32]
]: ...

# --- formats and tokenization (rust/axr-py/src/encode.rs); rows and specs are JSON strings ---
@final
class Encoder:
    """A tokenizer folder loaded once (``added_tokens`` applied); batch work releases the GIL."""

    def __new__(cls, tokenizer_dir: str | os.PathLike[str], added_tokens: str = "{}") -> Encoder: ...
    def render_rows(self, rows: list[str], format_spec: str) -> list[tuple[str, list[tuple[int, int]]]]: ...
    def encode_rows(
        self, rows: list[str], format_spec: str
    ) -> list[tuple[NDArray[np.uint32], NDArray[np.bool_]]]: ...
    def encode_texts(
        self, texts: list[str], add_special_tokens: bool = True
    ) -> tuple[list[list[int]], float, str]: ...
    def save(self, out_dir: str | os.PathLike[str]) -> None: ...
    @property
    def vocab_size(self) -> int: ...

# --- preference datasets (rust/axr-py/src/preference.rs); source and spec are JSON strings ---
def check_preference_type(kind: str, rl: str, key: str) -> None: ...
def encode_preference(
    source: str, spec: str, tokenizer_dir: str, rl: str, added_tokens: str = "{}"
) -> tuple[NDArray[np.uint32], NDArray[np.bool_], NDArray[np.uint64], NDArray[np.bool_], list[str]]: ...

# --- preprocessing (rust/axr-py/src/preprocess.rs); options and report are JSON strings ---
def preprocess(
    options_json: str, *, progress: Callable[[str, int, int, int, int], object] | None = None
) -> str: ...
def preprocess_part(
    options_json: str,
    index: int,
    count: int,
    *,
    progress: Callable[[str, int, int, int, int], object] | None = None,
) -> str: ...
def merge_parts(
    options_json: str, *, progress: Callable[[str, int, int, int, int], object] | None = None
) -> str: ...
def locate_prepared(options_json: str) -> str: ...

# --- conversations (rust/axr-py/src/chat.rs); options and rows are JSON strings ---
_ChatTurn = tuple[str, bool, list[tuple[int, int]], tuple[int, int] | None, bool]

def chat_render(
    dataset_type: str,
    options_json: str,
    rows: list[str],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    chat_template: str | None = None,
) -> list[tuple[str, list[tuple[int, int]], list[_ChatTurn]]]: ...
def chat_style_source(name: str) -> str: ...
def chat_style_names() -> list[str]: ...

CONVERSATION_TYPES: list[str]

# --- inference prompts (rust/axr-py/src/prompt.rs); users call axr.inference.PromptBuilder ---
@final
class PromptRenderer:
    def __new__(cls, options_json: str, format_spec: str) -> PromptRenderer: ...
    def render(
        self,
        *,
        row: str | None = None,
        text: str | None = None,
        messages: list[tuple[str, str]] | None = None,
    ) -> tuple[str, NDArray[np.uint32], list[str]]: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def stop_texts(self) -> list[str]: ...
