"""The data doctor: problems in a prepared store's rows that train silently but wrongly.

It re-reads the source rows a store was built from (the options in its ``meta.json``) and runs
them through the native formatter and encoder again, with the store's saved tokenizer, so what it
inspects is exactly what was trained. Findings, each counted with up to 5 example rows
(``file:line``):

- ``no_trainable_tokens``: rows dropped because nothing in them is trained (the pipeline's count);
- ``double_bos`` / ``missing_bos``: the ids start with two BOS, or without the BOS the tokenizer
  adds to plain text (a chat template that does not write it);
- ``end_of_turn_not_trained``: a turn whose end-of-turn text ``train_on_eos`` says to train has
  none, or it is not trained (truncated away);
- ``special_tokens_in_text``: a message whose text holds a special token's string, which
  tokenizes as that control token;
- ``template_prompt_mismatch``: for the first rows of each conversation dataset, the training
  text up to the last assistant answer differs from the tokenizer's own
  ``apply_chat_template(messages before it, add_generation_prompt=True)``.

Re-reading costs about one more preprocessing pass over the conversation datasets.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axr.data._format import TOKENIZER_DIR, read_meta, store_dir
from axr.errors import DataError

FINDINGS = (
    "no_trainable_tokens",
    "double_bos",
    "missing_bos",
    "end_of_turn_not_trained",
    "special_tokens_in_text",
    "template_prompt_mismatch",
)
EXAMPLES = 5
TEMPLATE_SAMPLE = 32
_BATCH = 2048
CONVERSATION_TYPES = {
    "sharegpt",
    "sharegpt.load_role",
    "sharegpt.load_guanaco",
    "sharegpt_jokes",
    "pygmalion",
    "chat_template",
    "messages",
}
# The format keys `chat_render` reads (its options reject any other key).
_CHAT_KEYS = {
    "conversation",
    "chat_template",
    "chat_template_jinja",
    "field_messages",
    "message_property_mappings",
    "message_field_role",
    "message_field_content",
    "message_field_training",
    "field_human",
    "field_model",
    "roles",
    "roles_to_train",
    "train_on_eos",
    "train_on_inputs",
    "eot_tokens",
    "default_system_message",
    "drop_system_message",
}


@dataclass
class Turn:
    """One message of a rendered conversation: byte ranges in ``Row.text``."""

    role: str
    trained: bool
    content: list[tuple[int, int]]
    end_of_turn: tuple[int, int] | None
    end_of_turn_trained: bool


@dataclass
class Row:
    """A source row as it was trained: where it is, its ids and trained flags (after the length
    policy), and for conversations the rendered text and its turns."""

    location: str
    ids: list[int]
    trained: list[bool]
    text: str | None = None
    turns: list[Turn] = field(default_factory=list)
    dataset_type: str | None = None
    truncated: bool = False


@dataclass
class Finding:
    """How many rows show a problem, and a few of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, location: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(location)


def _source_rows(source: dict[str, Any], key: str) -> Iterator[tuple[str, str]]:
    """``(location, row JSON)`` of a dataset's rows, in preprocessing order."""
    from axr._native import resolve_source

    for path, kind in resolve_source(json.dumps(source), key):
        if kind in ("parquet", "arrow"):
            raise DataError(f"{path}: the data doctor reads JSON and text files only, not {kind}")
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
        if kind == "text":
            for number, line in enumerate(content.splitlines(), start=1):
                yield f"{path}:{number}", json.dumps({"text": line})
        elif content.lstrip().startswith("["):
            for index, row in enumerate(json.loads(content)):
                yield f"{path}#{index}", json.dumps(row)
        else:
            for number, line in enumerate(content.splitlines(), start=1):
                if line.strip():
                    yield f"{path}:{number}", line


