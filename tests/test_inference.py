"""`axr inference`: prompts are the training ids up to the answer; generation feeds exactly those ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import PreparedDataset, preprocess
from axr.inference import GenerationSettings, PromptBuilder, generate, load_for_inference

ALPACA_ROWS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Translate to French: cat", "input": "", "output": " le chat"},
    {"instruction": "Reverse the word.", "input": "stressed", "output": "desserts\nDone."},
    {"instruction": "Ünïcödé and emoji 🎉?", "input": "", "output": "Oui 🎉"},
]

CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6, of course."},
        ]
    },
    {"messages": [{"role": "user", "content": "Émoji 🎉 ok?"}, {"role": "assistant", "content": " Sure 🎉"}]},
]


def write_config(
    root: Path, base_model: Path, rows: list[dict[str, Any]], dataset: str, top: str = ""
) -> Path:
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    config = root / "config.toml"
    config.write_text(
        f'base_model = "{base_model}"\nsequence_len = 512\nshuffle_merged_datasets = false\n'
        f'dataset_prepared_path = "{root / "prepared"}"\noutput_dir = "{root / "out"}"\n{top}\n'
        f'[[datasets]]\npath = "{data}"\n{dataset}\n'
    )
    return config


def prepared_rows(config: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    result = preprocess(load_config(config), progress=False)
    dataset = PreparedDataset(result.stores["train"])
    return [dataset[index] for index in range(len(dataset))]


def last_trained_run_start(labels: np.ndarray) -> int:
    """Where the final answer starts: the first token of the last run of trained tokens."""
    trained = labels != -100
    index = len(trained)
    while index > 0 and not trained[index - 1]:
        index -= 1
    while index > 0 and trained[index - 1]:
        index -= 1
    return index


def test_instruction_prompt_ids_are_the_preprocessed_ids_before_the_output(
    tmp_path: Path, mistral_tokenizer_dir: Path
) -> None:
    config = write_config(tmp_path, mistral_tokenizer_dir, ALPACA_ROWS, 'type = "alpaca"')
    prepared = prepared_rows(config)
    assert len(prepared) == len(ALPACA_ROWS)
    builder = PromptBuilder.from_config(load_config(config))
    for row, (input_ids, labels) in zip(ALPACA_ROWS, prepared, strict=True):
        first_trained = int(np.argmax(labels != -100))
        prompt = builder.render_row(row)
        assert prompt.input_ids.tolist() == input_ids[:first_trained].tolist(), row
        # The output-free row the CLI builds from the user's text renders the same ids.
        prompt_only = {key: value for key, value in row.items() if key != "output"}
        assert builder.render_row(prompt_only).input_ids.tolist() == prompt.input_ids.tolist()
        assert builder.render_row(prompt_only).empty_fields == ["output"]
        if not row["input"]:
            assert builder.render_text(row["instruction"]).input_ids.tolist() == prompt.input_ids.tolist()


def test_train_on_inputs_does_not_change_the_prompt(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    plain = write_config(tmp_path, mistral_tokenizer_dir, ALPACA_ROWS, 'type = "alpaca:chatml"')
    trained_inputs = load_config(plain, ["--train_on_inputs=true"])
    for row in ALPACA_ROWS:
        expected = PromptBuilder.from_config(load_config(plain)).render_row(row).text
        assert PromptBuilder.from_config(trained_inputs).render_row(row).text == expected
        assert expected.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("dataset", "top"),
    [
        ('type = "chat_template"\nchat_template = "chatml"', ""),
        # The top-level template becomes the tokenizer's, which the dataset uses by default.
        ('type = "chat_template"', 'chat_template = "chatml"'),
    ],
    ids=["dataset-template", "top-level-template"],
)
def test_chat_prompt_ids_are_the_preprocessed_ids_before_the_last_answer(
    tmp_path: Path, mistral_tokenizer_dir: Path, dataset: str, top: str
) -> None:
    from transformers import AutoTokenizer

    from axr._native import chat_style_source

    config = write_config(tmp_path, mistral_tokenizer_dir, CHAT_ROWS, dataset, top=top)
    prepared = prepared_rows(config)
    assert len(prepared) == len(CHAT_ROWS)
    builder = PromptBuilder.from_config(load_config(config))
    assert builder.is_chat
    reference = AutoTokenizer.from_pretrained(mistral_tokenizer_dir)
    template = chat_style_source("chatml")
    for row, (input_ids, labels) in zip(CHAT_ROWS, prepared, strict=True):
        prompt = builder.render_row(row)
        assert prompt.input_ids.tolist() == input_ids[: last_trained_run_start(labels)].tolist(), row
        # The same history given as messages (the interactive loop's path) renders the same prompt.
        history = [(message["role"], message["content"]) for message in row["messages"][:-1]]
        assert builder.render_messages(history).input_ids.tolist() == prompt.input_ids.tolist()
        # And it is transformers' generation prompt for that template.
        expected = reference.apply_chat_template(
            row["messages"][:-1], chat_template=template, add_generation_prompt=True, tokenize=False
        )
        assert prompt.text == expected


def test_raw_prompter_sends_the_text_after_bos(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    config = write_config(tmp_path, mistral_tokenizer_dir, ALPACA_ROWS, 'type = "alpaca"')
    builder = PromptBuilder.from_config(load_config(config), prompter="none")
    text = "Once upon a time 🎉 {not json"
    expected = AutoTokenizer.from_pretrained(mistral_tokenizer_dir)(text)["input_ids"]
    assert builder.render_input(text).input_ids.tolist() == expected


def test_a_json_prompt_is_a_row_of_the_dataset_schema(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    config = write_config(tmp_path, mistral_tokenizer_dir, ALPACA_ROWS, 'type = "alpaca"')
    builder = PromptBuilder.from_config(load_config(config))
    row = {"instruction": "Add the numbers.", "input": "2 and 3"}
    assert builder.render_input(json.dumps(row)).text == builder.render_row(row).text
    assert "### Input:\n2 and 3" in builder.render_input(json.dumps(row)).text


def test_greedy_generation_continues_exactly_the_rendered_ids(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import torch

    config = write_config(tmp_path, tiny_llama_dir, ALPACA_ROWS, 'type = "alpaca"')
    cfg = load_config(config)
    loaded = load_for_inference(cfg)
    prompt = PromptBuilder.from_config(cfg).render_text("Name a colour.")
    settings = GenerationSettings(max_new_tokens=6, temperature=0, repetition_penalty=1.0)
    text = generate(loaded, prompt.input_ids, settings)
    # Reference: argmax of a plain forward pass (no cache), one token at a time, from the same ids.
    ids = torch.as_tensor(prompt.input_ids.astype(np.int64)).unsqueeze(0)
    with torch.no_grad():
        for _ in range(6):
            logits = loaded.model(input_ids=ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    new_ids = ids[0, len(prompt.input_ids) :]
    eos = loaded.tokenizer.eos_token_id
    if eos in new_ids.tolist():
        new_ids = new_ids[: new_ids.tolist().index(eos) + 1]
    assert text == loaded.tokenizer.decode(new_ids, skip_special_tokens=True)


def test_cli_prints_what_it_loaded_and_streams_the_answer(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_llama_dir, ALPACA_ROWS, 'type = "alpaca"')
    argv = ["inference", str(config), "--prompt", "Name a colour.", "--max_new_tokens=4", "--temperature=0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    loaded_line = next(line for line in captured.err.splitlines() if line.startswith("axr inference: loaded"))
    for part in (f"base {tiny_llama_dir}", "adapter none", "dtype float32", "device cpu", "attention sdpa"):
        assert part in loaded_line
    assert captured.out.strip()


def test_interactive_chat_keeps_its_history(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import io

    from axr.inference import interactive

    dataset = 'type = "chat_template"\nchat_template = "chatml"'
    config = write_config(tmp_path, tiny_llama_dir, CHAT_ROWS, dataset)
    cfg = load_config(config)
    builder = PromptBuilder.from_config(cfg)
    seen: list[str] = []
    original = builder.render_messages

    def recording(messages: Any) -> Any:
        rendered = original(messages)
        seen.append(rendered.text)
        return rendered

    builder.render_messages = recording  # type: ignore[method-assign]
    lines = iter(["Hi", "/reset", "Again"])

    def read(_: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    settings = GenerationSettings(max_new_tokens=3, temperature=0)
    interactive(load_for_inference(cfg), builder, settings, read=read, out=io.StringIO())
    assert seen[0] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    # After /reset the history starts over.
    assert seen[1] == "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompter", "none", "--gradio"], "gradio"),
        (["--dataset", "3"], "--dataset 3"),
        (["--top_p=0"], "--top_p"),
        (["--adapter=lora", "--lora_target_linear=true"], "no trained adapter"),
        (["--lora_model_dir", "/nonexistent"], "adapter_config.json"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    mistral_tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    import importlib.util

    # As if gradio were not installed, whatever this environment holds.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name, *a)
    )
    config = write_config(tmp_path, mistral_tokenizer_dir, ALPACA_ROWS, 'type = "alpaca"', top='adapter = ""')
    assert main(["inference", str(config), "--prompt", "x", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


TRAINED_QUESTIONS = [
    ("What colour is the sky?", "Blue as the sea."),
    ("Name a fruit.", "Apple pie is sweet."),
    ("Capital of France?", "Paris, in France."),
    ("What do cats say?", "Meow meow meow."),
    ("Opposite of hot?", "Cold like ice."),
    ("Two plus two?", "Four is the answer."),
    ("Best season?", "Summer with sun."),
    ("A musical instrument?", "The violin sings."),
]


@pytest.mark.slow
def test_a_model_trained_by_axr_train_answers_through_axr_inference(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"instruction": question, "input": "", "output": answer} for question, answer in TRAINED_QUESTIONS
    ]
    training = (
        'micro_batch_size = 8\nmax_steps = 40\nlearning_rate = 0.005\nlr_scheduler = "constant"\n'
        'warmup_steps = 2\nsave_strategy = "no"\nsample_packing = false'
    )
    config = write_config(tmp_path, tiny_llama_dir, rows, 'type = "alpaca"', top=training)
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    output_dir = tmp_path / "out"
    for question, answer in TRAINED_QUESTIONS[2:5]:
        argv = ["inference", str(config), f"--base_model={output_dir}", "--prompt", question]
        greedy = ["--temperature=0", "--repetition_penalty=1.0", "--max_new_tokens=12"]
        assert main([*argv, *greedy]) == 0
        assert capsys.readouterr().out.strip() == answer


def test_generation_stops_at_a_stop_text_and_leaves_it_out(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import io

    config = write_config(tmp_path, tiny_llama_dir, ALPACA_ROWS, 'type = "alpaca"')
    cfg = load_config(config)
    loaded = load_for_inference(cfg)
    prompt = PromptBuilder.from_config(cfg).render_text("Name a colour.")
    settings = GenerationSettings(max_new_tokens=12, temperature=0, repetition_penalty=1.0)
    free = generate(loaded, prompt.input_ids, settings)
    # A stop text taken from the middle of what the model writes anyway.
    middle = len(free) // 2
    stop = free[middle : middle + 3]
    assert stop.strip()
    streamed = io.StringIO()
    stopped = generate(loaded, prompt.input_ids, settings, stream=streamed, stop_texts=[stop])
    assert stopped == free[: free.find(stop)]
    assert streamed.getvalue() == stopped + "\n"


def test_streamer_holds_back_a_marker_split_over_pieces(mistral_tokenizer_dir: Path) -> None:
    import io

    from transformers import AutoTokenizer

    from axr.inference.generate import _text_streamer

    out = io.StringIO()
    streamer = _text_streamer(AutoTokenizer.from_pretrained(mistral_tokenizer_dir), out, ["<|im_end|>"])
    streamer.on_finalized_text("Hello <|im")
    assert out.getvalue() == "Hello "
    streamer.on_finalized_text("_end|>\n<|im_start|>user")
    streamer.on_finalized_text("more", stream_end=True)
    assert out.getvalue() == "Hello \n"


def test_chat_formats_stop_at_their_end_of_turn(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    dataset = 'type = "chat_template"\nchat_template = "chatml"'
    config = write_config(tmp_path, mistral_tokenizer_dir, CHAT_ROWS, dataset)
    assert "<|im_end|>" in PromptBuilder.from_config(load_config(config)).stop_texts
