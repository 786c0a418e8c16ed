"""Write the bundled sample data: examples/data/alpaca_sample.jsonl and chat_sample.jsonl.

Deterministic (fixed seed): running it again gives the same bytes, so the
committed files can be checked against it. The rows are small synthetic tasks
with exact answers (arithmetic, capitals, word reversal, unit conversion,
sorting) so that a tiny model fine-tuned on them shows a falling loss.

    python examples/data/make_samples.py            # rewrite both files
    python examples/data/make_samples.py --check    # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240301
ALPACA_ROWS = 300
CHAT_ROWS = 100

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasília",
    "Argentina": "Buenos Aires",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "India": "New Delhi",
    "China": "Beijing",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Mexico": "Mexico City",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Vietnam": "Hanoi",
    "Thailand": "Bangkok",
    "Morocco": "Rabat",
    "New Zealand": "Wellington",
}

WORDS = [
    "planet", "garden", "window", "silver", "rocket", "castle", "forest", "bridge", "pencil", "orange",
    "summer", "thunder", "harbor", "lantern", "marble", "meadow", "compass", "violin", "glacier", "canyon",
]  # fmt: skip

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in one sentence.",
    "You are a patient tutor who shows the result clearly.",
]

Task = Callable[[random.Random], tuple[str, str, str]]


def arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    operation = rng.choice(["+", "-", "*"])
    result = {"+": a + b, "-": a - b, "*": a * b}[operation]
    if rng.random() < 0.5:
        return f"What is {a} {operation} {b}?", "", f"{a} {operation} {b} = {result}."
    instruction = {
        "+": "Add the two numbers.",
        "-": "Subtract the second number from the first.",
        "*": "Multiply the two numbers.",
    }[operation]
    return instruction, f"{a} and {b}", str(result)


def capital(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    if rng.random() < 0.5:
        return f"What is the capital of {country}?", "", f"The capital of {country} is {city}."
    return "Name the capital city of the given country.", country, city


def reverse_word(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    if rng.random() < 0.5:
        return f'Spell the word "{word}" backwards.', "", f'"{word}" backwards is "{word[::-1]}".'
    return "Reverse the letters of the given word.", word, word[::-1]


def convert_units(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choice(["km", "kg", "celsius"])
    if kind == "km":
        value = rng.randint(1, 40) / 2
        meters = int(value * 1000)
        if rng.random() < 0.5:
            return f"Convert {value:g} kilometers to meters.", "", f"{value:g} kilometers is {meters} meters."
        return "Convert the distance to meters.", f"{value:g} km", f"{meters} meters"
    if kind == "kg":
        value = rng.randint(1, 20)
        grams = value * 1000
        if rng.random() < 0.5:
            return f"How many grams are in {value} kilograms?", "", f"{value} kilograms is {grams} grams."
        return "Convert the mass to grams.", f"{value} kg", f"{grams} grams"
    celsius = rng.randrange(-20, 45, 5)
    fahrenheit = celsius * 9 / 5 + 32
    if rng.random() < 0.5:
        return (
            f"Convert {celsius} degrees Celsius to Fahrenheit.",
            "",
            f"{celsius} °C is {fahrenheit:g} °F.",
        )
    return "Convert the temperature from Celsius to Fahrenheit.", f"{celsius} °C", f"{fahrenheit:g} °F"


def sort_numbers(rng: random.Random) -> tuple[str, str, str]:
    numbers = rng.sample(range(1, 100), rng.randint(3, 6))
    listed = ", ".join(map(str, numbers))
    ordered = ", ".join(map(str, sorted(numbers)))
    if rng.random() < 0.5:
        return f"Sort these numbers from smallest to largest: {listed}.", "", ordered
    return "Sort the numbers in ascending order.", listed, ordered


TASKS: list[Task] = [arithmetic, capital, reverse_word, convert_units, sort_numbers]


def alpaca_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for index in range(ALPACA_ROWS):
        instruction, given, output = TASKS[index % len(TASKS)](rng)
        rows.append({"instruction": instruction, "input": given, "output": output})
    rng.shuffle(rows)
    return rows


def _question(instruction: str, given: str) -> str:
    return f"{instruction}\n{given}" if given else instruction


def chat_rows(rng: random.Random) -> list[dict[str, list[dict[str, str]]]]:
    rows = []
    for _ in range(CHAT_ROWS):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _turn in range(rng.randint(1, 4)):
            instruction, given, output = rng.choice(TASKS)(rng)
            messages.append({"role": "user", "content": _question(instruction, given)})
            messages.append({"role": "assistant", "content": output})
        rows.append({"messages": messages})
    return rows


def render(rows: list) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing")
    args = parser.parse_args()
    rng = random.Random(SEED)
    outputs = {
        HERE / "alpaca_sample.jsonl": render(alpaca_rows(rng)),
        HERE / "chat_sample.jsonl": render(chat_rows(rng)),
    }
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)} (run {Path(__file__).name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
