"""``axr inference --gradio``: the page served on 127.0.0.1 and driven with gradio_client.

gradio is an optional extra (``pip install "axr[gradio]"``, in ``make install``); the test needs it
and gradio_client, and fails (not skips) without them when ``AXR_REQUIRE_GRADIO=1`` (CI sets it).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from axr.config import load_config
from axr.inference import GenerationSettings, PromptBuilder, generate, load_for_inference
from test_inference import CHAT_ROWS, write_config


def _gradio() -> None:
    if os.environ.get("AXR_REQUIRE_GRADIO") == "1":
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    else:
        pytest.importorskip("gradio")
        pytest.importorskip("gradio_client")


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def test_the_gradio_page_streams_answers_and_keeps_the_chat_history(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    _gradio()
    from gradio_client import Client

    from axr.inference.session import GradioOptions, launch_gradio

    port = _free_port()
    top = (
        'gradio_title = "tiny chat"\ngradio_server_name = "127.0.0.1"\n'
        f"gradio_server_port = {port}\ngradio_max_new_tokens = 5\ngradio_temperature = 0.0\n"
        "gradio_share = false"
    )
    dataset = 'type = "chat_template"\nchat_template = "chatml"'
    cfg = load_config(write_config(tmp_path, tiny_llama_dir, CHAT_ROWS, dataset, top=top))
    builder = PromptBuilder.from_config(cfg)
    loaded = load_for_inference(cfg)
    flags = GenerationSettings(max_new_tokens=1024, temperature=0.9, repetition_penalty=1.0)
    settings = GradioOptions.page_settings(cfg, flags)
    assert (settings.max_new_tokens, settings.temperature) == (5, 0.0)
    seen: list[list[tuple[str, str]]] = []
    original = builder.render_messages

    def recording(messages: Any) -> Any:
        seen.append(list(messages))
        return original(messages)

    builder.render_messages = recording  # type: ignore[method-assign]
    app = launch_gradio(loaded, builder, settings, GradioOptions.from_config(cfg), block=False)
    try:
        assert app.title == "tiny chat"
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        first = client.predict("Hi", 5, 0.0, api_name="/chat")
        greedy = GenerationSettings(max_new_tokens=5, temperature=0, repetition_penalty=1.0)
        expected = generate(
            loaded, original([("user", "Hi")]).input_ids, greedy, stop_texts=builder.stop_texts
        )
        assert first == expected
        assert seen[0] == [("user", "Hi")]
        # The sliders start at gradio_max_new_tokens and gradio_temperature.
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/chat"]
        assert [parameter["parameter_default"] for parameter in api["parameters"][1:]] == [5, 0.0]
        # The session keeps the conversation: the second prompt is rendered after the first turn.
        job = client.submit("Again", 5, 0.0, api_name="/chat")
        second = job.result()
        assert seen[1] == [("user", "Hi"), ("assistant", first.strip()), ("user", "Again")]
        expected = generate(loaded, original(seen[1]).input_ids, greedy, stop_texts=builder.stop_texts)
        assert second == expected
        streamed = job.outputs()
        assert streamed
        assert streamed[-1] == second
        assert all(second.startswith(part) for part in streamed)
    finally:
        app.close()
