"""Read a config file (TOML or YAML), apply ``--key=value`` overrides, validate it all at once.

Every problem is collected (unknown keys, wrong types, out-of-range values,
conflicting pairs) and raised as one ``ConfigError`` whose message has one line
per problem, so a user fixes the whole file in one pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import TypeAdapter, ValidationError

from axr._native import suggest
from axr.config import ledger
from axr.config.attention import attention_problems
from axr.config.conflicts import dataset_conflicts, top_level_conflicts
from axr.config.limits import MAX_FILE_BYTES, check_file_size, check_sizes, load_yaml
from axr.config.messages import error_lines, known_top_level_keys
from axr.config.names import name_problems
from axr.config.normalize import Normalized, normalize
from axr.config.plugins import plugin_problems_and_notes
from axr.config.schema import AxrConfig
from axr.errors import ConfigError

TOML_SUFFIXES = (".toml",)
YAML_SUFFIXES = (".yaml", ".yml")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw key/value table of a TOML or YAML file (chosen by extension), unvalidated.

    ``path`` may be a URL (``https://``, ``s3://``, ``gs://``): the file is fetched into axr's remote
    cache first (at most the config size limit), and messages still name the URL."""
    from axr.remote import fetch, is_remote

    if isinstance(path, str) and is_remote(path):
        url = path
        suffix = PurePosixPath(url.split("?", 1)[0]).suffix.lower()
        if suffix not in TOML_SUFFIXES + YAML_SUFFIXES:
            raise ConfigError(f"{url}: unknown config file type {suffix!r}; use .toml, .yaml or .yml")
        local = fetch(url, "config", limit=MAX_FILE_BYTES).path
        return _parse_config_text(local.read_text(encoding="utf-8"), suffix, url)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TOML_SUFFIXES + YAML_SUFFIXES:
        raise ConfigError(f"{path}: unknown config file type {suffix!r}; use .toml, .yaml or .yml")
    try:
        check_file_size(path.stat().st_size, str(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    return _parse_config_text(text, suffix, str(path))


def _parse_config_text(text: str, suffix: str, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text) if suffix in TOML_SUFFIXES else load_yaml(text, source)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(error)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a table of keys, not a {type(data).__name__}")
    check_sizes(data, source)
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return str(error)


def _override_candidates(text: str) -> list[Any]:
    """Readings of an override value, most specific first: TOML value, YAML value, the string itself."""
    if text.strip() == "":
        return [None]
    candidates: list[Any] = []
    with contextlib.suppress(tomllib.TOMLDecodeError):
        candidates.append(tomllib.loads(f"value = {text}")["value"])
    with contextlib.suppress(yaml.YAMLError):
        candidates.append(yaml.safe_load(text))
    candidates.append(text)
    return candidates


def _field_adapter(key: str) -> TypeAdapter[Any]:
    field = AxrConfig.model_fields[key]
    # Metadata such as ge=1 lives beside the annotation; rebuild the full type
    # so the check matches what the model itself will do.
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation)


def parse_overrides(arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``["--lora_r=16", "--adapter", "qlora", "--sample_packing"]`` → values typed through the schema.

    A value is read as a TOML value, then as YAML, then as the plain string,
    and the first reading the key's type accepts wins (so ``--save_strategy=no``
    stays the string "no" and ``--lora_r=16`` becomes the integer 16). A flag
    without a value means true. Returns the values and the problems found.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    index = 0
    items = list(arguments)
    while index < len(items):
        item = items[index]
        index += 1
        if not item.startswith("--") or item == "--":
            problems.append(f"override {item!r}: expected --key=value")
            continue
        key, has_value, text = item[2:].partition("=")
        key = key.replace("-", "_")
        if not has_value:
            if index < len(items) and not items[index].startswith("--"):
                text = items[index]
                index += 1
            else:
                text = "true"
        if key not in AxrConfig.model_fields:
            if key in known_top_level_keys():
                # An Axolotl key without a typed field (or an old spelling): the ledger and the
                # aliases read it like a key from the file.
                values[key] = _override_candidates(text)[0]
                continue
            line = f"--{key}: unknown key"
            close = suggest(key, sorted(known_top_level_keys()))
            if close is not None:
                line += f" (did you mean '--{close}'?)"
            problems.append(line)
            continue
        candidates = _override_candidates(text)
        adapter = _field_adapter(key)
        chosen = candidates[0]
        for candidate in candidates:
            try:
                adapter.validate_python(candidate)
            except ValidationError:
                continue
            chosen = candidate
            break
        values[key] = chosen
    return values, problems


def _raw_conflicts(data: Mapping[str, Any]) -> list[str]:
    """Conflicts read from the raw values, for when type errors keep the model from being built."""
    lines = top_level_conflicts(data)
    for list_key in ("datasets", "test_datasets"):
        entries = data.get(list_key)
        if not isinstance(entries, list):
            continue
        for position, entry in enumerate(entries):
            if isinstance(entry, Mapping):
                lines += [f"{list_key}[{position}]: {line}" for line in dataset_conflicts(entry)]
    return lines


def validate_config(data: Mapping[str, Any], *, source: str | None = None) -> AxrConfig:
    """Validate a raw key/value table; every problem in one ``ConfigError``.

    Blanks, aliases and the key ledger are applied first (``axr.config.normalize``,
    ``axr.config.ledger``): keys that are not supported yet are problems like any other,
    keys without effect become notes (``AxrConfig.notes``).
    """
    normalized = normalize(data)
    lines = list(normalized.problems)
    notes = list(normalized.notes)
    found, noted = _ledger_review(normalized)
    lines += found
    notes += noted
    plugins = normalized.data.get("plugins")
    if isinstance(plugins, list):
        found, noted = plugin_problems_and_notes(plugins)
        lines += found
        notes += noted
    try:
        config = AxrConfig.model_validate(normalized.data)
    except ValidationError as error:
        lines += error_lines(AxrConfig, error)
        lines += [line for line in _raw_conflicts(normalized.data) if line not in lines]
        raise ConfigError(_report(lines, source)) from None
    lines += attention_problems(config)
    lines += name_problems(config)
    if lines:
        raise ConfigError(_report(lines, source))
    config._source_path = source
    config._notes = notes
    config._ledger_only = dict(normalized.set_aside)
    return config


def _ledger_review(normalized: Normalized) -> tuple[list[str], list[str]]:
    """Not-yet-supported keys that are set (problems) and keys without effect (notes)."""
    problems, notes = ledger.review(normalized.data)
    top_level = {key: value for key, value in normalized.set_aside.items() if "[" not in key}
    found, noted = ledger.review(top_level)
    problems += found
    notes += noted
    for list_key in ("datasets", "test_datasets", "pretraining_dataset"):
        entries = normalized.data.get(list_key)
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            prefix = f"{list_key}[{index}]."
            aside = {
                key[len(prefix) :]: value
                for key, value in normalized.set_aside.items()
                if key.startswith(prefix)
            }
            in_type = {key[len("type.") :]: value for key, value in aside.items() if key.startswith("type.")}
            rest = {key: value for key, value in aside.items() if not key.startswith("type.")}
            for table, where in (({**entry, **rest}, prefix), (in_type, prefix + "type.")):
                found, noted = ledger.review(table, prefix=where, dataset=True)
                problems += found
                notes += noted
    return problems, notes


def explain_config(data: Mapping[str, Any]) -> list[str]:
    """``axr validate --explain``: one ledger line per key the raw table sets, old spellings named."""
    normalized = normalize(data)
    lines = [f"{note}" for note in normalized.notes]
    tables: list[tuple[str, Mapping[str, Any], bool]] = [("", normalized.data, False)]
    tables.append(("", {k: v for k, v in normalized.set_aside.items() if "[" not in k}, False))
    for list_key in ("datasets", "test_datasets", "pretraining_dataset"):
        entries = normalized.data.get(list_key)
        if isinstance(entries, list):
            for index, entry in enumerate(entries):
                if isinstance(entry, Mapping):
                    prefix = f"{list_key}[{index}]."
                    aside = {
                        k[len(prefix) :]: v for k, v in normalized.set_aside.items() if k.startswith(prefix)
                    }
                    rest = {k: v for k, v in aside.items() if not k.startswith("type.")}
                    in_type = {k[5:]: v for k, v in aside.items() if k.startswith("type.")}
                    tables.append((prefix, {**entry, **rest}, True))
                    tables.append((prefix + "type.", in_type, True))
    for prefix, table, dataset in tables:
        for key in table:
            entry = ledger.entry_for(key, dataset=dataset)
            if entry is None:
                lines.append(f"{prefix}{key}: unknown key")
            elif isinstance(entry, ledger.NotYet) and not ledger.is_set(table[key]):
                lines.append(f"{prefix}{key}: off (setting it would {entry.would}: not supported yet)")
            else:
                lines.append(ledger.explain(prefix + key, entry))
    return lines


def _report(lines: Sequence[str], source: str | None) -> str:
    where = f"config {source}" if source else "config"
    count = f"{len(lines)} problem" + ("s" if len(lines) != 1 else "")
    return f"invalid {where} ({count}):\n" + "\n".join(f"  {line}" for line in lines)


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> AxrConfig:
    """Load, override and validate a config file.

    ``overrides`` are command-line items such as ``--lora_r=16``; each replaces
    a top-level key, typed through the schema. Raises ``ConfigError`` listing
    every problem (file, key and what is wrong), before any work starts.
    """
    source = str(path)
    data = read_config_file(path)
    override_values, override_problems = parse_overrides(overrides)
    data.update(override_values)
    try:
        config = validate_config(data, source=source)
    except ConfigError as error:
        lines = [line[2:] for line in str(error).splitlines()[1:]]
        raise ConfigError(
            _report(override_problems + _mark_overrides(lines, override_values), source)
        ) from None
    if override_problems:
        raise ConfigError(_report(override_problems, source))
    for note in config.notes:
        print(f"axr: note: {note}", file=sys.stderr)
    return config


def _mark_overrides(lines: list[str], override_values: Mapping[str, Any]) -> list[str]:
    marked = []
    for line in lines:
        key = line.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]
        marked.append(f"{line} (set by --{key})" if key in override_values else line)
    return marked
