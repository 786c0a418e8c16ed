"""``axr train CONFIG [--key=value ...]``: fine-tune from a config (preprocessing first if needed).

Under ``accelerate launch -m axr.cli train CONFIG`` every process runs this
command; each trains on its own bins and rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model (LoRA or full) on the config's prepared data",
        description='Fine-tune the config\'s base_model on its datasets: LoRA when adapter = "lora", '
        "else a full fine-tune. Builds the prepared dataset first when it is missing. Any config key "
        "can be overridden with --key=value.",
    )
    parser.add_argument("config", help="config file (.toml, .yaml or .yml)")
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from axr.config import load_config

    cfg = load_config(args.config, args.overrides)
    from axr.train.loop import train

    train(cfg)
    return 0
