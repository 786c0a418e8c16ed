"""A deterministic corpus of awkward conversations, generated at run time.

Used by the chat-template parity tests and the conversation benchmark: 1-12
messages, with or without a system message, unicode, emoji, code blocks,
empty strings, whitespace at the edges, and very long turns. Roles alternate
user/assistant so every built-in style (some insist on alternation) accepts
every row.
"""

from __future__ import annotations

import random

_WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "answer",
    "questions",
    "about",
    "data",
    "packing",
    "tokens",
    "and",
    "masks",
    "while",
    "keeping",
    "inference",
    "and",
    "training",
    "aligned",
    "across",
    "every",
    "template",
]

_UNICODE = [
    "Ünïcödé ßtraße façade naïve",
    "中文的对话测试，包含标点。",
    "日本語のテキストとカタカナ",
    "Ελληνικά και кириллица",
    "عربي مع أرقام ١٢٣",
    "zero\u200bwidth and non\u00a0breaking",
]

_EMOJI = ["😀", "🎉", "👨‍👩‍👧", "🇫🇷", "🤖💬", "✨✅"]

_CODE = [
    "```python\ndef add(a, b):\n    return a + b\n```",
    '```rust\nfn main() {\n    println!("{}", 1 + 1);\n}\n```',
    "Run:\n\n    cargo test -p axr-core\n\n\tthen check\tthe output.",
    '```json\n{"key": [1, 2, 3], "nested": {"a": null}}\n```',
]


def _sentence(rng: random.Random, low: int = 3, high: int = 18) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", ":", ""])


def _content(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.06:
        return ""
    if kind < 0.12:
        return rng.choice([" ", "\n", "  \t "])
    if kind < 0.22:
        text = _sentence(rng)
        return rng.choice(["  ", "\n", " \n", "\t"]) + text + rng.choice(["  ", "\n", "\n\n", " "])
    if kind < 0.32:
        return f"{_sentence(rng)} {rng.choice(_UNICODE)}"
    if kind < 0.40:
        return f"{rng.choice(_EMOJI)} {_sentence(rng)} {rng.choice(_EMOJI)}"
    if kind < 0.50:
        return f"{_sentence(rng)}\n\n{rng.choice(_CODE)}"
    if kind < 0.55:
        # A very long turn: a few thousand characters over many paragraphs.
        return "\n\n".join(
            " ".join(_sentence(rng, 8, 30) for _ in range(6)) for _ in range(rng.randint(5, 12))
        )
    return " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))


def generate_conversations(count: int = 240, *, seed: int = 0) -> list[list[dict[str, str]]]:
    """``count`` conversations as OpenAI-style message lists (role/content)."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": _content(rng) if rng.random() < 0.8 else ""})
        for index in range(rng.randint(1, 12)):
            role = "user" if index % 2 == 0 else "assistant"
            messages.append({"role": role, "content": _content(rng)})
        conversations.append(messages)
    return conversations


def as_sharegpt(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same conversation in sharegpt's ``{from, value}`` shape."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[message["role"]], "value": message["content"]} for message in messages]
