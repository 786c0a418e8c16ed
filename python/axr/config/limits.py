"""Bounded config reading: a config file is a few kilobytes, so anything far larger is refused fast.

A YAML alias can name a list that itself holds aliases: ten short lines can stand for a
billion values (an "alias bomb"), and every later pass over the config would walk them all.
Aliases are expanded with a budget: the values a document stands for are counted on the
composed node graph (each anchored node once) before anything is built. Files, lists and
strings have size limits too, each reported as a clear error naming the file and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from axr.errors import ConfigError

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest config file read (inline chat templates included, real configs are far smaller)."""
MAX_YAML_VALUES = 100_000
"""Most values a YAML document may stand for once its aliases are expanded."""
MAX_LIST_ITEMS = 10_000
"""Longest list in a config."""
MAX_STRING_CHARS = 1024 * 1024
"""Longest string in a config (a chat template is a few kilobytes)."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in active:
        raise ConfigError("a YAML alias refers to a value that contains itself")
    active.add(id(node))
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes, active)
            if total > MAX_YAML_VALUES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, sizes, active) + _expanded_size(value, sizes, active)
            if total > MAX_YAML_VALUES:
                break
    active.discard(id(node))
    sizes[id(node)] = total
    return total


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with the alias budget; YAML errors are left to the caller."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: the YAML stands for more than {MAX_YAML_VALUES:,} values once its aliases "
                "(*name) are expanded; a config needs far fewer (an alias bomb?)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_file_size(size: int, source: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"{source}: the config file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} "
            "(put long texts such as chat templates in their own file and give its path)"
        )


def _path(parent: str, key: object) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def check_sizes(data: Any, source: str, where: str = "") -> None:
    """Refuse lists and strings beyond the limits, naming the key."""
    if isinstance(data, str):
        if len(data) > MAX_STRING_CHARS:
            raise ConfigError(
                f"{source}: {where or '(config)'}: a string of {len(data):,} characters; the limit is "
                f"{MAX_STRING_CHARS:,}"
            )
    elif isinstance(data, list):
        if len(data) > MAX_LIST_ITEMS:
            raise ConfigError(
                f"{source}: {where or '(config)'}: a list of {len(data):,} items; "
                f"the limit is {MAX_LIST_ITEMS:,}"
            )
        for index, item in enumerate(data):
            check_sizes(item, source, _path(where, index))
    elif isinstance(data, Mapping):
        for key, value in data.items():
            check_sizes(value, source, _path(where, key))
