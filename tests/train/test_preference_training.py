"""Preference training end to end: native pair data, packing, the reference model, learning.

A tiny random Llama and synthetic pairs: the chosen answers share a pattern the rejected ones lack,
so a few DPO steps must learn to prefer them. Every test runs offline on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from transformers import AutoTokenizer  # noqa: E402

from axr.config.load import validate_config  # noqa: E402
from axr.errors import AxrError, ConfigError  # noqa: E402
from axr.train import preference  # noqa: E402

WORDS = ["sky", "fruit", "cat", "dog", "tree", "car", "sun", "moon", "river", "stone", "bird", "fish"]


def _pairs(words: list[str] = WORDS) -> list[dict[str, Any]]:
    return [
        {"question": f"Is the {w} good?", "chosen": f"Yes, the {w} is good.", "rejected": f"No no {w} bad."}
        for w in words
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(tmp_path: Path, model: Path, dataset: dict[str, Any], **keys: Any) -> Any:
    return validate_config(
        {
            "base_model": str(model),
            "output_dir": str(tmp_path / "out"),
            "dataset_prepared_path": str(tmp_path / "prepared"),
            "rl": "dpo",
            "datasets": [dataset],
            "sequence_len": 128,
            "micro_batch_size": 4,
            "num_epochs": 1,
            "learning_rate": 5e-3,
            "adapter": "lora",
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_target_modules": [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            "sample_packing": True,
            "save_strategy": "no",
            "seed": 1,
            **keys,
        }
    )


def _texts(tokenizer: Any, data: preference.PreferenceSet, sequence: int) -> tuple[str, str]:
    ids, labels = data.sample(sequence)
    return tokenizer.decode(ids), tokenizer.decode(ids[labels != -100])


@pytest.mark.parametrize(
    ("dataset", "row", "rl", "expected"),
    [
        (
            {"type": "chatml.intel"},
            {"system": "Be kind.", "question": "Why?", "chosen": "Yes.", "rejected": "No."},
            "dpo",
            (
                "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
                "<|im_start|>assistant\n",
                "Yes.<|im_end|>",
            ),
        ),
        (
            {"type": "chatml.argilla"},
            {"instruction": "Why?", "chosen_response": "Yes.", "rejected_response": "No."},
            "dpo",
            ("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", "Yes.<|im_end|>"),
        ),
        (
            {"type": "chatml.argilla_chat"},
            {
                "chosen": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Yes."}],
                "rejected": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "No."}],
            },
            "dpo",
            ("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", "Yes.<|im_end|>"),
        ),
        (
            {"type": "llama3.prompt_pairs"},
            {"prompt": "Why?", "chosen": "Yes.", "rejected": "No."},
            "dpo",
            (
                "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "Yes.<|eot_id|>",
            ),
        ),
        (
            {"type": "chatml.ultra"},
            {
                "prompt": "Why?",
                "chosen": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Yes."}],
                "rejected": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "No."}],
            },
            "dpo",
            ("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", "Yes.<|im_end|>"),
        ),
        (
            {
                "type": "user_defined.default",
                "field_prompt": "q",
                "field_chosen": "good",
                "field_rejected": "bad",
                "prompt_format": "Q: {prompt}\nA: ",
                "chosen_format": "{chosen}!",
                "rejected_format": "{rejected}?",
            },
            {"q": "Why?", "good": "Yes", "bad": "No"},
            "dpo",
            ("Q: Why?\nA: ", "Yes!"),
        ),
        (
            # Axolotl's `type:` table form of user_defined.default.
            {"type": {"field_prompt": "q", "prompt_format": "Q: {prompt}\nA: "}},
            {"q": "Why?", "chosen": "Yes", "rejected": "No"},
            "dpo",
            ("Q: Why?\nA: ", "Yes"),
        ),
        (
            {"type": "chatml.argilla_chat"},
            {
                "completion": [
                    {"role": "user", "content": "Why?"},
                    {"role": "assistant", "content": "Yes."},
                ],
                "label": True,
            },
            "kto",
            ("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", "Yes.<|im_end|>"),
        ),
        (
            {"type": "llama3.argilla_chat"},
            {
                "completion": [
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Why?"},
                    {"role": "assistant", "content": "Yes."},
                ],
                "label": True,
            },
            "kto",
            (
                "<|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "Yes.<|eot_id|>",
            ),
        ),
        (
            {
                "type": "user_defined.default",
                "field_completion": "answer",
                "field_label": "ok",
                "completion_format": "[{completion}]",
            },
            {"prompt": "Why?", "answer": "Yes", "ok": True},
            "kto",
            ("Why?", "[Yes]"),
        ),
    ],
)
def test_dataset_keys_reach_the_formatter(
    tmp_path: Path, tiny_llama_dir: Path, dataset: dict[str, Any], row: dict[str, Any], rl: str, expected: Any
) -> None:
    """field_chosen, field_rejected, field_prompt, prompt_format, chosen_format, rejected_format,
    field_completion, field_label and completion_format change what is rendered and trained."""
    path = _write(tmp_path / "rows.jsonl", [row, row])
    cfg = _config(tmp_path, tiny_llama_dir, {"path": str(path), **dataset}, rl=rl)
    data = preference.open_preference_data(cfg).train
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text, trained = _texts(tokenizer, data, 0)
    prompt, completion = expected
    assert text == f"<s> {prompt}{completion}" or text == f"<s>{prompt}{completion}", text
    assert trained.strip() == completion.strip()
    if rl == "kto":
        assert data.per_unit == 1
        assert data.desirable is not None
        assert bool(data.desirable[0])
    else:
        assert data.per_unit == 2
        assert _texts(tokenizer, data, 1)[0].startswith(text[: -len(completion)])


def test_chat_template_pairs_equal_transformers_chat_template(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """chat_template.default with field_messages, field_chosen, message_property_mappings: the chosen
    sequence is exactly apply_chat_template(prompt + chosen), trained after the generation prompt."""
    row = {
        "conversation": [{"from": "user", "value": "Hi there"}],
        "good": {"from": "assistant", "value": "Hello!"},
        "bad": "Go away.",
    }
    path = _write(tmp_path / "chat.jsonl", [row])
    dataset = {
        "path": str(path),
        "type": "chat_template.default",
        "field_messages": "conversation",
        "field_chosen": "good",
        "field_rejected": "bad",
        "message_property_mappings": {"role": "from", "content": "value"},
        "chat_template": "chatml",
    }
    data = preference.open_preference_data(_config(tmp_path, tiny_llama_dir, dataset)).train
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    from axr._native import chat_style_source

    tokenizer.chat_template = chat_style_source("chatml")
    prompt = [{"role": "user", "content": "Hi there"}]
    for sequence, answer in ((0, "Hello!"), (1, "Go away.")):
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids, labels = data.sample(sequence)
        assert ids.tolist() == tokenizer(full, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids[labels != -100]) == full[len(head) :]


def test_argilla_chat_pairs_equal_transformers_chat_template(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """chat_template.argilla_chat: chosen and rejected are whole conversations; the turns before the
    last are the prompt (Axolotl takes them from the chosen one). Each sequence is exactly
    apply_chat_template(conversation), trained after apply_chat_template(prompt, generation prompt)."""
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a fruit."},
    ]
    answers = {"good": "An apple.", "bad": "I will not."}
    row = {
        name: [{"from": m["role"], "value": m["content"]} for m in prompt]
        + [{"from": "assistant", "value": answer}]
        for name, answer in answers.items()
    }
    path = _write(tmp_path / "argilla.jsonl", [row])
    dataset = {
        "path": str(path),
        "type": "chat_template.argilla_chat",
        "field_chosen": "good",
        "field_rejected": "bad",
        "message_property_mappings": {"role": "from", "content": "value"},
        "chat_template": "chatml",
    }
    # A store left with no pair is an error, not an empty store.
    with pytest.raises(ConfigError, match=r"none of the 1 preference pairs fits sequence_len = 32$"):
        preference.open_preference_data(_config(tmp_path, tiny_llama_dir, dataset, sequence_len=32))
    # Each sequence fits 128 though both together do not (a row per sequence when packed).
    config = _config(tmp_path, tiny_llama_dir, dataset)
    data = preference.open_preference_data(config).train
    assert len(data) == 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    from axr._native import chat_style_source

    tokenizer.chat_template = chat_style_source("chatml")
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    for sequence, answer in ((0, answers["good"]), (1, answers["bad"])):
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], tokenize=False
        )
        ids, labels = data.sample(sequence)
        assert ids.tolist() == tokenizer(full, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids[labels != -100]) == full[len(head) :]

    # Different turns before the last would be two prompts: refused, naming the row and field.
    row["bad"][1]["value"] = "Go away."
    _write(path, [row])
    with pytest.raises(AxrError, match=r"argilla\.jsonl:1: bad: the turns before the last"):
        preference.open_preference_data(_config(tmp_path, tiny_llama_dir, dataset))


def _conversation(*turns: str) -> list[dict[str, str]]:
    return [{"role": ("user", "assistant")[i % 2], "content": turn} for i, turn in enumerate(turns)]


def test_orpo_argilla_pairs_equal_transformers_chat_template(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """ORPO's chat_template.argilla: the prompt is `system`, then chosen's turns before its answer with
    `prompt` as the last user turn; each sequence is exactly apply_chat_template(prompt + answer),
    trained after apply_chat_template(prompt, generation prompt). Axolotl accepts it only under orpo."""
    rows = [
        {
            "system": "Be brief.",
            "prompt": "Name a fruit.",
            "chosen": _conversation("Name a fruit, please.", "An apple."),
            "rejected": _conversation("Name a fruit, please.", "I will not."),
        },
        {
            "system": "",
            "chosen": _conversation("Hi there", "Hello.", "Name a fruit.", "A pear."),
            "rejected": _conversation("Hi there", "Hello.", "Name a fruit.", "No."),
        },
    ]
    path = _write(tmp_path / "orpo.jsonl", rows)
    dataset = {"path": str(path), "type": "chat_template.argilla"}
    # Axolotl reads this type's template from the top-level chat_template.
    config = _config(tmp_path, tiny_llama_dir, dataset, rl="orpo", sequence_len=256, chat_template="chatml")
    data = preference.open_preference_data(config).train
    assert len(data) == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    from axr._native import chat_style_source

    tokenizer.chat_template = chat_style_source("chatml")
    prompts = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        _conversation("Hi there", "Hello.", "Name a fruit."),
    ]
    answers = [("An apple.", "I will not."), ("A pear.", "No.")]
    for unit, (prompt, pair) in enumerate(zip(prompts, answers, strict=True)):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        for sequence, answer in zip(data.sequences_of(unit), pair, strict=True):
            full = tokenizer.apply_chat_template(
                [*prompt, {"role": "assistant", "content": answer}], tokenize=False
            )
            ids, labels = data.sample(sequence)
            assert ids.tolist() == tokenizer(full, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids[labels != -100]) == full[len(head) :]

    # Checked before the inputs are hashed: the orpo store of the same rows is not reused under dpo.
    refused = r"^config: datasets\[0\]\.type: 'chat_template.argilla' is Axolotl's ORPO dataset type: "
    with pytest.raises(AxrError, match=refused):
        preference.open_preference_data(
            _config(tmp_path, tiny_llama_dir, dataset, sequence_len=256, chat_template="chatml")
        )


@pytest.mark.parametrize(
    ("kind", "rl", "good", "bad", "field", "message"),
    [
        (
            "chat_template.argilla",
            "orpo",
            {"chosen": _conversation("q", "a"), "rejected": _conversation("q", "b")},
            {"chosen": [{"role": "system", "content": "s"}, *_conversation("q", "a")], "rejected": []},
            r"chosen\[0\]",
            "role `system`, expected `user`",
        ),
        (
            "chat_template.argilla",
            "orpo",
            {"chosen": _conversation("q", "a"), "rejected": _conversation("q", "b")},
            {
                "chosen": _conversation("q", "a"),
                "rejected": [{"role": "user"}, {"role": "assistant", "content": "b"}],
            },
            r"rejected\[0\]\.content",
            "missing",
        ),
        (
            "chatml.argilla_chat",
            "kto",
            {"completion": _conversation("q", "a"), "label": True},
            {"completion": _conversation("q"), "label": False},
            r"completion\[1\]\.content",
            "missing",
        ),
        (
            "llama3.argilla_chat",
            "kto",
            {"completion": _conversation("q", "a"), "label": True},
            {"completion": "q", "label": False},
            "completion",
            "expected a list of messages",
        ),
    ],
)
def test_bad_conversation_rows_name_file_line_and_field(
    tmp_path: Path,
    tiny_llama_dir: Path,
    kind: str,
    rl: str,
    good: dict[str, Any],
    bad: dict[str, Any],
    field: str,
    message: str,
) -> None:
    path = _write(tmp_path / "bad.jsonl", [good, good, bad])
    dataset = {"path": str(path), "type": kind}
    cfg = _config(tmp_path, tiny_llama_dir, dataset, rl=rl, chat_template="chatml")
    with pytest.raises(AxrError, match=rf"bad\.jsonl:3: {field}: .*{message}"):
        preference.open_preference_data(cfg)


@pytest.mark.parametrize(
    ("row", "rl", "field", "message"),
    [
        ({"question": "q", "rejected": "r"}, "dpo", "chosen", "missing"),
        ({"question": "q", "chosen": "c", "rejected": "  "}, "dpo", "rejected", "empty answer"),
        ({"prompt": "q", "completion": "c", "label": "yes"}, "kto", "label", "expected true or false"),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, tiny_llama_dir: Path, row: dict[str, Any], rl: str, field: str, message: str
) -> None:
    good = _pairs()[0] if rl == "dpo" else {"prompt": "q", "completion": "c", "label": False}
    path = _write(tmp_path / "bad.jsonl", [good, row])
    kind = "chatml.intel" if rl == "dpo" else "chatml.prompt_pairs"
    cfg = _config(tmp_path, tiny_llama_dir, {"path": str(path), "type": kind}, rl=rl)
    with pytest.raises(AxrError, match=rf"bad\.jsonl:2: {field}: .*{message}"):
        preference.open_preference_data(cfg)


def test_pairs_stay_together_after_shuffle_and_val_split(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = _write(tmp_path / "pairs.jsonl", _pairs())
    cfg = _config(tmp_path, tiny_llama_dir, {"path": str(path), "type": "chatml.intel"}, val_set_size=0.25)
    data = preference.open_preference_data(cfg)
    assert len(data.train) == 9
    assert len(data.eval) == 3
    rows = [data.train.row_of(u) for u in range(9)] + [data.eval.row_of(u) for u in range(3)]
    assert sorted(rows) == list(range(12))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    from axr.train.batches import build_plan

    plan = build_plan(cfg, data.train.lengths, batch_size=2, packing=True, rank=0, world_size=1, train=True)
    seen = 0
    for epoch in range(2):
        plan.set_epoch(epoch)
        for index in range(len(plan)):
            batch = preference.collate_units(
                data.train, plan.micro_batch(index), packing=True, pad_token_id=0
            )
            sequences = batch["sequences"].tolist()
            for chosen, rejected in zip(sequences[0::2], sequences[1::2], strict=True):
                assert (chosen % 2, rejected) == (0, chosen + 1)
                word = _texts(tokenizer, data.train, chosen)[1].split()[2]
                assert f"No no {word} bad." in _texts(tokenizer, data.train, rejected)[1]
                seen += 1
    assert seen > 0


def test_packed_log_prob_sums_equal_unpacked(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    path = _write(tmp_path / "pairs.jsonl", _pairs()[:4])
    # Rows of 256 tokens hold two pairs each.
    data = preference.open_preference_data(
        _config(tmp_path, tiny_llama_dir, {"path": str(path), "type": "chatml.intel"}, sequence_len=256)
    ).train
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()
    bins = [[0, 1], [2, 3]]
    with torch.no_grad():
        packed = preference.collate_units(data, bins, packing=True, pad_token_id=0)
        padded = preference.collate_units(data, [[u] for u in range(4)], packing=False, pad_token_id=0)
        assert packed["input_ids"].shape[0] == 2
        assert padded["input_ids"].shape[0] == 8
        packed_sums, packed_tokens = preference.sequence_logps(model, packed, "sdpa", "cpu")
        padded_sums, padded_tokens = preference.sequence_logps(model, padded, "sdpa", "cpu")
    assert packed["sequences"].tolist() == padded["sequences"].tolist() == list(range(8))
    assert torch.equal(packed_tokens, padded_tokens)
    assert torch.allclose(packed_sums, padded_sums, rtol=1e-5, atol=1e-4)
    # Each sum is over that sequence's completion only: recompute one by hand from an unpacked forward.
    ids, labels = data.sample(3)
    with torch.no_grad():
        logits = model(torch.tensor(ids)[None]).logits[0, :-1].log_softmax(-1)
    targets = torch.tensor(labels[1:])
    keep = targets != -100
    expected = logits[keep].gather(1, targets[keep][:, None]).sum()
    assert abs(float(packed_sums[3]) - float(expected)) < 1e-4


def test_a_pair_too_long_for_one_row_is_kept_and_packed_a_row_per_sequence(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """As Axolotl's drop_long_rl_seq: a pair is kept when each sequence fits sequence_len. Packed, a
    pair longer than a row together is planned as a full row and collated as one row per sequence;
    its log-prob sums equal the unpacked ones."""
    from transformers import AutoModelForCausalLM

    from axr.train.batches import build_plan

    pairs = _pairs()[:4]
    for pair in pairs[2:]:
        pair["chosen"] += " It is really" * 12
        pair["rejected"] += " It is truly" * 12
    cfg = _config(
        tmp_path, tiny_llama_dir, {"path": str(_write(tmp_path / "p.jsonl", pairs)), "type": "chatml.intel"}
    )
    data = preference.open_preference_data(cfg).train
    assert len(data) == 4  # nothing dropped
    totals = [sum(data.sequence_length(s) for s in data.sequences_of(u)) for u in range(4)]
    longest = max(data.sequence_length(s) for s in range(8))
    long_units = [u for u in range(4) if totals[u] > 128]
    assert longest <= 128, longest
    assert len(long_units) == 2, totals
    assert all(data.lengths[u] == 128 for u in long_units)
    plan = build_plan(cfg, data.lengths, batch_size=2, packing=True, rank=0, world_size=1, train=True)
    for index in range(len(plan)):
        for members in plan.micro_batch(index):
            assert len(members) == 1 or not set(members) & set(long_units), members
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()
    short = [u for u in range(4) if u not in long_units]
    bins = [[short[0]], [short[1]], [long_units[0]], [long_units[1]]]
    with torch.no_grad():
        packed = preference.collate_units(data, bins, packing=True, pad_token_id=0)
        unpacked_bins = [[u] for members in bins for u in members]
        padded = preference.collate_units(data, unpacked_bins, packing=False, pad_token_id=0)
        # One row for each short pair, one per sequence of each long pair.
        assert packed["input_ids"].shape[0] == 6
        assert packed["input_ids"].shape[1] <= 128
        packed_sums, packed_tokens = preference.sequence_logps(model, packed, "sdpa", "cpu")
        padded_sums, padded_tokens = preference.sequence_logps(model, padded, "sdpa", "cpu")
    assert packed["sequences"].tolist() == padded["sequences"].tolist()
    assert torch.equal(packed_tokens, padded_tokens)
    assert torch.allclose(packed_sums, padded_sums, rtol=1e-5, atol=1e-4)


def _reward_accuracy(model: Any, data: preference.PreferenceSet) -> float:
    """Share of pairs whose DPO reward margin (policy vs the adapter-disabled base) is positive."""
    bins = [[unit] for unit in range(len(data))]
    batch = preference.collate_units(data, bins, packing=False, pad_token_id=0)
    with torch.no_grad():
        policy, _ = preference.sequence_logps(model, batch, "sdpa", "cpu")
        with model.disable_adapter():
            ref, _ = preference.sequence_logps(model, batch, "sdpa", "cpu")
    margins = (policy - ref)[0::2] - (policy - ref)[1::2]
    return float((margins > 0).float().mean())


def test_dpo_raises_reward_accuracy_on_the_training_pairs(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """rl: dpo with LoRA, packed pairs and gradient accumulation: accuracy from 0 (policy = reference,
    every margin 0) to above 0.9 on the training pairs, with TRL's metrics logged per step."""
    from axr.train.loop import train

    path = _write(tmp_path / "pairs.jsonl", _pairs())
    cfg = _config(
        tmp_path,
        tiny_llama_dir,
        {"path": str(path), "type": "chatml.intel"},
        max_steps=8,
        gradient_accumulation_steps=2,
        micro_batch_size=3,
        learning_rate=1e-2,
    )
    data = preference.open_preference_data(cfg)
    result = train(cfg, data=data)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if "rewards/accuracies" in record]
    assert steps[0]["rewards/accuracies"] == 0.0
    assert steps[0]["rewards/margins"] == 0.0
    assert result.losses[-1] < result.losses[0] - 0.2
    accuracy = _reward_accuracy(result.model, data.train)
    assert accuracy > 0.9, accuracy
    assert steps[-1]["rewards/chosen"] > steps[-1]["rewards/rejected"]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("rl", ["kto", "orpo"])
