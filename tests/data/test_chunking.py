"""Long completion documents split into sequence_len chunks (Axolotl's rule), and pretraining_dataset.

The reference below is Axolotl's completion rule as written in its source
(``prompt_strategies/completion.py`` and ``PromptTokenizingStrategy._tokenize``; ``drop_long_seq``
with ``min_sample_len`` 2), run with transformers on the same tokenizer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import PreparedDataset, preprocess
from axr.data.preprocess import options_from_config
from axr.errors import ConfigError
from preprocess_support import PreprocessWorkspace

SEQUENCE_LEN = 16


def axolotl_completion_rows(tokenizer, text: str, sequence_len: int, *, cap: bool = True) -> list[list[int]]:
    """Axolotl: tokenize (BOS from the tokenizer, truncated at 64 x sequence_len), append EOS unless
    the ids already end with it or were truncated, cut every sequence_len ids, drop rows under 2.
    An empty text gives no row."""
    if not text:
        return []
    max_length = sequence_len * 64 if cap else None
    ids = tokenizer(text, truncation=cap, max_length=max_length)["input_ids"]
    if ids and ids[-1] != tokenizer.eos_token_id and (max_length is None or len(ids) < max_length):
        ids.append(tokenizer.eos_token_id)
    chunks = [ids[start : start + sequence_len] for start in range(0, len(ids), sequence_len)]
    return [chunk for chunk in chunks if 2 <= len(chunk) <= sequence_len]


def _documents() -> list[str]:
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    texts = [" ".join(words[: 1 + index % 12]) * (1 + index % 5) for index in range(40)]
    texts += ["", "a", "Hi", "word " * 15, "word " * 16, "word " * 31]
    texts.append(" ".join(f"token{index}" for index in range(700)))  # over Axolotl's 64 x 16 cap
    return texts


def _workspace_config(workspace: PreprocessWorkspace, texts: list[str], top: str = "") -> Path:
    data = workspace.write_rows("docs.jsonl", [{"text": text} for text in texts])
    config = workspace.config(data, type="completion", top=f"shuffle_merged_datasets = false\n{top}")
    config.write_text(config.read_text().replace("sequence_len = 256", f"sequence_len = {SEQUENCE_LEN}"))
    return config


def test_chunks_equal_axolotls_rule(preprocess_workspace: PreprocessWorkspace) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(preprocess_workspace.tokenizer_dir))
    texts = _documents()
    cfg = load_config(_workspace_config(preprocess_workspace, texts))
    result = preprocess(cfg, progress=False)
    store = PreparedDataset(result.stores["train"])
    ours = [store[index][0].tolist() for index in range(len(store))]
    expected = [row for text in texts[:-1] for row in axolotl_completion_rows(tokenizer, text, SEQUENCE_LEN)]
    capped = axolotl_completion_rows(tokenizer, texts[-1], SEQUENCE_LEN)
    uncapped = axolotl_completion_rows(tokenizer, texts[-1], SEQUENCE_LEN, cap=False)
    # Everything under the cap is Axolotl's rows exactly; past it axr keeps what Axolotl loses.
    assert ours[: len(expected)] == expected
    assert ours[len(expected) :] == uncapped
    assert len(uncapped) > len(capped) == 64
    assert uncapped[:64] == capped
    # BOS opens only a document's first chunk, EOS closes only its last.
    assert sum(row.count(tokenizer.bos_token_id) for row in ours[len(expected) :]) == 1
    assert [row[-1] == tokenizer.eos_token_id for row in ours[len(expected) :]].count(True) == 1
    # Completion trains every token but the BOS the tokenizer adds; a chunk keeps the document's labels.
    for index, row in enumerate(ours):
        assert store.mask(index).tolist() == [int(token != tokenizer.bos_token_id) for token in row]

    counts = result.metas["train"]["counts"]
    long_docs = [text for text in texts if len(tokenizer(text)["input_ids"]) + 1 > SEQUENCE_LEN]
    assert counts["documents_split"] == len(long_docs) >= 5
    assert counts["samples_kept"] == len(ours)
    assert counts["dropped"]["shorter_than_2_tokens"] > 0
    split_rows = sum(
        len(axolotl_completion_rows(tokenizer, text, SEQUENCE_LEN, cap=False)) for text in long_docs
    )
    assert counts["chunks_made"] == split_rows


def test_the_summary_counts_split_documents(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _workspace_config(preprocess_workspace, ["word " * 40, "short text"])
    assert main(["preprocess", str(config), "--no-progress", "--no-doctor"]) == 0
    out = capsys.readouterr().out
    assert "split: 1 documents longer than sequence_len became 3 chunks" in out
    # The same corpus with drop: the long document is lost, and counted.
    assert (
        main(["preprocess", str(config), "--no-progress", "--no-doctor", "--excess_length_strategy=drop"])
        == 0
    )
    out = capsys.readouterr().out
    assert "longer than sequence len 1" in out
    assert "split:" not in out


def test_split_is_refused_for_templated_types(preprocess_workspace: PreprocessWorkspace) -> None:
    data = preprocess_workspace.write_rows("a.jsonl", [{"instruction": "x", "output": "y"}])
    config = preprocess_workspace.config(data, type="alpaca", top='excess_length_strategy = "split"')
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "excess_length_strategy" in str(error.value)
    assert "datasets[0]" in str(error.value)
    # Unset, a templated type drops as before.
    config = preprocess_workspace.config(data, type="alpaca")
    assert options_from_config(load_config(config))["excess_length_strategy"] is None


def _pretraining_config(workspace: PreprocessWorkspace, data: Path, model: Path, extra: str = "") -> Path:
    path = workspace.root / "pretrain.toml"
    path.write_text(
        f'base_model = "{model}"\nsequence_len = 64\nmicro_batch_size = 2\nlearning_rate = 1e-3\n'
        f'dataset_prepared_path = "{workspace.prepared}"\noutput_dir = "{workspace.root / "out"}"\n'
        f'save_strategy = "no"\n{extra}\n'
        f'[[pretraining_dataset]]\npath = "{data}"\ntype = "pretrain"\ntext_column = "body"\n'
    )
    return path


def test_pretraining_dataset_needs_max_steps(preprocess_workspace: PreprocessWorkspace) -> None:
    data = preprocess_workspace.write_rows("corpus.jsonl", [{"body": "some text"}])
    config = _pretraining_config(preprocess_workspace, data, preprocess_workspace.tokenizer_dir)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "pretraining_dataset needs max_steps" in str(error.value)


def test_pretraining_dataset_trains_end_to_end(
    preprocess_workspace: PreprocessWorkspace, tiny_llama_dir: Path
) -> None:
    rows = [
        {"body": f"Document {index}. " + "The river flows to the sea. " * (index % 30)} for index in range(60)
    ]
    data = preprocess_workspace.write_rows("corpus.jsonl", rows)
    config = _pretraining_config(preprocess_workspace, data, tiny_llama_dir, "max_steps = 2")
    assert main(["train", str(config)]) == 0
    steps = [
        json.loads(line)
        for line in (preprocess_workspace.root / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in steps if "loss" in line] == [1, 2]
    (root,) = [path for path in preprocess_workspace.prepared.iterdir() if path.is_dir()]
    meta = json.loads((root / "train" / "meta.json").read_text())
    entry = meta["options"]["datasets"][0]
    # text_column = "body" became the completion field the rows are read from.
    assert 'text_column = "body"' in config.read_text()
    assert entry["format"]["field"] == "body"
    assert entry["source"]["key"] == "pretraining_dataset[0]"
    assert meta["counts"]["documents_split"] > 0
    assert meta["longest"] <= 64


def test_pretrain_multipack_attn(preprocess_workspace: PreprocessWorkspace, tiny_llama_dir: Path) -> None:
    """Packed pre-training rows: block-diagonal by default (positions restart per document); with
    pretrain_multipack_attn = false one sequence per row, whose loss equals a plain forward of the row
    (every token attends to the documents before it). Elsewhere false is refused, not ignored."""
    import torch
    from transformers import AutoModelForCausalLM

    from axr.train.loop import _micro_batches, next_micro_batches, setup
    from axr.train.loss import forward_summed_loss

    rows = [{"body": f"Document {index}. " + "The river flows. " * (index % 4)} for index in range(40)]
    data = preprocess_workspace.write_rows("corpus.jsonl", rows)
    extra = 'max_steps = 1\nsample_packing = true\nattn_implementation = "sdpa"'
    batches = {}
    for joined in (False, True):
        setting = "\npretrain_multipack_attn = false" if joined else ""
        cfg = load_config(_pretraining_config(preprocess_workspace, data, tiny_llama_dir, extra + setting))
        run = setup(cfg)
        assert run.joined is joined
        (batch,), _ = next_micro_batches(run, _micro_batches(run.plan, 0, 0))
        batches[joined] = batch
        real = batch["real_tokens"]
        restarts = int(((batch["position_ids"] == 0) & real).sum())
        rows_in_batch = batch["input_ids"].shape[0]
        if joined:
            # Positions run 0..n-1 along each row: one sequence per row.
            assert restarts == rows_in_batch
            model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()
            with torch.no_grad():
                summed = forward_summed_loss(model, batch, "sdpa", "cpu", select=False)
                expected = 0.0
                for row in range(rows_in_batch):
                    ids = batch["input_ids"][row][real[row]]
                    labels = batch["labels"][row][real[row]]
                    logits = model(ids[None]).logits[0, :-1].float()
                    expected += float(
                        torch.nn.functional.cross_entropy(
                            logits, labels[1:], ignore_index=-100, reduction="sum"
                        )
                    )
            assert abs(float(summed) - expected) < 1e-3 * max(1.0, abs(expected))
        else:
            assert restarts > rows_in_batch  # several documents per row, each from position 0
    # The same tokens and trained labels either way (each document starts with its untrained BOS).
    assert torch.equal(batches[False]["input_ids"], batches[True]["input_ids"])
    assert torch.equal(batches[False]["labels"], batches[True]["labels"])

    plain = _pretraining_config(
        preprocess_workspace, data, tiny_llama_dir, "max_steps = 1\npretrain_multipack_attn = false"
    )
    with pytest.raises(
        ConfigError, match="pretrain_multipack_attn = false applies to packed pre-training rows"
    ):
        load_config(plain)


_RSS_CHILD = """
import json, os, sys
from axr._native import preprocess
page = os.sysconf("SC_PAGE_SIZE")
peak = [0]
def tick(stage, done, total, rows, tokens):
    with open("/proc/self/statm") as statm:
        peak[0] = max(peak[0], int(statm.read().split()[1]) * page // 1024)
preprocess(sys.argv[1], progress=tick)
print(peak[0])
"""


def _pretraining_peak_kib(workspace: PreprocessWorkspace, documents: int, name: str) -> int:
    data = workspace.root / f"{name}.jsonl"
    sentence = "Rivers carry silt down to the delta where the land slowly grows into the sea. "
    with data.open("w") as handle:
        for index in range(documents):
            handle.write(json.dumps({"body": f"{index} " + sentence * (20 + index % 40)}) + "\n")
    config = _pretraining_config(workspace, data, workspace.tokenizer_dir, "max_steps = 1")
    config.write_text(
        config.read_text().replace(str(workspace.prepared), str(workspace.root / f"prep-{name}"))
    )
    options = options_from_config(load_config(config))
    options.update(num_threads=2, chunk_rows=64, chunk_bytes=64 * 1024)
    child = [sys.executable, "-c", _RSS_CHILD, json.dumps(options)]
    completed = subprocess.run(child, capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


def test_pretraining_memory_stays_bounded(preprocess_workspace: PreprocessWorkspace) -> None:
    # ~0.4 MB vs ~4 MB of long documents, every one split, with 64 KiB chunks: the big corpus is
    # ~60 chunks, and holding it (text + ids + masks) would add well over 10 MiB.
    small = _pretraining_peak_kib(preprocess_workspace, 200, "small")
    large = _pretraining_peak_kib(preprocess_workspace, 2_000, "large")
    assert large - small < 6 * 1024, f"peak RSS grew from {small} KiB to {large} KiB"