def _encode(rows: list[str], spec: str, tokenizer_dir: str) -> list[Any]:
    """Native ids and masks; a batch with a bad row is retried row by row, bad rows give None
    (preprocessing failed or skipped and counted them)."""
    from axr._native import AxrError, encode_rows

    try:
        return list(encode_rows(rows, spec, tokenizer_dir))
    except AxrError:
        out: list[Any] = []
        for row in rows:
            try:
                out.append(encode_rows([row], spec, tokenizer_dir)[0])
            except AxrError:
                out.append(None)
        return out


class StoreRows:
    """The rows of a store's ``train`` datasets, rendered and encoded as preprocessing did."""

    def __init__(self, store: str | Path) -> None:
        from tokenizers import Tokenizer

        self.path = store_dir(store)
        self.meta = read_meta(self.path)
        self.options: dict[str, Any] = self.meta["options"]
        self.tokenizer_dir = self.path / TOKENIZER_DIR
        self.tokenizer = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
        config_path = self.tokenizer_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.chat_template: str | None = config.get("chat_template")
        if not isinstance(self.chat_template, str):
            self.chat_template = None

    def datasets(self) -> list[tuple[str, dict[str, Any]]]:
        """``(key, entry)`` of the datasets the store's rows come from: ``test_datasets`` for an eval
        store built from them, else ``datasets`` (an eval store cut by ``val_set_size`` included)."""
        group = "datasets"
        if self.meta.get("split") == "eval" and self.options.get("test_datasets"):
            group = "test_datasets"
        return [
            (entry["source"].get("key") or f"{group}[{index}]", entry)
            for index, entry in enumerate(self.options[group])
        ]

    def rows(self, entry: dict[str, Any], key: str) -> Iterator[Row | None]:
        """Every row of one dataset; None for a row preprocessing could not format."""
        from axr._native import chat_render

        format_keys = entry["format"]
        dataset_type = format_keys.get("type") if isinstance(format_keys.get("type"), str) else None
        conversation = dataset_type in CONVERSATION_TYPES
        spec = json.dumps(format_keys)
        chat_options = json.dumps({k: v for k, v in format_keys.items() if k in _CHAT_KEYS})
        limit = int(self.options["sequence_len"])
        truncate = self.options.get("excess_length_strategy") == "truncate"
        batch: list[tuple[str, str]] = []

        def flush() -> Iterator[Row | None]:
            encoded = _encode([row for _, row in batch], spec, str(self.tokenizer_dir))
            rendered: list[Any] = [None] * len(batch)
            if conversation:
                good = [index for index, item in enumerate(encoded) if item is not None]
                outputs = chat_render(
                    str(dataset_type),
                    chat_options,
                    [batch[index][1] for index in good],
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    chat_template=self.chat_template,
                )
                for index, output in zip(good, outputs, strict=True):
                    rendered[index] = output
            for (location, _), item, render in zip(batch, encoded, rendered, strict=True):
                if item is None:
                    yield None
                    continue
                ids: list[int] = item[0].tolist()
                trained: list[bool] = item[1].tolist()
                truncated = len(ids) > limit
                if truncated:
                    if not truncate:
                        yield None  # dropped as too long, counted by preprocessing
                        continue
                    ids, trained = ids[:limit], trained[:limit]
                row = Row(location, ids, trained, dataset_type=dataset_type, truncated=truncated)
                if render is not None:
                    row.text = render[0]
                    row.turns = [Turn(*turn) for turn in render[2]]
                yield row

        for item in _source_rows(entry["source"], key):
            batch.append(item)
            if len(batch) == _BATCH:
                yield from flush()
                batch = []
        if batch:
            yield from flush()

    def token_starts(self, row: Row) -> list[int] | None:
        """Byte offset in ``row.text`` where each token starts, or None when the Python tokenizer
        does not give the native ids (then no position is guessed)."""
        if row.text is None:
            return None
        encoding = self.tokenizer.encode(row.text, add_special_tokens=False)
        if encoding.ids[: len(row.ids)] != row.ids:
            return None
        byte_at = _char_to_byte(row.text)
        return [byte_at[start] for start, _ in encoding.offsets[: len(row.ids)]]


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _char_to_byte(text: str) -> list[int]:
    positions = [0]
    for character in text:
        positions.append(positions[-1] + len(character.encode("utf-8")))
    return positions


