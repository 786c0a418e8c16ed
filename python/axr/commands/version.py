"""``axr version``: axr's version and the versions of what it runs on."""

from __future__ import annotations

import argparse
import importlib.metadata

_PACKAGES = ["torch", "transformers", "peft", "accelerate", "tokenizers", "numpy", "pydantic"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("version", help="print the versions of axr and its libraries")
    parser.set_defaults(func=run)


def versions() -> dict[str, str]:
    from axr import __version__
    from axr._native import __version__ as native_version

    found = {"axr": __version__, "axr native core": native_version}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run(args: argparse.Namespace) -> int:
    for name, version in versions().items():
        print(f"{name:<16} {version}")
    return 0
