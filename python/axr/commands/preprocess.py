"""``axr preprocess CONFIG [--key=value ...]``: build the prepared stores of a config, then summarise."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="tokenize the config's datasets into a prepared store (reused when nothing changed)",
        description=(
            "Read the datasets of CONFIG, format and tokenize them in parallel and write the prepared "
            "store under dataset_prepared_path/<fingerprint>. An identical second run reuses it. "
            "Any --key=value overrides a top-level config key."
        ),
    )
    parser.add_argument("config", help="the config file (.toml, .yaml or .yml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.add_argument(
        "--no-doctor",
        action="store_true",
        help="do not run the data doctor while tokenizing (an existing store's findings are not shown)",
    )
    parser.add_argument(
        "--verify-encoder",
        type=int,
        default=0,
        metavar="N",
        help="encode the first N texts with both axr's fast encoder and tokenizers; fail on any difference",
    )
    sharding = parser.add_mutually_exclusive_group()
    sharding.add_argument(
        "--shard",
        metavar="I/N",
        help=(
            "build only part I (0-based) of N of a sharded run, reading only its share of the input "
            "bytes (e.g. one Slurm array task each); then run --merge"
        ),
    )
    sharding.add_argument(
        "--merge",
        action="store_true",
        help="join the N parts built with --shard into the store a single run builds",
    )
    parser.add_argument(
        "--keep-parts",
        action="store_true",
        help="keep the parts of a sharded run after the merge (by default the merged store replaces them)",
    )
    parser.set_defaults(func=run, accepts_overrides=True)


def _shard_spec(text: str) -> tuple[int, int]:
    from axr.errors import ConfigError

    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ConfigError(f"--shard: expected I/N (e.g. 0/4 for the first of 4 parts), got {text!r}")
    return int(index), int(count)


def run(args: argparse.Namespace) -> int:
    from axr.config import load_config
    from axr.data import preprocess

    cfg = load_config(args.config, args.overrides)
    if args.verify_encoder < 0:
        raise SystemExit("axr preprocess: --verify-encoder N needs N >= 0")
    progress = False if args.no_progress else None
    if args.shard is not None:
        from axr.data import preprocess_shard

        index, count = _shard_spec(args.shard)
        part = preprocess_shard(
            cfg,
            index,
            count,
            progress=progress,
            verify_encoder=args.verify_encoder,
            doctor=not args.no_doctor,
        )
        for line in part_lines(part):
            print(line)
        return 0
    result = preprocess(
        cfg,
        progress=progress,
        merge=args.merge,
        verify_encoder=args.verify_encoder,
        doctor=not args.no_doctor,
        keep_parts=args.keep_parts,
    )
    for line in summary_lines(result, cfg):
        print(line)
    if cfg.rl is not None:
        if not args.no_doctor:
            print("doctor: not supported yet on preference data (rl); it did not run")
        return 0
    if not args.no_doctor and "train" in result.stores:
        from axr.data.doctor import diagnose, report_lines
        from axr.errors import DataError

        try:
            lines = report_lines(diagnose(result.stores["train"]))
        except DataError as error:  # a reused store built with --no-doctor
            lines = [f"doctor: {error}"]
        for line in lines:
            print(line)
    return 0


def part_lines(part: Any) -> list[str]:
    """The summary of one part of a sharded run."""
    verb = "reused" if part.reused else "built"
    lines = [
        f"{verb} part {part.index}/{part.count} in {part.dir} ({part.bytes / 2**20:,.1f} MiB of input, "
        f"{part.seconds:.1f} s)"
    ]
    for split, counts in (("train", part.train), ("eval", part.eval)):
        if counts is None:
            continue
        lines.append(
            f"{split:<5}  rows read {counts['rows_read']:,}, kept {counts['samples_kept']:,} "
            f"({counts['tokens']:,} tokens); dropped: {_count_text(counts['dropped'])}; "
            f"truncated: {_count_text(counts['truncated'])}; skipped bad rows {counts['skipped_bad_rows']:,}"
        )
    lines.append(
        "next   when every part is built: axr preprocess CONFIG --merge (or axr train CONFIG); "
        "the data doctor runs then"
    )
    return lines


def _count_text(counts: dict[str, int]) -> str:
    return (
        ", ".join(f"{reason.replace('_', ' ')} {count:,}" for reason, count in sorted(counts.items()))
        or "none"
    )


def summary_lines(result: Any, cfg: Any = None) -> list[str]:
    """The end-of-run summary: rows read, kept, dropped and truncated by reason, skipped, tokens, speed."""
    if result.reused:
        head = f"reused {result.root}: same inputs, tokenizer and settings ({result.seconds:.2f} s)"
    else:
        head = f"prepared {result.root} in {result.seconds:.1f} s"
    lines = [head]
    for split, meta in result.metas.items():
        if meta.get("kind") == "preference":
            lines.extend(_preference_lines(split, meta))
            continue
        counts = meta["counts"]
        trainable = 100.0 * meta["trainable_tokens"] / max(meta["tokens"], 1)
        lines.append(
            f"{split:<5}  {meta['samples']:,} samples, {meta['tokens']:,} tokens "
            f"({trainable:.1f}% trained), longest {meta['longest']:,}  [{meta['token_dtype']}]"
        )
        if split == "train" or result.metas.get("train", {}).get("counts") != counts:
            lines.append(
                f"       rows read {counts['rows_read']:,}, kept {counts['samples_kept']:,}; "
                f"dropped: {_count_text(counts['dropped'])}; truncated: {_count_text(counts['truncated'])}; "
                f"skipped bad rows {counts['skipped_bad_rows']:,}"
            )
            if counts.get("documents_split"):
                lines.append(
                    f"       split: {counts['documents_split']:,} documents longer than sequence_len "
                    f"became {counts['chunks_made']:,} chunks"
                )
            if counts.get("tokens_dropped"):
                lines.append(f"       tokens dropped after tokenizing: {counts['tokens_dropped']:,}")
            if counts["rows_outside_shard"] or counts["samples_outside_dataset_shard"]:
                lines.append(
                    f"       outside the selected shard: {counts['rows_outside_shard']:,} rows, "
                    f"{counts['samples_outside_dataset_shard']:,} samples"
                )
            for example in counts["skipped_examples"][:3]:
                lines.append(f"       skipped: {example}")
    if not result.reused and result.seconds > 0:
        tokens = sum(meta["tokens"] for meta in result.metas.values())
        lines.append(f"speed  {tokens / result.seconds:,.0f} tokens/s")
    encoder = getattr(result, "encoder", None)
    if encoder:
        lines.append(_encoder_line(encoder))
    packing = _packing_line(result, cfg)
    if packing:
        lines.append(packing)
    return lines


def _preference_lines(split: str, meta: dict[str, Any]) -> list[str]:
    """A preference store's summary: units (pairs or KTO rows) kept, dropped as over-long, split off."""
    what = "pairs" if meta["per_unit"] == 2 else "rows"
    counts = meta["counts"]
    trainable = 100.0 * meta["trainable_tokens"] / max(meta["tokens"], 1)
    lines = [
        f"{split:<5}  {meta['units']:,} {what} ({meta['samples']:,} sequences), "
        f"{meta['tokens']:,} tokens ({trainable:.1f}% trained), longest {meta['longest']:,}  "
        f"[{meta['token_dtype']}]"
    ]
    if split == "train" or "val_split" not in counts:
        room = "together, packed," if meta["sample_packing"] else "each"
        dropped = counts["dropped"].get("longer_than_sequence_len", 0)
        line = (
            f"       {what} read {counts['rows_read']:,}, kept {counts['kept']:,}; dropped: longer than "
            f"sequence_len ({room}) {dropped:,}"
        )
        if counts.get("val_split"):
            line += f"; split off for evaluation {counts['val_split']:,}"
        lines.append(line)
    return lines


