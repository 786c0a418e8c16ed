"""``axr merge-lora CONFIG [--lora_model_dir DIR] [--key=value ...]``: merge a LoRA adapter into its base."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a trained LoRA adapter into the base weights (saves <lora_model_dir>/merged)",
        description="Load base_model with the adapter in lora_model_dir (default: the adapter training saved "
        "in output_dir), merge it into the weights and save <lora_model_dir>/merged as safetensors with "
        "the tokenizer. lora_on_cpu = true merges on the CPU. Any config key can be overridden with "
        "--key=value.",
    )
    parser.add_argument("config", help="config file (.toml, .yaml or .yml)")
    parser.add_argument("--lora_model_dir", metavar="DIR", help="the adapter folder (adapter_config.json)")
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from axr.config import load_config
    from axr.merge import merge_lora

    overrides = list(args.overrides)
    if args.lora_model_dir is not None:
        overrides.append(f"--lora_model_dir={args.lora_model_dir}")
    merge_lora(load_config(args.config, overrides))
    return 0
