"""The ``axr`` command line: parse, dispatch to a command module, turn errors into exit codes.

Each verb lives in ``axr.commands.<verb>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func``. A verb appears here only once it works.
Errors that are the user's to fix (bad config, bad data) print one clear
message and exit 2 without a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

# Order is the order of `axr --help`.
COMMANDS = ["version", "validate", "preprocess", "train", "inspect", "plot", "inference", "merge_lora"]

EXIT_USER_ERROR = 2
# The `train` extra: the data path (validate, preprocess, inspect) runs without them.
TRAIN_PACKAGES = {"torch", "transformers", "peft", "accelerate", "safetensors", "gguf"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axr",
        description="Fine-tune causal language models from an Axolotl-style config.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"axr.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    debug = bool(getattr(args, "debug", False)) or "--debug" in argv
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    # Commands that take a config accept `--key=value` overrides of any config
    # key; argparse leaves them in `unknown` and the command types them through
    # the schema.
    accepts_overrides = getattr(args, "accepts_overrides", False)
    if unknown and not accepts_overrides:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = unknown
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("axr: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every exception reaches the user as one line unless --debug
        from axr.errors import AxrError

        if debug:
            traceback.print_exc()
        if isinstance(error, ModuleNotFoundError) and error.name in TRAIN_PACKAGES:
            print(
                f"axr: error: axr {args.command.replace('_', '-')} needs {error.name}, which is not "
                'installed: pip install "axr[train]"',
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        if isinstance(error, (AxrError, FileNotFoundError)):
            print(f"axr: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        if not debug:
            print(
                f"axr: internal error: {type(error).__name__}: {error} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
