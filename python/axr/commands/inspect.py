"""``axr inspect CONFIG|STORE [-n N] [--index I] [--ids]``: decoded prepared samples, trained tokens marked.

Trained tokens are green on a terminal and wrapped in ``[[...]]`` otherwise; ``--ids``
adds every token as ``piece(id, label)`` with label -100 where it is not trained, which
is what Axolotl's ``preprocess --debug`` shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_GREEN, _RESET = "\x1b[32m", "\x1b[0m"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print prepared samples decoded, trained tokens marked",
        description=(
            "Print samples of a prepared store (a store folder, or the store of CONFIG, built first if "
            "missing) decoded with the store's tokenizer. Trained tokens are green on a terminal, "
            "[[bracketed]] otherwise."
        ),
    )
    parser.add_argument("target", help="a config file, or a prepared store folder")
    parser.add_argument("-n", type=int, default=3, help="how many samples from the start (default 3)")
    parser.add_argument("--index", type=int, action="append", help="show this sample (repeatable)")
    parser.add_argument("--ids", action="store_true", help="also print every token as piece(id, label)")
    parser.add_argument("--split", default="train", help="train or eval, for a config or prepared root")
    parser.add_argument(
        "--doctor", action="store_true", help="report data problems (see docs/chat.md) instead of samples"
    )
    parser.add_argument("--json", action="store_true", help="with --doctor: print the report as JSON")
    parser.set_defaults(func=run, accepts_overrides=True)


def _store_path(target: str, split: str, overrides: list[str]) -> Path:
    path = Path(target)
    if path.is_dir():
        return path / split if (path / split / "meta.json").is_file() else path
    from axr.config import load_config
    from axr.data import preprocess
    from axr.errors import ConfigError

    result = preprocess(load_config(target, overrides), progress=False)
    if split not in result.stores:
        raise ConfigError(
            f"{target}: the prepared data has no {split!r} store (it has {', '.join(result.stores)})"
        )
    return result.stores[split]


def run(args: argparse.Namespace) -> int:
    from tokenizers import Tokenizer

    from axr.data import PreparedDataset
    from axr.errors import AxrError, ConfigError

    store = _store_path(args.target, args.split, args.overrides)
    if args.doctor:
        return _doctor(store, as_json=args.json)
    dataset = PreparedDataset(store)
    tokenizer = Tokenizer.from_file(str(dataset.tokenizer_dir / "tokenizer.json"))
    indices = args.index if args.index else list(range(min(args.n, len(dataset))))
    colour = sys.stdout.isatty()
    print(f"{dataset.path}: {len(dataset):,} samples, {dataset.meta['tokens']:,} tokens")
    for index in indices:
        if not -len(dataset) <= index < len(dataset):
            raise ConfigError(f"--index {index}: the store has {len(dataset)} samples")
    samples = {index: dataset[index] for index in indices}
    try:
        conversations = _conversation_rows(dataset.path, samples)
    except AxrError as error:  # sources no longer readable (moved, parquet): whole samples
        print(f"(turns not shown: {error})")
        conversations = {}
    for index in indices:
        input_ids, labels = samples[index]
        ids = [int(token) for token in input_ids]
        trained = [int(label) != -100 for label in labels]
        print(f"\n--- sample {index}: {len(ids)} tokens, {sum(trained)} trained ---")
        found = conversations.get(index)
        if found is None:
            print(render_marked(tokenizer, ids, trained, colour=colour))
        else:
            print(f"(source {found[0]})")
            for role, start, end in found[1]:
                text = render_marked(tokenizer, ids, trained, colour=colour, start=start, end=end)
                print(f"[{role}] {text}")
        if args.ids:
            print(render_ids(tokenizer, ids, [int(label) for label in labels]))
    return 0


def _runs(trained: list[bool]) -> list[tuple[int, int, bool]]:
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for position in range(1, len(trained) + 1):
        if position == len(trained) or trained[position] != trained[start]:
            runs.append((start, position, trained[start]))
            start = position
    return runs


def render_marked(
    tokenizer: Any,
    ids: list[int],
    trained: list[bool],
    *,
    colour: bool,
    start: int = 0,
    end: int | None = None,
) -> str:
    """The text of tokens ``start:end`` with trained runs marked; runs are cut out of prefix decodes
    so the text reads exactly as the whole sample decodes (no spaces lost at run boundaries)."""
    pieces: list[str] = []
    stop = len(ids) if end is None else end
    previous = tokenizer.decode(ids[:start], skip_special_tokens=False) if start else ""
    for run_start, run_end, is_trained in _runs(trained[start:stop]):
        start_at, end_at = start + run_start, start + run_end
        decoded = tokenizer.decode(ids[:end_at], skip_special_tokens=False)
        if decoded.startswith(previous):
            text = decoded[len(previous) :]
        else:  # a multi-byte character split across runs: decode the run on its own
            text = tokenizer.decode(ids[start_at:end_at], skip_special_tokens=False)
        previous = decoded
        if is_trained:
            text = f"{_GREEN}{text}{_RESET}" if colour else f"[[{text}]]"
        pieces.append(text)
    return "".join(pieces)


def _doctor(store: Path, *, as_json: bool) -> int:
    import json

    from axr.data.doctor import diagnose, report_lines

    report = diagnose(store)
    print(json.dumps(report, indent=2) if as_json else "\n".join(report_lines(report)))
    return 0


def _conversation_rows(
    store: Path, samples: dict[int, Any]
) -> dict[int, tuple[str, list[tuple[str, int, int]]]]:
    """For samples of conversation datasets: their source row and turns as ``(role, first token,
    end token)``. A store keeps no sample → row map, so the source rows are encoded again (natively,
    as preprocessing did) until each sample's exact ids are found: the cost of one pass over the
    conversation datasets at most. Samples not found, or whose token offsets the Python tokenizer
    cannot reproduce, are shown whole."""
    from axr.data.doctor import CONVERSATION_TYPES, StoreRows

    rows = StoreRows(store)
    if not any(entry["format"].get("type") in CONVERSATION_TYPES for _, entry in rows.datasets()):
        return {}
    wanted: dict[tuple[int, ...], list[int]] = {}
    for index, (input_ids, _) in samples.items():
        wanted.setdefault(tuple(int(token) for token in input_ids), []).append(index)
    found: dict[int, tuple[str, list[tuple[str, int, int]]]] = {}
    for key, entry in rows.datasets():
        if entry["format"].get("type") not in CONVERSATION_TYPES:
            continue
        for row in rows.rows(entry, key):
            if not wanted:
                return found
            if row is None or tuple(row.ids) not in wanted:
                continue
            starts = rows.token_starts(row)
            indices = wanted.pop(tuple(row.ids))
            if starts is None or not row.turns:
                continue
            turns = _turn_tokens(row, starts)
            for index in indices:
                found[index] = (row.location, turns)
    return found


def _turn_tokens(row: Any, starts: list[int]) -> list[tuple[str, int, int]]:
    """Each turn's tokens: from the end of the previous turn (its end-of-turn text, else its
    content) to the end of its own; template text before a turn's content (role headers) belongs
    to it, and whatever follows the last turn to the last."""
    bounds = []
    for turn in row.turns:
        ends = [end for _, end in turn.content]
        if turn.end_of_turn is not None:
            ends.append(turn.end_of_turn[1])
        bounds.append(max(ends) if ends else None)
    turns: list[tuple[str, int, int]] = []
    first = 0
    for number, (turn, bound) in enumerate(zip(row.turns, bounds, strict=True)):
        if number == len(row.turns) - 1:
            last = len(starts)
        elif bound is None:
            last = first
        else:
            last = next((position for position, byte in enumerate(starts) if byte >= bound), len(starts))
            last = max(last, first)
        turns.append((turn.role, first, last))
        first = last
    return turns


def render_ids(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    """Every token as ``piece(id, label)``, as Axolotl's debug output prints them."""
    return " ".join(
        f"{tokenizer.id_to_token(token)}({token}, {label})" for token, label in zip(ids, labels, strict=True)
    )