def test_kto_and_orpo_move_their_metrics(tmp_path: Path, tiny_llama_dir: Path, rl: str) -> None:
    from axr.train.loop import train

    if rl == "kto":
        rows = [
            {"prompt": f"Is the {w} good?", "completion": f"Yes, the {w} is good.", "label": True}
            for w in WORDS
        ]
        rows += [
            {"prompt": f"Is the {w} bad?", "completion": f"No no {w} bad.", "label": False} for w in WORDS
        ]
        dataset = {"type": "chatml.prompt_pairs"}
    else:
        rows, dataset = _pairs(), {"type": "chatml.intel"}
    path = _write(tmp_path / "rows.jsonl", rows)
    cfg = _config(
        tmp_path,
        tiny_llama_dir,
        {"path": str(path), **dataset},
        rl=rl,
        max_steps=6,
        learning_rate=1e-2,
        micro_batch_size=8,
    )
    result = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    # A KTO micro-batch may hold only one label: compare the steps that saw both.
    both = [record for record in records if "rewards/chosen" in record and "rewards/rejected" in record]
    first, last = both[0], both[-1]
    assert result.losses[-1] < result.losses[0]
    if rl == "kto":
        assert "kl" in last
        assert (
            last["rewards/chosen"] - last["rewards/rejected"]
            > first["rewards/chosen"] - first["rewards/rejected"]
        )
    else:
        assert last["log_odds_ratio"] > first["log_odds_ratio"]
        assert last["nll_loss"] < first["nll_loss"]


