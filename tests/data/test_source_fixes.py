"""Issue 11 item 6: a dataset's chat template file is fingerprinted by its contents, and a JSON-array
file's elements are parsed by the workers (so a bad element is a bad row, named by file:line)."""

from __future__ import annotations

import json

from axr.config import load_config
from axr.data import PreparedDataset, preprocess
from preprocess_support import PreprocessWorkspace

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


def test_editing_a_dataset_template_file_rebuilds_the_store(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]
    data = preprocess_workspace.write_rows("chats.jsonl", rows)
    template = preprocess_workspace.root / "template.jinja"
    template.write_text(TEMPLATE)
    config = preprocess_workspace.config(
        data,
        type="chat_template",
        dataset=f'chat_template = "jinja"\nchat_template_jinja = "{template}"',
    )
    first = preprocess(load_config(config), progress=False)
    again = preprocess(load_config(config), progress=False)
    assert again.reused
    assert again.fingerprint == first.fingerprint
    template.write_text(TEMPLATE.replace("<{{ m['role'] }}>", "[{{ m['role'] }}] "))
    edited = preprocess(load_config(config), progress=False)
    assert not edited.reused
    assert edited.fingerprint != first.fingerprint
    before = PreparedDataset(first.stores["train"])[0][0].tolist()
    after = PreparedDataset(edited.stores["train"])[0][0].tolist()
    assert before != after


def test_json_array_elements_are_rows_parsed_by_the_workers(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    elements = [json.dumps({"text": f'Row {index} says ["hi"], {{ok}}.'}) for index in range(300)]
    elements[7] = "3"
    elements[9] = '{"text": }'
    data = preprocess_workspace.root / "rows.json"
    data.write_text("[\n" + ",\n".join(elements) + "\n]\n")
    config = preprocess_workspace.config(
        data, type="completion", top='on_bad_row = "skip"\nshuffle_merged_datasets = false'
    )
    result = preprocess(load_config(config), progress=False)
    counts = result.metas["train"]["counts"]
    assert counts["rows_read"] == 300
    assert counts["skipped_bad_rows"] == 2
    assert counts["samples_kept"] == 298
    assert f"{data}:9:" in counts["skipped_examples"][0]
    assert "row is a JSON number" in counts["skipped_examples"][0]
    assert f"{data}:11:" in counts["skipped_examples"][1]