def _encoder_line(encoder: dict[str, Any]) -> str:
    """Which encoder tokenized: the fast one (pipeline, word-cache hits) or tokenizers (why)."""
    if encoder["path"] == "fast":
        stats = encoder["stats"]
        words = stats["cache_hits"] + stats["cache_misses"]
        hits = 100.0 * stats["cache_hits"] / words if words else 0.0
        line = f"encode fast encoder: {encoder['detail']}; {hits:.1f}% of {words:,} words from the cache"
    else:
        line = f"encode tokenizers pipeline (fast encoder not used: {encoder['detail']})"
    if encoder["verified"]:
        line += f"; verified {encoder['verified']:,} texts against tokenizers: identical"
    return line


def _packing_line(result: Any, cfg: Any) -> str | None:
    if cfg is None or not cfg.sample_packing or "train" not in result.stores or cfg.rl is not None:
        return None
    try:
        from axr.packing import plan_summary
    except ImportError:
        return None
    from axr.data import PreparedDataset

    lengths = PreparedDataset(result.stores["train"]).lengths
    summary = plan_summary(
        lengths,
        int(cfg.sequence_len),
        int(cfg.micro_batch_size),
        strategy=cfg.packing_strategy,
    )
    return (
        f"pack   {summary['num_bins']:,} bins of {summary['capacity']:,} tokens, efficiency "
        f"{100 * summary['efficiency']:.1f}%, {summary['steps_per_epoch']:,} micro-batches per epoch"
    )
