"""``axr validate CONFIG [--key=value ...]``: check a config and print what it resolves to."""

from __future__ import annotations

import argparse

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a config file and print it with defaults and overrides applied",
        description=(
            "Check CONFIG (TOML or YAML) against the schema and print the resolved config; "
            "any --key=value after it overrides a top-level key. Exits 2 listing every problem."
        ),
    )
    parser.add_argument("config", nargs="?", help="the config file (.toml, .yaml or .yml)")
    parser.add_argument(
        "--schema", action="store_true", help="print the reference of every config key (Markdown) instead"
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="for every key the file sets, say whether axr uses it, does not support it yet, or ignores it "
        "(and why), then validate as usual",
    )
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from axr.config import load_config
    from axr.errors import ConfigError

    if args.schema:
        from axr.config.reference import reference_markdown

        print(reference_markdown(), end="")
        return 0
    if args.config is None:
        raise ConfigError("axr validate needs a CONFIG file (or --schema)")
    if args.explain:
        from axr.config import explain_config, parse_overrides, read_config_file

        data = read_config_file(args.config)
        data.update(parse_overrides(args.overrides)[0])
        print(f"# {args.config}: what axr does with each key it sets")
        for line in explain_config(data):
            print(line)
    config = load_config(args.config, args.overrides)
    print(f"# {args.config}: valid; every key with defaults and overrides applied")
    print(yaml.safe_dump(config.resolved_dict(), sort_keys=False, allow_unicode=True, width=100), end="")
    print(f"# mixed precision on this machine: {_precision_here(config)}")
    return 0


def _precision_here(config: object) -> str:
    from axr.config import AxrConfig, resolve_precision
    from axr.errors import ConfigError

    assert isinstance(config, AxrConfig)
    try:
        import torch
    except ModuleNotFoundError:
        return 'not known: torch is not installed (pip install "axr[train]")'

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return f"{resolve_precision(config, device)} ({device})"
    except ConfigError as error:
        return f"not usable on {device}: {error}"
