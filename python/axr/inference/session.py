"""How prompts reach the model: one prompt, a terminal loop (a chat keeps its history), or gradio."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from axr.errors import AxrError
from axr.inference.generate import GenerationSettings, cut_at_stop, generate
from axr.inference.model import LoadedModel
from axr.inference.prompts import PromptBuilder

GRADIO_MISSING = (
    '--gradio needs the gradio package, which is not installed: pip install "axr[gradio]" '
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


@dataclass(frozen=True)
class GradioOptions:
    """Where and how the page is served: Axolotl's ``gradio_*`` keys (``share`` off by default here:
    a public link is a choice to make, not a default)."""

    title: str = "axr inference"
    share: bool = False
    server_name: str = "127.0.0.1"
    server_port: int | None = None

    @staticmethod
    def page_settings(cfg: Any, settings: GenerationSettings) -> GenerationSettings:
        """The sliders start at ``gradio_max_new_tokens``/``gradio_temperature`` when set, else at
        the command's flags."""
        from dataclasses import replace

        return replace(
            settings,
            max_new_tokens=cfg.gradio_max_new_tokens or settings.max_new_tokens,
            temperature=settings.temperature if cfg.gradio_temperature is None else cfg.gradio_temperature,
        )

    @classmethod
    def from_config(cls, cfg: Any) -> GradioOptions:
        return cls(
            title=cfg.gradio_title or cls.title,
            share=bool(cfg.gradio_share),
            server_name=cfg.gradio_server_name or cls.server_name,
            server_port=cfg.gradio_server_port,
        )


def _text_of(content: Any) -> str:
    """A chat message's content as gradio hands it back: a string, or parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(_text_of(part) for part in content)
    return str(content)


def gradio_app(
    loaded: LoadedModel, builder: PromptBuilder, settings: GenerationSettings, title: str = "axr inference"
) -> Any:
    """The page: a chat (the history rendered by the training chat template at each turn) for a
    conversation dataset, else a prompt box rendered by the dataset's prompt format; both stream."""
    import threading
    from dataclasses import replace

    import gradio as gr
    from transformers import TextIteratorStreamer

    def stream(input_ids: Any, max_new_tokens: float, temperature: float) -> Any:
        chosen = replace(settings, max_new_tokens=int(max_new_tokens), temperature=float(temperature))
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(
            target=generate,
            args=(loaded, input_ids, chosen),
            kwargs={"streamer": streamer, "stop_texts": builder.stop_texts},
        )
        worker.start()
        produced = ""
        for piece in streamer:
            produced += piece
            yield cut_at_stop(produced, builder.stop_texts)
        worker.join()

    # Typed as ChatInterface declares it (lists are invariant, so list[Slider] is refused).
    sliders: list[str | gr.components.Component] = [
        gr.Slider(1, 4096, value=settings.max_new_tokens, step=1, label="max_new_tokens"),
        gr.Slider(0.0, 2.0, value=settings.temperature, label="temperature (0 = greedy)"),
    ]
    if builder.is_chat:

        def chat(message: str, history: list[Any], max_new_tokens: float, temperature: float) -> Any:
            turns = [(str(turn["role"]), _text_of(turn["content"]).strip()) for turn in history]
            prompt = builder.render_messages([*turns, ("user", message)])
            yield from stream(prompt.input_ids, max_new_tokens, temperature)

        return gr.ChatInterface(
            fn=chat, additional_inputs=sliders, title=title, description=loaded.describe(), api_name="chat"
        )

    def respond(text: str, max_new_tokens: float, temperature: float) -> Any:
        yield from stream(builder.render_input(text).input_ids, max_new_tokens, temperature)

    return gr.Interface(
        fn=respond,
        inputs=[gr.Textbox(lines=4, label="Prompt"), *sliders],
        outputs=gr.Textbox(label="Output"),
        title=title,
        description=loaded.describe(),
        api_name="predict",
    )


def launch_gradio(
    loaded: LoadedModel,
    builder: PromptBuilder,
    settings: GenerationSettings,
    options: GradioOptions | None = None,
    *,
    block: bool = True,
) -> Any:
    """Serve the page (``block=False``: return the running app, e.g. for a test to close)."""
    if importlib.util.find_spec("gradio") is None:
        raise AxrError(GRADIO_MISSING)
    options = options or GradioOptions()
    app = gradio_app(loaded, builder, settings, options.title)
    app.queue().launch(
        server_name=options.server_name,
        server_port=options.server_port,
        share=options.share,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app
