"""Prompts for generation, rendered by the native formatters that prepared the training data.

The dataset's format keys, tokenizer folder and added tokens come from
``axr.data.options_from_config``, the very translation ``axr preprocess`` uses,
so the ids fed to the model are the training ids up to where the answer starts::

    training:   <s> ### Instruction:\\nName a colour.\\n\\n### Response:\\n | Blue </s>
    inference:  <s> ### Instruction:\\nName a colour.\\n\\n### Response:\\n | (generated)

Instruction formats: the prompt part of the row (output fields left out).
Conversation types: the chat template with the generation prompt.
``prompter="none"`` (or a ``completion`` dataset): the text as is, after BOS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from axr import _native
from axr.errors import ConfigError

RAW_FORMAT = {"type": "completion"}
PROMPTERS = ("dataset", "none")
CONVERSATION_TYPES = frozenset(_native.CONVERSATION_TYPES)


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt and the ids the model is fed."""

    text: str
    input_ids: NDArray[np.uint32]
    empty_fields: list[str] = field(default_factory=list)


def preprocess_options_of(cfg: Any) -> dict[str, Any]:
    """The preprocessing options of ``cfg`` (``axr.data.options_from_config``): how preprocessing set
    the tokenizer up. A config without datasets (raw prompts only) gets a placeholder entry, which
    reads no file."""
    from axr.data import options_from_config

    if cfg.datasets:
        return options_from_config(cfg)
    placeholder = {"path": "-", "type": RAW_FORMAT["type"]}
    return options_from_config(cfg.model_copy(update={"datasets": [placeholder]}))


def format_keys_of(cfg: Any, dataset_index: int = 0) -> dict[str, Any]:
    """The format keys of ``datasets[dataset_index]`` exactly as preprocessing receives them."""
    if not cfg.datasets:
        raise ConfigError(
            "datasets: the prompt format comes from a datasets entry; add the one the model was trained "
            "on, or send raw text with --prompter none"
        )
    if not 0 <= dataset_index < len(cfg.datasets):
        raise ConfigError(
            f"--dataset {dataset_index}: the config has {len(cfg.datasets)} datasets entries "
            f"(0..{len(cfg.datasets) - 1})"
        )
    format_keys: dict[str, Any] = preprocess_options_of(cfg)["datasets"][dataset_index]["format"]
    return format_keys


class PromptBuilder:
    """Renders prompts with one dataset's format and the training tokenizer (loaded once)."""

    def __init__(self, options: dict[str, Any], format_keys: dict[str, Any]) -> None:
        """``options``: the config's preprocessing options (tokenizer set-up); ``format_keys``: the
        format of one dataset entry (``options["datasets"][i]["format"]``)."""
        from axr._native import PromptRenderer

        self.format_keys = dict(format_keys)
        self.raw = self.format_keys == RAW_FORMAT
        self.is_chat = self.format_keys.get("type") in CONVERSATION_TYPES
        self._renderer = PromptRenderer(json.dumps(options), json.dumps(self.format_keys))

    @property
    def stop_texts(self) -> list[str]:
        """Texts that end an answer: EOS, and a conversation's end-of-turn markers."""
        return list(self._renderer.stop_texts)

    @classmethod
    def from_config(cls, cfg: Any, *, prompter: str = "dataset", dataset_index: int = 0) -> PromptBuilder:
        """The builder for ``cfg``: its dataset's format, or raw text when ``prompter == "none"``."""
        if prompter not in PROMPTERS:
            raise ConfigError(f"--prompter: {prompter!r} is not one of {', '.join(PROMPTERS)}")
        keys = RAW_FORMAT if prompter == "none" else format_keys_of(cfg, dataset_index)
        return cls(preprocess_options_of(cfg), keys)

    def render_text(self, text: str) -> RenderedPrompt:
        """The user's text as the instruction (or user message, or text to continue)."""
        return self._wrap(self._renderer.render(text=text))

    def render_row(self, row: dict[str, Any]) -> RenderedPrompt:
        """A row in the dataset's own schema; its output part (if present) is left out."""
        return self._wrap(self._renderer.render(row=json.dumps(row)))

    def render_messages(self, messages: Sequence[tuple[str, str]]) -> RenderedPrompt:
        """A conversation history of ``(role, content)`` in template roles (conversation types)."""
        return self._wrap(self._renderer.render(messages=list(messages)))

    def render_input(self, text: str) -> RenderedPrompt:
        """What a user typed: a JSON object is a row of the dataset's schema, anything else is text."""
        stripped = text.strip()
        if stripped.startswith("{") and stripped.endswith("}") and not self.raw:
            try:
                row = json.loads(stripped)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                return self.render_row(row)
        return self.render_text(text)

    @staticmethod
    def _wrap(result: tuple[str, NDArray[np.uint32], list[str]]) -> RenderedPrompt:
        text, ids, empty = result
        return RenderedPrompt(text=text, input_ids=ids, empty_fields=list(empty))
