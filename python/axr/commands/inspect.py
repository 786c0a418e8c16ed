"""``axr inspect CONFIG|STORE [-n N] [--index I] [--ids]``: decoded prepared samples, trained tokens marked.

Each sample names the row it came from (``file:line``, recorded in the store). Trained tokens
are green on a terminal and wrapped in ``[[...]]`` otherwise; ``--ids``
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
    from axr.data._format import sample_source
    from axr.errors import ConfigError

    store = _store_path(args.target, args.split, args.overrides)
    from axr.data._format import read_meta
    from axr.data.preference_store import is_preference_store

    if is_preference_store(read_meta(store)):
        if args.doctor:
            raise ConfigError("--doctor: not supported yet on preference stores (rl)")
        return _pairs(store, args)
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
    for index in indices:
        input_ids, labels = dataset[index]
        ids = [int(token) for token in input_ids]
        trained = [int(label) != -100 for label in labels]
        _, file, line = sample_source(dataset.path, dataset.meta, index % len(dataset))
        print(f"\n--- sample {index}: {len(ids)} tokens, {sum(trained)} trained (source {file}:{line}) ---")
        print(render_marked(tokenizer, ids, trained, colour=colour))
        if args.ids:
            print(render_ids(tokenizer, ids, [int(label) for label in labels]))
    return 0


def _store_tokenizer(meta: dict[str, Any]) -> Any:
    """The tokenizer a preference store's ids belong to: the config's, with its added tokens."""
    from tokenizers import AddedToken, Tokenizer

    options = meta["options"]
    tokenizer = Tokenizer.from_file(str(Path(options["tokenizer_dir"]) / "tokenizer.json"))
    tokenizer.add_special_tokens(
        [AddedToken(text, special=True) for text in options["special_tokens"].values()]
    )
    tokenizer.add_tokens(options["tokens"])
    return tokenizer


def _pairs(store: Path, args: argparse.Namespace) -> int:
    """Units of a preference store: a pair's chosen and rejected (or a KTO row with its label)."""
    from axr.data.preference_store import read_preference_store
    from axr.errors import ConfigError

    data = read_preference_store(store)
    tokenizer = _store_tokenizer(data.meta)
    what = "pairs" if data.per_unit == 2 else "rows"
    indices = args.index if args.index else list(range(min(args.n, len(data))))
    for index in indices:
        if not -len(data) <= index < len(data):
            raise ConfigError(f"--index {index}: the store has {len(data)} {what}")
    colour = sys.stdout.isatty()
    print(f"{store}: {len(data):,} {what}, {data.meta['tokens']:,} tokens")
    datasets = data.meta["datasets"]
    for index in indices:
        unit = index % len(data)
        row = data.row_of(unit)
        dataset = 0
        while row >= datasets[dataset]["units"]:
            row -= datasets[dataset]["units"]
            dataset += 1
        source = f"{datasets[dataset]['key']} ({datasets[dataset]['path']}), row {row + 1}"
        head = "pair" if data.per_unit == 2 else "row"
        print(f"\n=== {head} {index}: {source} ===")
        for sequence in data.sequences_of(unit):
            ids_array, labels_array = data.sample(sequence)
            ids, labels = ids_array.tolist(), labels_array.tolist()
            trained = [label != -100 for label in labels]
            if data.desirable is not None:
                name = "desirable" if data.desirable[sequence] else "undesirable"
            else:
                name = "chosen" if sequence % 2 == 0 else "rejected"
            print(f"--- {name}: {len(ids)} tokens, {sum(trained)} trained ---")
            print(render_marked(tokenizer, ids, trained, colour=colour))
            if args.ids:
                print(render_ids(tokenizer, ids, labels))
    return 0


def _runs(trained: list[bool]) -> list[tuple[int, int, bool]]:
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for position in range(1, len(trained) + 1):
        if position == len(trained) or trained[position] != trained[start]:
            runs.append((start, position, trained[start]))
            start = position
    return runs


def render_marked(tokenizer: Any, ids: list[int], trained: list[bool], *, colour: bool) -> str:
    """The text of the tokens with trained runs marked; runs are cut out of prefix decodes so the
    text reads exactly as the whole sample decodes (no spaces lost at run boundaries)."""
    pieces: list[str] = []
    previous = ""
    for run_start, run_end, is_trained in _runs(trained):
        decoded = tokenizer.decode(ids[:run_end], skip_special_tokens=False)
        if decoded.startswith(previous):
            text = decoded[len(previous) :]
        else:  # a multi-byte character split across runs: decode the run on its own
            text = tokenizer.decode(ids[run_start:run_end], skip_special_tokens=False)
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


def render_ids(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    """Every token as ``piece(id, label)``, as Axolotl's debug output prints them."""
    return " ".join(
        f"{tokenizer.id_to_token(token)}({token}, {label})" for token, label in zip(ids, labels, strict=True)
    )
