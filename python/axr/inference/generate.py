"""Generation with transformers: sampling settings, greedy at temperature 0, streamed text."""

from __future__ import annotations

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


def _text_streamer(tokenizer: Any, out: TextIO) -> Any:
    """A TextStreamer that writes the new text (not the prompt) to ``out`` as it is decoded."""
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate(
    loaded: LoadedModel,
    input_ids: NDArray[np.uint32] | list[int],
    settings: GenerationSettings,
    *,
    stream: TextIO | None = None,
    streamer: Any = None,
) -> str:
    """Generate after ``input_ids`` (exactly those ids, no re-tokenization); return the new text.

    ``stream``: also write the text to it as it is produced; ``streamer``: a transformers
    streamer of the caller's (e.g. a TextIteratorStreamer for a UI).
    """
    import torch

    tokenizer = loaded.tokenizer
    ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64)).unsqueeze(0).to(loaded.device)
    if streamer is None and stream is not None:
        streamer = _text_streamer(tokenizer, stream)
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
            **settings.generate_kwargs(),
        )
    new_ids = output[0, ids.shape[1] :]
    return str(tokenizer.decode(new_ids, skip_special_tokens=True))
