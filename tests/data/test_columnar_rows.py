"""Parquet rows reach the formatters with the values their JSON-lines twin gives: the same dataset
written both ways builds the same store (tokens, masks, sources, counts, doctor findings)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from axr.config import load_config
from axr.data import preprocess
from preprocess_support import PreprocessWorkspace

_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _alpaca() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for index in range(300):
        row: dict[str, object] = {
            "instruction": f'Say "{index}"\n\tüñ\u2028 {"<s>" if index % 41 == 7 else ""}',
            "output": f"It is {index}." if index % 50 != 9 else "",
        }
        if index % 3 == 0:
            row["input"] = f"ctx {index}"
        rows.append(row)
    return rows


def _chat() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for index in range(200):
        user = {"role": "user", "content": f"question {index} " + "word " * (index % 13)}
        answer = {"role": "assistant", "content": f"answer {index}" + (" <s>" if index % 17 == 5 else "")}
        rows.append({"messages": [user] if index % 10 == 3 else [user, answer], "id": index})
    return rows


def _completion() -> list[dict[str, object]]:
    return [{"text": (f"doc {index} ") * (1 + index % 90), "score": index / 7} for index in range(150)]


def _store(workspace: PreprocessWorkspace, data: Path, kind: str, top: str) -> tuple[dict[str, bytes], dict]:
    config = workspace.config(data, type=kind, top=top, name=f"{data.name}.toml")
    if "sequence_len" in top:
        config.write_text(config.read_text().replace("sequence_len = 256\n", "", 1))
    train = preprocess(load_config(config), progress=False).stores["train"]
    files = {
        str(path.relative_to(train)): path.read_bytes()
        for path in sorted(train.rglob("*"))
        if path.is_file() and path.name != "meta.json"
    }
    meta = json.loads((train / "meta.json").read_text())
    # Locations name the file: the twins differ only in its suffix.
    findings = json.dumps(meta["doctor"]).replace(str(data), "DATA")
    return files, {"counts": meta["counts"], "tokens": meta["tokens"], "doctor": json.loads(findings)}


@pytest.mark.parametrize(
    ("kind", "rows", "top"),
    [
        ("alpaca", _alpaca, "val_set_size = 0.1"),
        ("completion", _completion, "sequence_len = 64"),
        (
            "chat_template",
            _chat,
            f'chat_template = "jinja"\nchat_template_jinja = "{_TEMPLATE}"\ntrain_on_inputs = true',
        ),
    ],
)
def test_parquet_builds_the_store_of_its_json_lines_twin(
    preprocess_workspace: PreprocessWorkspace, kind: str, rows, top: str
) -> None:
    workspace = preprocess_workspace
    data = rows()
    jsonl = workspace.write_rows(f"{kind}.jsonl", data)
    parquet = workspace.root / f"{kind}.parquet"
    pq.write_table(pa.Table.from_pylist(data), parquet, row_group_size=70)
    expected_files, expected_meta = _store(workspace, jsonl, kind, top)
    files, meta = _store(workspace, parquet, kind, top)
    assert expected_meta["counts"]["rows_read"] == len(data)
    assert sorted(files) == sorted(expected_files)
    assert any(name.startswith("tokens") or "token" in name for name in files), sorted(files)
    for name, content in expected_files.items():
        assert files[name] == content, name
    assert meta == expected_meta