def _special_strings(rows: StoreRows) -> list[str]:
    tokens = {token.content for token in rows.tokenizer.get_added_tokens_decoder().values() if token.special}
    tokens.update(token for token in (rows.bos_token, rows.eos_token) if token)
    return sorted(token for token in tokens if token)


def special_tokens_in_row(row: Row, specials: list[str]) -> list[tuple[int, str]]:
    """``(message index, special string)`` for each message whose content holds a special string."""
    found: list[tuple[int, str]] = []
    if row.text is None:
        return found
    data = row.text.encode("utf-8")
    for index, turn in enumerate(row.turns):
        content = "".join(data[start:end].decode("utf-8", "replace") for start, end in turn.content)
        for special in specials:
            if special in content:
                found.append((index, special))
                break
    return found


def _end_of_turn_missing(rows: StoreRows, row: Row, train_on_eos: str) -> bool:
    """Whether an end-of-turn text ``train_on_eos`` asks to train is absent or untrained: after each
    trained turn (``turn``), after each trained turn and every turn that has one (``all``), the last
    one of the conversation (``last``)."""
    trained_turns = {index for index, turn in enumerate(row.turns) if turn.trained}
    with_end = [index for index, turn in enumerate(row.turns) if turn.end_of_turn is not None]
    if train_on_eos == "turn":
        expected = trained_turns
    elif train_on_eos == "all":
        expected = trained_turns | set(with_end)
    elif train_on_eos == "last":
        if not with_end:
            return bool(row.turns)
        expected = {with_end[-1]}
    else:
        return False
    if any(row.turns[index].end_of_turn is None for index in expected):
        return True
    if any(not row.turns[index].end_of_turn_trained for index in expected):
        return True
    if not row.truncated:
        return False  # the mask is built from these very spans: only truncation can cut one off
    starts = rows.token_starts(row)
    if starts is None:
        return False
    for index in sorted(expected):
        start, end = row.turns[index].end_of_turn or (0, 0)
        covered = [position for position, byte in enumerate(starts) if start <= byte < end]
        if not covered or not all(row.trained[position] for position in covered):
            return True
    return False


def _template_check(rows: StoreRows, template_tokenizer: Any, row: Row) -> bool | None:
    """True/False: the prompt part equals ``apply_chat_template``'s; None: the tokenizer does not
    render this conversation's template (skipped)."""
    if template_tokenizer is None or row.text is None:
        return None
    data = row.text.encode("utf-8")
    messages = [
        {"role": turn.role, "content": data[slice(*turn.content[0])].decode("utf-8") if turn.content else ""}
        for turn in row.turns
    ]
    last = max((index for index, turn in enumerate(row.turns) if turn.role == "assistant"), default=None)
    if last is None or not row.turns[last].content:
        return None
    try:
        whole = template_tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:
        return None
    if whole != row.text:
        return None
    prompt = template_tokenizer.apply_chat_template(
        messages[:last], tokenize=False, add_generation_prompt=True
    )
    return bool(prompt == data[: row.turns[last].content[0][0]].decode("utf-8"))