def test_precomputed_reference_gives_the_same_losses(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """Full fine-tune, padded rows: the frozen base copy and precompute_ref_log_probs give the same losses."""
    from axr.train.loop import train

    path = _write(tmp_path / "pairs.jsonl", _pairs()[:8])
    losses = []
    for precompute in (False, True):
        cfg = _config(
            tmp_path / str(precompute),
            tiny_llama_dir,
            {"path": str(path), "type": "chatml.intel"},
            adapter=None,
            lora_r=None,
            lora_alpha=None,
            lora_target_modules=None,
            max_steps=3,
            learning_rate=1e-3,
            sample_packing=False,
            precompute_ref_log_probs=precompute,
        )
        losses.append(train(cfg).losses)
    assert losses[0][0] == pytest.approx(np.log(2), abs=1e-6)
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    assert losses[0][-1] != losses[0][0]


def test_method_keys_reach_the_loss(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """rl_beta, orpo_alpha, simpo_gamma, cpo_alpha, kto_desirable_weight, kto_undesirable_weight,
    dpo_loss_type, dpo_loss_weights, dpo_label_smoothing and rpo_alpha set the method's loss."""
    dataset = {"path": str(tmp_path / "unused.jsonl"), "type": "chatml.intel"}

    def method(**keys: Any) -> preference.Method:
        return preference.method_of(_config(tmp_path, tiny_llama_dir, dataset, **keys))

    assert method(rl_beta=0.3).beta == 0.3
    assert method(rl="orpo", orpo_alpha=0.7).beta == 0.7
    simpo = method(rl="simpo", simpo_gamma=1.5, cpo_alpha=0.0)
    assert (simpo.beta, simpo.gamma, simpo.cpo_alpha) == (2.0, 1.5, 0.0)
    kto = method(rl="kto", kto_desirable_weight=1.3, kto_undesirable_weight=0.4)
    assert (kto.desirable_weight, kto.undesirable_weight) == (1.3, 0.4)
    mixed = method(dpo_loss_type=["sigmoid", "hinge"], dpo_loss_weights=[0.5, 2.0], rpo_alpha=0.2)
    assert mixed.loss_types == ("sigmoid", "hinge", "sft")
    assert mixed.loss_weights == (0.5, 2.0, 0.2)
    assert method(rl="ipo").loss_types == ("ipo",)
    assert method(dpo_loss_type=["robust"], dpo_label_smoothing=0.1).label_smoothing == 0.1

    # Each setting changes the loss of the same log-probs.
    logps = torch.tensor([-10.0, -12.0, -8.0, -7.0], dtype=torch.float64)
    tokens = torch.tensor([5.0, 6.0, 4.0, 3.0], dtype=torch.float64)
    ref = torch.tensor([-11.0, -11.0, -8.5, -7.5], dtype=torch.float64)

    def loss_of(**keys: Any) -> float:
        return float(preference.batch_loss(method(**keys), logps, tokens, ref, None, None)[0])

    assert loss_of(rl_beta=0.3) != loss_of(rl_beta=0.1)
    assert loss_of(rpo_alpha=1.0) != loss_of()
    assert loss_of(rl="orpo", orpo_alpha=0.5) != loss_of(rl="orpo")
    assert loss_of(rl="simpo", simpo_gamma=1.0) != loss_of(rl="simpo")

    with pytest.raises(ConfigError, match="dpo_label_smoothing: has no effect"):
        method(dpo_label_smoothing=0.1)
    with pytest.raises(ConfigError, match="simpo_gamma: applies to rl: simpo, not rl: dpo"):
        method(simpo_gamma=1.0)
    with pytest.raises(ConfigError, match="dpo_loss_type: 'nca_pair' is not supported yet"):
        method(dpo_loss_type=["nca_pair"])
    with pytest.raises(ConfigError, match="precompute_ref_log_probs: rl: orpo has no reference"):
        method(rl="orpo", precompute_ref_log_probs=True)
