"""Hostile config files fail fast with a clear error: alias bombs, huge files, huge lists and strings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from axr.config import load_config
from axr.config.limits import MAX_LIST_ITEMS, MAX_STRING_CHARS
from axr.errors import ConfigError

FAST = 5.0  # seconds; each of these took a minute or more before the limits


def alias_bomb(levels: int = 9) -> str:
    """The reproduction: each level lists the previous one nine times (9**9 strings in all)."""
    lines = [
        "base_model: m",
        'l0: &l0 ["q_proj","q_proj","q_proj","q_proj","q_proj","q_proj","q_proj","q_proj","q_proj"]',
    ]
    for level in range(1, levels):
        previous = f"*l{level - 1}"
        lines.append(f"l{level}: &l{level} [{', '.join([previous] * 9)}]")
    lines.append(f"lora_target_modules: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def timed_error(path: Path) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return str(error.value), time.perf_counter() - start


def test_yaml_alias_bomb_in_a_list_key_fails_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    message, seconds = timed_error(path)
    assert seconds < FAST
    assert f"{path}: the YAML stands for more than 100,000 values once its aliases" in message


def test_a_few_ordinary_aliases_still_work(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "base_model: m\nmodules: &modules [q_proj, v_proj]\nlora_target_modules: *modules\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="modules: unknown key"):
        load_config(path)
    path.write_text(
        "base_model: m\ndatasets:\n  - &d {path: a.jsonl, type: alpaca}\n  - *d\n", encoding="utf-8"
    )
    assert [entry.path for entry in load_config(path).datasets] == ["a.jsonl", "a.jsonl"]


def test_a_recursive_alias_is_an_error(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("base_model: m\ntokens: &t [a, *t]\n", encoding="utf-8")
    message, _ = timed_error(path)
    assert "refers to a value that contains itself" in message


def test_a_100_mb_toml_string_fails_fast(tmp_path):
    path = tmp_path / "huge.toml"
    with path.open("w", encoding="utf-8") as file:
        file.write('base_model = "m"\nchat_template_jinja = "')
        chunk = "x" * (1 << 20)
        for _ in range(100):
            file.write(chunk)
        file.write('"\n')
    message, seconds = timed_error(path)
    assert seconds < FAST
    assert f"{path}: the config file is 104,857,6" in message
    assert "the limit is 4,194,304" in message


def test_a_12_million_element_array_fails_fast(tmp_path):
    path = tmp_path / "array.toml"
    with path.open("w", encoding="utf-8") as file:
        file.write('base_model = "m"\ntokens = [')
        file.write("1," * 12_000_000)
        file.write("]\n")
    message, seconds = timed_error(path)
    assert seconds < FAST
    assert "the config file is" in message


def test_long_lists_and_strings_inside_the_size_limit_name_the_key(tmp_path):
    path = tmp_path / "list.toml"
    path.write_text('base_model = "m"\ntokens = [' + '"a",' * (MAX_LIST_ITEMS + 1) + "]\n", encoding="utf-8")
    message, _ = timed_error(path)
    assert (
        f"{path}: tokens: a list of {MAX_LIST_ITEMS + 1:,} items; the limit is {MAX_LIST_ITEMS:,}" in message
    )
    path = tmp_path / "string.yaml"
    path.write_text(
        "base_model: m\ndatasets:\n  - path: a.jsonl\n    system_prompt: "
        + "y" * (MAX_STRING_CHARS + 1)
        + "\n"
    )
    message, _ = timed_error(path)
    assert f"{path}: datasets[0].system_prompt: a string of {MAX_STRING_CHARS + 1:,} characters" in message