def diagnose(
    store: str | Path, *, template_sample: int = TEMPLATE_SAMPLE, max_rows_per_dataset: int | None = None
) -> dict[str, Any]:
    """The doctor's report of a store (JSON-ready): ``findings`` (name → ``count``, ``examples``),
    ``rows`` examined, ``template_checked``, ``template_skipped``, ``limited`` (whether
    ``max_rows_per_dataset`` cut a dataset short: the counts then describe its first rows only)."""
    rows = StoreRows(store)
    findings = {name: Finding() for name in FINDINGS}
    bos_id = rows.tokenizer.token_to_id(rows.bos_token) if rows.bos_token else None
    adds_bos = bos_id is not None and rows.tokenizer.encode("a", add_special_tokens=True).ids[:1] == [bos_id]
    specials = _special_strings(rows)
    template_tokenizer = _template_tokenizer(rows)
    examined = checked = skipped = 0
    limited = False
    no_trainable = Finding()
    for key, entry in rows.datasets():
        train_on_eos = str(entry["format"].get("train_on_eos") or "turn")
        sampled = in_dataset = 0
        for row in rows.rows(entry, key):
            if row is None:
                continue
            if max_rows_per_dataset is not None and in_dataset >= max_rows_per_dataset:
                limited = True
                break
            in_dataset += 1
            examined += 1
            if not any(row.trained):
                no_trainable.add(row.location)
            if bos_id is not None and row.ids[:2] == [bos_id, bos_id]:
                findings["double_bos"].add(row.location)
            elif adds_bos and row.ids[:1] != [bos_id]:
                findings["missing_bos"].add(row.location)
            if row.text is None:
                continue
            if special_tokens_in_row(row, specials):
                findings["special_tokens_in_text"].add(row.location)
            if any(row.trained) and _end_of_turn_missing(rows, row, train_on_eos):
                findings["end_of_turn_not_trained"].add(row.location)
            if sampled < template_sample:
                sampled += 1
                outcome = _template_check(rows, template_tokenizer, row)
                if outcome is None:
                    skipped += 1
                else:
                    checked += 1
                    if not outcome:
                        findings["template_prompt_mismatch"].add(row.location)
    # The pipeline's own count of dropped untrained rows is the authority; the scan names them.
    dropped = rows.meta["counts"]["dropped"].get("no_trainable_tokens", no_trainable.count)
    findings["no_trainable_tokens"] = Finding(int(dropped), no_trainable.examples)
    return {
        "store": str(rows.path),
        "rows": examined,
        "template_checked": checked,
        "template_skipped": skipped,
        # Why the template check could not run at all (None when it ran or had nothing to check).
        "template_unchecked": TEMPLATE_NEEDS_TRANSFORMERS
        if rows.chat_template is not None and template_tokenizer is None
        else None,
        "limited": limited,
        "findings": {name: {"count": f.count, "examples": f.examples} for name, f in findings.items()},
    }


TEMPLATE_NEEDS_TRANSFORMERS = 'it needs transformers (pip install "axr[train]")'


def _template_tokenizer(rows: StoreRows) -> Any:
    if rows.chat_template is None or importlib.util.find_spec("transformers") is None:
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(rows.tokenizer_dir))


def report_lines(report: dict[str, Any]) -> list[str]:
    """The doctor's report as summary lines."""
    scope = " (the first of each dataset: axr inspect --doctor examines all)" if report.get("limited") else ""
    if report.get("template_unchecked"):
        template = f"template prompt not checked: {report['template_unchecked']}"
    else:
        template = (
            f"template prompt checked on {report['template_checked']:,} rows, "
            f"{report['template_skipped']:,} skipped (the tokenizer's template renders them otherwise)"
        )
    lines = [f"doctor {report['rows']:,} rows examined{scope}; {template}"]
    for name, finding in report["findings"].items():
        if finding["count"]:
            examples = ", ".join(finding["examples"])
            lines.append(f"       {name.replace('_', ' ')}: {finding['count']:,} (e.g. {examples})")
    if len(lines) == 1:
        lines.append("       no findings")
    return lines


def check_special_tokens(store_rows: StoreRows) -> None:
    """Raise DataError at the first message holding a special token's string."""
    specials = _special_strings(store_rows)
    for key, entry in store_rows.datasets():
        for row in store_rows.rows(entry, key):
            if row is None or row.text is None:
                continue
            for index, special in special_tokens_in_row(row, specials):
                raise DataError(
                    f"{row.location}: message {index} ({row.turns[index].role}) holds the special token "
                    f"text {special!r}, which tokenizes as that control token; remove it from the data, "
                    f'or set special_tokens_in_text = "report" to train on it'
                )
