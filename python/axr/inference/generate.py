"""Generation with transformers: sampling settings, greedy at temperature 0, streamed text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from axr.errors import ConfigError
from axr.inference.model import LoadedModel


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; the defaults are those of Axolotl's ``inference`` command."""

    max_new_tokens: int = 1024
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 40
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"--max_new_tokens: must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"--temperature: must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"--top_k: must be 0 (off) or more, got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"--repetition_penalty: must be above 0, got {self.repetition_penalty}")
        if problems:
            raise ConfigError("; ".join(problems))

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``model.generate``: greedy when ``temperature`` is 0."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.temperature == 0:
            kwargs["do_sample"] = False
            # A model's generation_config may carry sampling values that greedy decoding would warn about.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs


def cut_at_stop(text: str, stop_texts: Sequence[str]) -> str:
    """``text`` up to the first stop text (the end-of-turn marker is not part of the answer)."""
    found = [index for index in (text.find(stop) for stop in stop_texts if stop) if index >= 0]
    return text[: min(found)] if found else text


def _held_back(text: str, stop_texts: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop text (not printed yet)."""
    longest = 0
    for stop in stop_texts:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
                break
    return longest


def _text_streamer(tokenizer: Any, out: TextIO, stop_texts: Sequence[str]) -> Any:
    """A TextStreamer that writes the new text (not the prompt) to ``out`` as it is decoded,
    never printing a stop text or anything after it."""
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        pending = ""
        stopped = False

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if self.stopped:
                return
            text = self.pending + text
            answer = cut_at_stop(text, stop_texts)
            if len(answer) < len(text):
                self.stopped = True
                out.write(answer + "\n")
            elif stream_end:
                out.write(text + "\n")
            else:
                keep = _held_back(text, stop_texts)
                self.pending = text[len(text) - keep :] if keep else ""
                out.write(text[: len(text) - keep])
            out.flush()

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate(
    loaded: LoadedModel,
    input_ids: NDArray[np.uint32] | list[int],
    settings: GenerationSettings,
    *,
    stream: TextIO | None = None,
    streamer: Any = None,
    stop_texts: Sequence[str] = (),
) -> str:
    """Generate after ``input_ids`` (exactly those ids, no re-tokenization); return the new text.

    Generation ends at EOS or at any of ``stop_texts`` (a chat template's end-of-turn marker),
    which is not part of the returned text. ``stream``: also write the text to it as it is
    produced; ``streamer``: a transformers streamer of the caller's (e.g. for a UI).
    """
    import torch

    tokenizer = loaded.tokenizer
    ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64)).unsqueeze(0).to(loaded.device)
    if streamer is None and stream is not None:
        streamer = _text_streamer(tokenizer, stream, stop_texts)
    stops = [text for text in stop_texts if text and text != tokenizer.eos_token]
    # transformers matches stop strings on the decoded tokens, so a marker split over tokens still stops.
    kwargs: dict[str, Any] = {"stop_strings": stops, "tokenizer": tokenizer} if stops else {}
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
            **kwargs,
            **settings.generate_kwargs(),
        )
    new_ids = output[0, ids.shape[1] :]
    return cut_at_stop(str(tokenizer.decode(new_ids, skip_special_tokens=True)), stop_texts)
