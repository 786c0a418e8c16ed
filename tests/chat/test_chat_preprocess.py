"""Conversations through `axr preprocess`: the top-level chat template is saved with the tokenizer,
so inference (transformers loading the store's tokenizer folder) renders exactly what was trained."""

from __future__ import annotations

import json
from typing import Any

from transformers import AutoTokenizer

from axr import _native
from axr.config import load_config
from axr.data import PreparedDataset, preprocess
from axr.data._format import TOKENIZER_DIR


def test_top_level_chat_template_is_saved_with_the_tokenizer(preprocess_workspace: Any) -> None:
    conversations = [
        [
            {"role": "user", "content": f"What is {index} + {index}?"},
            {"role": "assistant", "content": f"{2 * index}."},
        ]
        for index in range(12)
    ]
    data = preprocess_workspace.write_rows("chats.jsonl", [{"messages": rows} for rows in conversations])
    config = preprocess_workspace.config(
        data, type="chat_template", top='chat_template = "llama3"\nshuffle_merged_datasets = false'
    )
    result = preprocess(load_config(config), progress=False)
    store = result.stores["train"]
    saved = store / TOKENIZER_DIR
    saved_config = json.loads((saved / "tokenizer_config.json").read_text())
    assert saved_config["chat_template"] == _native.chat_style_source("llama3")

    tokenizer = AutoTokenizer.from_pretrained(saved)
    dataset = PreparedDataset(store)
    assert len(dataset) == len(conversations)
    for index, messages in enumerate(conversations):
        input_ids, labels = dataset[index]
        assert input_ids.tolist() == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        trained = input_ids[labels != -100].tolist()
        assert tokenizer.decode(trained) == f"{2 * index}.<|eot_id|>"
