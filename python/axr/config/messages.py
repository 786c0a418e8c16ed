"""Turn pydantic's validation errors into one line per problem, named by the user's key path.

pydantic reports a location such as ``("bf16", "literal['auto','full']")`` and,
for a value that fits no member of a union, one error per member. Users know
their key (``bf16``, ``datasets[0].type``), so the location is walked against
the schema, union member tags are dropped, and the errors of one key are merged
into one line that says what the key accepts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from axr._native import suggest
from axr.config.schema import AxrConfig, DatasetConfig


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from an annotation (pydantic adds no location for them)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_unwrap(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class KeyLocation(typing.NamedTuple):
    """Where an error is, in the user's terms."""

    path: list[str | int]
    """Keys and list indices from the top of the config."""
    model: type[BaseModel] | None
    """The table the last key belongs to (for "did you mean" suggestions)."""
    annotation: Any
    """The declared type of the last key (None for an unknown key)."""


def locate(root: type[BaseModel], location: Sequence[str | int]) -> KeyLocation:
    """Map a pydantic error location onto the key path a user wrote."""
    path: list[str | int] = []
    annotation: Any = root
    owner: type[BaseModel] | None = None
    remaining = list(location)
    while remaining:
        members = _union_members(annotation)
        head = remaining[0]
        if len(members) > 1:
            # pydantic names the union member it tried; descend into the member
            # that can hold the rest of the location, if any.
            remaining.pop(0)
            annotation = _pick_member(members, remaining)
            if annotation is None:
                break
            continue
        annotation = members[0]
        origin = typing.get_origin(annotation)
        if _is_model(annotation):
            owner = annotation
            if not isinstance(head, str):
                break
            path.append(head)
            remaining.pop(0)
            field = annotation.model_fields.get(head)
            if field is None:
                return KeyLocation(path, owner, None)
            annotation = field.annotation
        elif origin in (list, tuple) and isinstance(head, int):
            path.append(head)
            remaining.pop(0)
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            path.append(head)
            remaining.pop(0)
            annotation = typing.get_args(annotation)[1]
        else:
            break
    return KeyLocation(path, owner, annotation)


def _pick_member(members: list[Any], remaining: list[str | int]) -> Any:
    if not remaining:
        return typing.Union[tuple(members)]  # noqa: UP007 - a runtime union of the members
    head = remaining[0]
    for member in members:
        origin = typing.get_origin(member)
        if _is_model(member) and isinstance(head, str):
            return member
        if origin in (list, tuple) and isinstance(head, int):
            return member
        if origin is dict and isinstance(head, str):
            return member
    return None


def format_path(path: Sequence[str | int]) -> str:
    """``["datasets", 0, "type"]`` → ``datasets[0].type``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(config)"


def describe(annotation: Any) -> str:
    """A short phrase for what a key accepts: ``true/false``, ``an integer``, ``"lora" or "qlora"``."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        bounds = _bounds(metadata)
        return describe(inner) + (f" {bounds}" if bounds else "")
    members = _union_members_keeping_bounds(annotation)
    if len(members) > 1:
        return " or ".join(dict.fromkeys(describe(member) for member in members))
    annotation = members[0]
    if typing.get_origin(annotation) is typing.Annotated:
        return describe(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(_quote(value) for value in typing.get_args(annotation))
    if annotation is bool:
        return "true/false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin in (list, tuple):
        return f"a list of {_plural(typing.get_args(annotation)[0])}"
    if origin is dict or _is_model(annotation):
        return "a table"
    return "a value"


def _union_members_keeping_bounds(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _bounds(metadata: Sequence[Any]) -> str:
    """``Field(ge=0, lt=1)`` → ``in [0, 1)``; ``Field(ge=1)`` → ``≥ 1``."""
    limits: dict[str, Any] = {}
    for item in metadata:
        constraints = getattr(item, "metadata", [item])
        for constraint in constraints:
            for name in ("ge", "gt", "le", "lt"):
                value = getattr(constraint, name, None)
                if value is not None:
                    limits[name] = value
    low = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    high = ("]", limits["le"]) if "le" in limits else (")", limits["lt"]) if "lt" in limits else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'≥' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'≤' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def _plural(annotation: Any) -> str:
    phrase = describe(annotation)
    for article in ("an ", "a "):
        if phrase.startswith(article):
            noun, _, rest = phrase[len(article) :].partition(" ")
            return f"{noun}s {rest}".rstrip()
    return phrase


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def known_top_level_keys() -> set[str]:
    """Every top-level key accepted by name: schema fields, ledger keys and old spellings."""
    from axr.config import ledger

    return (
        set(AxrConfig.model_fields)
        | set(ledger.TOP_LEVEL)
        | set(ledger.ALIASES)
        | set(ledger.ATTENTION_FLAGS)
        | {"gc_steps", "flash_attn_d512"}
    )


def _candidates(model: type[BaseModel]) -> list[str]:
    from axr.config import ledger

    if model is AxrConfig:
        return sorted(known_top_level_keys())
    if model is DatasetConfig:
        return sorted(set(model.model_fields) | set(ledger.DATASET_ENTRY))
    return list(model.model_fields)


def unknown_key_message(path: Sequence[str | int], model: type[BaseModel] | None) -> str:
    """``unknown key 'lora_rr' (did you mean 'lora_r'?)``, with the path when nested."""
    key = path[-1] if path else "?"
    line = f"{format_path(path)}: unknown key"
    close = suggest(str(key), _candidates(model)) if model is not None else None
    if close is not None:
        line += f" (did you mean '{close}'?)"
    elif model is not None and len(path) == 1 and str(key) in DatasetConfig.model_fields:
        line += " (it is a key of each datasets entry)"
    return line


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _under(path: list[str | int], parent: list[str | int], *, strict: bool) -> bool:
    if path[: len(parent)] != parent:
        return False
    return len(path) > len(parent) if strict else True


def error_lines(root: type[BaseModel], error: ValidationError) -> list[str]:
    """One line per problem in ``error``, in the order the keys appear in the file."""
    lines: list[str] = []
    by_key: dict[str, list[Any]] = {}
    locations: dict[str, KeyLocation] = {}
    # Paths with a precise error inside them: a union member's generic "expected
    # ..." line for the same key would only repeat it less precisely.
    precise: list[list[str | int]] = []
    for detail in error.errors(include_url=False):
        where = locate(root, detail["loc"])
        if detail["type"] == "extra_forbidden":
            lines.append(unknown_key_message(where.path, where.model))
            precise.append(where.path)
            continue
        if detail["type"] == "config_conflict":
            precise.append(where.path)
            prefix = format_path(where.path)
            for message in str(detail["ctx"]["message"]).splitlines():
                lines.append(message if not where.path else f"{prefix}: {message}")
            continue
        key = format_path(where.path)
        by_key.setdefault(key, []).append(detail)
        locations[key] = where
    for key, details in by_key.items():
        where = locations[key]
        deeper = [locations[other].path for other in by_key if other != key]
        if any(_under(path, where.path, strict=False) for path in precise) or any(
            _under(path, where.path, strict=True) for path in deeper
        ):
            continue
        if details[0]["type"] == "missing":
            lines.append(f"{key}: required key is missing")
            continue
        given = details[0].get("input")
        if len(details) == 1 and len(_union_members(where.annotation)) == 1:
            message = details[0]["msg"]
            lines.append(f"{key}: {message[0].lower()}{message[1:]} (got {_shown(given)})")
        else:
            lines.append(f"{key}: expected {describe(where.annotation)} (got {_shown(given)})")
    return lines
