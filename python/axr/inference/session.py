"""How prompts reach the model: one prompt, a terminal loop (a chat keeps its history), or gradio."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, TextIO

from axr.errors import AxrError
from axr.inference.generate import GenerationSettings, cut_at_stop, generate
from axr.inference.model import LoadedModel
from axr.inference.prompts import PromptBuilder

GRADIO_MISSING = (
    "--gradio needs the gradio package, which is not installed: pip install gradio "
    "(or leave out --gradio to use the terminal)"
)


def answer(
    loaded: LoadedModel,
    builder: PromptBuilder,
    text: str,
    settings: GenerationSettings,
    *,
    stream: TextIO | None = None,
) -> str:
    """Render ``text`` as the dataset's prompt, generate, return the new text."""
    prompt = builder.render_input(text)
    return generate(loaded, prompt.input_ids, settings, stream=stream, stop_texts=builder.stop_texts)


def interactive(
    loaded: LoadedModel,
    builder: PromptBuilder,
    settings: GenerationSettings,
    *,
    read: Any = input,
    out: TextIO | None = None,
) -> None:
    """A terminal loop: one line per prompt; a conversation type keeps the history.

    ``/reset`` forgets the history, ``/exit`` (or Ctrl-D) ends the session.
    """
    out = sys.stdout if out is None else out
    history: list[tuple[str, str]] = []
    hint = " (/reset forgets the conversation)" if builder.is_chat else ""
    print(f"axr inference: type a prompt and press Enter; /exit or Ctrl-D ends{hint}", file=sys.stderr)
    while True:
        try:
            line = read("> ")
        except EOFError:
            print(file=sys.stderr)
            return
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return
        if command == "/reset":
            history.clear()
            continue
        if builder.is_chat:
            history.append(("user", line))
            prompt = builder.render_messages(history)
            reply = generate(loaded, prompt.input_ids, settings, stream=out, stop_texts=builder.stop_texts)
            history.append(("assistant", reply.strip()))
        else:
            prompt = builder.render_input(line)
            generate(loaded, prompt.input_ids, settings, stream=out, stop_texts=builder.stop_texts)


def launch_gradio(loaded: LoadedModel, builder: PromptBuilder, settings: GenerationSettings) -> None:
    """A gradio page: prompt in, streamed answer out (single-turn, the dataset's prompt format)."""
    if importlib.util.find_spec("gradio") is None:
        raise AxrError(GRADIO_MISSING)
    import threading
    from dataclasses import replace

    import gradio as gr
    from transformers import TextIteratorStreamer

    def respond(text: str, max_new_tokens: float, temperature: float) -> Any:
        chosen = replace(settings, max_new_tokens=int(max_new_tokens), temperature=float(temperature))
        prompt = builder.render_input(text)
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(
            target=generate,
            args=(loaded, prompt.input_ids, chosen),
            kwargs={"streamer": streamer, "stop_texts": builder.stop_texts},
        )
        worker.start()
        produced = ""
        for piece in streamer:
            produced += piece
            yield cut_at_stop(produced, builder.stop_texts)
        worker.join()

    page = gr.Interface(
        fn=respond,
        inputs=[
            gr.Textbox(lines=4, label="Prompt"),
            gr.Slider(1, 4096, value=settings.max_new_tokens, step=1, label="max_new_tokens"),
            gr.Slider(0.0, 2.0, value=settings.temperature, label="temperature (0 = greedy)"),
        ],
        outputs=gr.Textbox(label="Output"),
        title="axr inference",
        description=loaded.describe(),
    )
    page.queue().launch()
