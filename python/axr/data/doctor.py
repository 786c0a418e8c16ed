"""The data doctor's report of a store, read from its ``meta.json``.

The native pipeline examines every row in the same pass as tokenization and writes what it
found into the store's ``meta.json`` (``doctor``): each finding counted over the whole corpus,
with the first few locations (``file:line``). Findings:

- ``no_trainable_tokens``: rows dropped because nothing in them is trained;
- ``double_bos`` / ``missing_bos``: ids that start with two BOS, or without the BOS the tokenizer
  adds to plain text (a chat template that does not write it);
- ``end_of_turn_not_trained``: a conversation whose end-of-turn text ``train_on_eos`` says to
  train is absent, untrained or truncated away;
- ``special_tokens_in_text``: a string field of a row (any dataset type) holding a special
  token's text, which tokenizes as that control token;
- ``template_prompt_mismatch``: on the first 32 rows of each conversation dataset, the token ids
  of the generation prompt (the messages before the last answer, ``add_generation_prompt=True``)
  are not a prefix of the training ids.

See rust/axr-core/src/doctor/ for the checks themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axr.data._format import read_meta, store_dir
from axr.errors import DataError

FINDINGS = (
    "no_trainable_tokens",
    "double_bos",
    "missing_bos",
    "end_of_turn_not_trained",
    "special_tokens_in_text",
    "template_prompt_mismatch",
)


def diagnose(store: str | Path) -> dict[str, Any]:
    """The doctor's report of a store (JSON-ready): ``findings`` (name → ``count``, ``examples``),
    ``rows`` examined (every sample kept), ``template_checked``, ``template_skipped``."""
    path = store_dir(store)
    report = read_meta(path).get("doctor")
    if report is None:
        raise DataError(
            f"{path}: this store was built with the data doctor off (axr preprocess --no-doctor); "
            f"delete {path.parent} and run axr preprocess again to have its findings"
        )
    return {
        "store": str(path),
        "rows": report["rows"],
        "template_checked": report["template_checked"],
        "template_skipped": report["template_skipped"],
        "findings": {name: report["findings"][name] for name in FINDINGS},
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The doctor's report as summary lines."""
    lines = [
        f"doctor {report['rows']:,} rows examined; generation prompt checked on "
        f"{report['template_checked']:,} conversations, {report['template_skipped']:,} skipped "
        "(no answer at the end)"
    ]
    for name, finding in report["findings"].items():
        if finding["count"]:
            examples = ", ".join(finding["examples"])
            lines.append(f"       {name.replace('_', ' ')}: {finding['count']:,} (e.g. {examples})")
    if len(lines) == 1:
        lines.append("       no findings")
    return lines
