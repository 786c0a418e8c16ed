"""Preference data in the prepared store: `axr preprocess` with `rl` writes pairs (or KTO rows) once;
they read back equal to the in-memory render, are reused while nothing changes, keep pairs whole
through the val split, and `axr inspect` shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from axr.cli import main
from axr.commands.preprocess import summary_lines
from axr.config import load_config
from axr.data import options_from_config, preprocess
from axr.data.preference_store import read_preference_store
from axr.train import preference

WORDS = ["sky", "fruit", "cat", "dog", "tree", "car", "sun", "moon", "river", "stone", "bird", "fish"]


def _rows(rl: str) -> list[dict[str, Any]]:
    if rl == "kto":
        return [
            {
                "prompt": f"Is the {w} good?",
                "completion": f"The {w} is {'good' if i % 3 else 'bad'}.",
                "label": bool(i % 3),
            }
            for i, w in enumerate(WORDS)
        ]
    return [
        {"question": f"Is the {w} good?", "chosen": f"Yes, the {w} is good.", "rejected": f"No no {w} bad."}
        for w in WORDS
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(
    tmp_path: Path, tokenizer: Path, data: Path, *, rl: str = "dpo", top: str = "", dataset: str = ""
) -> Path:
    kind = "chatml.intel" if rl != "kto" else "chatml.prompt_pairs"
    path = tmp_path / "config.toml"
    path.write_text(
        f'base_model = "{tokenizer}"\nsequence_len = 128\nrl = "{rl}"\nsample_packing = true\n'
        f'dataset_prepared_path = "{tmp_path / "prepared"}"\n{top}\n'
        f'[[datasets]]\npath = "{data}"\ntype = "{kind}"\n{dataset}\n'
    )
    return path


@pytest.mark.parametrize("rl", ["dpo", "kto"])
def test_store_round_trip_equals_the_in_memory_render(
    tmp_path: Path, mistral_tokenizer_dir: Path, rl: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every stored unit equals the render of its row (ids and masks, KTO labels); the over-long row
    is dropped and counted; train and eval hold the kept rows once each, each pair whole."""
    rows = _rows(rl)
    long_row = dict(rows[4])
    long_row["chosen" if rl != "kto" else "completion"] = "very " * 150 + "long."
    rows[4] = long_row
    data = _write(tmp_path / "rows.jsonl", rows)
    cfg = load_config(_config(tmp_path, mistral_tokenizer_dir, data, rl=rl, top="val_set_size = 0.25"))
    result = preprocess(cfg)
    assert not result.reused
    train, evaluation = (read_preference_store(result.stores[split]) for split in ("train", "eval"))

    options = options_from_config(cfg)
    rendered = preference.encode_entries(cfg, options["datasets"], options)
    per_unit = 1 if rl == "kto" else 2
    assert train.per_unit == evaluation.per_unit == rendered.per_unit == per_unit
    seen = []
    for part in (train, evaluation):
        for unit in range(len(part)):
            row = part.row_of(unit)
            seen.append(row)
            for stored, fresh in zip(part.sequences_of(unit), rendered.sequences_of(row), strict=True):
                ids, labels = part.sample(stored)
                expected_ids, expected_labels = rendered.sample(fresh)
                assert ids.tolist() == expected_ids.tolist()
                assert labels.tolist() == expected_labels.tolist()
                if rl == "kto":
                    assert part.desirable is not None
                    assert rendered.desirable is not None
                    assert part.desirable[stored] == rendered.desirable[fresh]
    assert sorted(seen) == [row for row in range(len(rows)) if row != 4]
    assert (len(train), len(evaluation)) == (8, 3)  # 11 kept, round(0.25 * 11) to evaluation

    assert train.meta["counts"]["dropped"] == {"longer_than_sequence_len": 1}
    lines = "\n".join(summary_lines(result, cfg))
    what = "rows" if rl == "kto" else "pairs"
    assert f"{what} read 12, kept 11; dropped: longer than sequence_len 1" in lines
    assert "split off for evaluation 3" in lines


def test_pairs_stay_whole_through_the_val_split(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    """The split picks pairs: in both stores, sequences 2i and 2i + 1 are one row's chosen and rejected."""
    from tokenizers import Tokenizer

    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    cfg = load_config(_config(tmp_path, mistral_tokenizer_dir, data, top="val_set_size = 0.5"))
    result = preprocess(cfg)
    tokenizer = Tokenizer.from_file(str(mistral_tokenizer_dir / "tokenizer.json"))
    rows = []
    for split in ("train", "eval"):
        part = read_preference_store(result.stores[split])
        for unit in range(len(part)):
            chosen, rejected = part.sequences_of(unit)
            assert (chosen, rejected) == (2 * unit, 2 * unit + 1)
            word = WORDS[part.row_of(unit)]
            texts = [tokenizer.decode(part.sample(s)[0].tolist()) for s in (chosen, rejected)]
            assert f"Yes, the {word} is good." in texts[0]
            assert f"No no {word} bad." in texts[1]
            rows.append(part.row_of(unit))
    assert sorted(rows) == list(range(len(WORDS)))


@pytest.mark.parametrize("rl", ["dpo", "kto"])
def test_shuffle_merged_datasets_orders_the_stored_units_with_the_seed(
    tmp_path: Path, mistral_tokenizer_dir: Path, rl: str
) -> None:
    """Two datasets: shuffled together once with the seed by default (the same seed, the same
    order), in the datasets' order with shuffle_merged_datasets = false; every unit whole either way."""
    data = _write(tmp_path / "rows.jsonl", _rows(rl))
    kind = "chatml.intel" if rl != "kto" else "chatml.prompt_pairs"
    second = f'[[datasets]]\npath = "{data}"\ntype = "{kind}"\n'

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(mistral_tokenizer_dir / "tokenizer.json"))
    answers = ["Yes, the {} is good.", "No no {} bad."] if rl != "kto" else ["The {} is"]

    def stored_rows(top: str) -> list[int]:
        cfg = load_config(_config(tmp_path, mistral_tokenizer_dir, data, rl=rl, top=top, dataset=second))
        part = read_preference_store(preprocess(cfg).stores["train"])
        for unit in range(len(part)):
            # Each stored unit is its row's render, whole: every member holds the row's answer.
            word = WORDS[part.row_of(unit) % len(WORDS)]
            for sequence, answer in zip(part.sequences_of(unit), answers, strict=True):
                assert answer.format(word) in tokenizer.decode(part.sample(sequence)[0].tolist())
        return [part.row_of(unit) for unit in range(len(part))]

    in_order = stored_rows("shuffle_merged_datasets = false")
    assert in_order == list(range(2 * len(WORDS)))
    shuffled = stored_rows("seed = 7")
    assert sorted(shuffled) == in_order
    assert shuffled != in_order
    # Rows of the second dataset are mixed in with the first's.
    assert max(shuffled[: len(WORDS)]) >= len(WORDS)
    assert stored_rows("seed = 7") == shuffled
    assert stored_rows("seed = 8") != shuffled


def test_a_second_run_reuses_the_store_and_changes_rebuild_it(
    tmp_path: Path, mistral_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    config = _config(tmp_path, mistral_tokenizer_dir, data)
    first = preprocess(load_config(config))
    # A second run must not render: the native encoder is not reached.
    import axr._native

    def no_render(*args: Any) -> Any:
        raise AssertionError("rendered again")

    with monkeypatch.context() as patch:
        patch.setattr(axr._native, "encode_preference", no_render)
        again = preprocess(load_config(config))
        # The dpo → orpo switch reads the same pairs: same store.
        orpo = preprocess(load_config(config, ["--rl=orpo"]))
    assert again.reused
    assert orpo.reused
    assert again.root == orpo.root == first.root

    changed = {
        "the data": lambda: _write(data, _rows("dpo")[:-1]),
        # Room for the next change: Llama 3's header text is many Mistral tokens.
        "sequence_len": lambda: config.write_text(
            config.read_text().replace("sequence_len = 128", "sequence_len = 512")
        ),
        "the template": lambda: config.write_text(config.read_text().replace("chatml.intel", "llama3.intel")),
        "packing": lambda: config.write_text(
            config.read_text().replace("sample_packing = true", "sample_packing = false")
        ),
    }
    roots = {first.root}
    for what, change in changed.items():
        change()
        result = preprocess(load_config(config))
        assert not result.reused, what
        assert result.root not in roots, what
        roots.add(result.root)


def test_kto_pair_fails_before_rendering(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    from axr.errors import ConfigError

    config = _config(tmp_path, mistral_tokenizer_dir, _write(tmp_path / "rows.jsonl", _rows("dpo")))
    with pytest.raises(ConfigError, match="rl: kto_pair is not supported"):
        preprocess(load_config(config, ["--rl=kto_pair"]))
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_cli_preprocess_summary_and_inspect_show_a_pair(
    tmp_path: Path, mistral_tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    # In the rows' order, so that pair 1 is row 2 (line 2).
    config = _config(tmp_path, mistral_tokenizer_dir, data, top="shuffle_merged_datasets = false")
    assert main(["preprocess", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train  12 pairs (24 sequences)" in out
    assert "pairs read 12, kept 12; dropped: longer than sequence_len 0" in out
    assert "doctor: not supported yet on preference data" in out
    assert main(["preprocess", str(config), "--no-progress", "--no-doctor"]) == 0
    assert capsys.readouterr().out.startswith("reused ")

    assert main(["inspect", str(config), "--index", "1", "--ids"]) == 0
    out = capsys.readouterr().out
    assert "12 pairs" in out
    assert "=== pair 1: datasets[0] (" in out
    assert "row 2 ===" in out
    assert "--- chosen:" in out
    assert "--- rejected:" in out
    assert "<|im_start|>assistant\n[[Yes, the fruit is good.<|im_end|>]]" in out
    assert "<|im_start|>assistant\n[[No no fruit bad.<|im_end|>]]" in out
    assert "(1, -100)" in out


@pytest.mark.parametrize(
    ("args", "top", "message"),
    [
        (["--shard", "0/2"], "", "--shard: sharded preprocessing is not supported yet with rl"),
        (["--merge"], "", "--merge: not supported yet with rl"),
        (["--verify-encoder", "4"], "", "--verify-encoder: not supported yet with rl"),
        ([], 'on_bad_row = "skip"', "on_bad_row: 'skip' is not supported yet with rl"),
        (
            [],
            'excess_length_strategy = "truncate"',
            "excess_length_strategy: 'truncate' is not supported yet",
        ),
        ([], "dataset_shard_num = 2\ndataset_shard_idx = 0", "dataset_shard_num: not supported yet with rl"),
    ],
)
def test_cli_refuses_what_preference_stores_do_not_support(
    tmp_path: Path,
    mistral_tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    top: str,
    message: str,
) -> None:
    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    config = _config(tmp_path, mistral_tokenizer_dir, data, top=top)
    assert main(["preprocess", str(config), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


@pytest.mark.parametrize(
    ("row", "rl", "field", "message"),
    [
        ({"question": "q", "rejected": "r"}, "dpo", "chosen", "missing"),
        ({"question": "q", "chosen": "c", "rejected": "  "}, "dpo", "rejected", "empty answer"),
        ({"prompt": "q", "completion": "c", "label": "yes"}, "kto", "label", "expected true or false"),
    ],
)
def test_cli_bad_rows_name_file_line_and_field_and_leave_no_store(
    tmp_path: Path,
    mistral_tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    row: dict[str, Any],
    rl: str,
    field: str,
    message: str,
) -> None:
    data = _write(tmp_path / "bad.jsonl", [_rows(rl)[0], row])
    config = _config(tmp_path, mistral_tokenizer_dir, data, rl=rl)
    assert main(["preprocess", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"bad.jsonl:2: {field}: " in err
    assert message in err
    assert list((tmp_path / "prepared").iterdir()) == []


def test_inspect_doctor_on_a_preference_store_is_refused(
    tmp_path: Path, mistral_tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    config = _config(tmp_path, mistral_tokenizer_dir, data)
    assert main(["inspect", str(config), "--doctor"]) == 2
    assert "--doctor: not supported yet on preference stores" in capsys.readouterr().err


def test_a_store_without_rl_is_not_read_as_pairs(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    from axr.errors import FormatError
    from preprocess_support import PreprocessWorkspace, alpaca_rows

    workspace = PreprocessWorkspace(tmp_path, mistral_tokenizer_dir)
    result = preprocess(load_config(workspace.config(workspace.write_rows("a.jsonl", alpaca_rows(3)))))
    with pytest.raises(FormatError, match="not a preference store"):
        read_preference_store(result.stores["train"])


def test_a_preference_store_is_not_read_as_sft_samples(tmp_path: Path, mistral_tokenizer_dir: Path) -> None:
    from axr.data import PreparedDataset
    from axr.errors import FormatError

    data = _write(tmp_path / "rows.jsonl", _rows("dpo"))
    result = preprocess(load_config(_config(tmp_path, mistral_tokenizer_dir, data)))
    with pytest.raises(FormatError, match="a preference store"):
        PreparedDataset(result.stores["train"])


def test_test_datasets_become_the_eval_store_with_their_own_counts(
    tmp_path: Path, mistral_tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from axr.data.preference_store import report_dropped

    rows = _rows("dpo")
    held_out = [dict(rows[0], chosen="very " * 150), rows[1], rows[2]]
    data = _write(tmp_path / "rows.jsonl", rows[3:])
    test = _write(tmp_path / "test.jsonl", held_out)
    top = f'[[test_datasets]]\npath = "{test}"\ntype = "chatml.intel"\n'
    cfg = load_config(_config(tmp_path, mistral_tokenizer_dir, data, dataset=top))
    result = preprocess(cfg)
    evaluation = read_preference_store(result.stores["eval"])
    assert sorted(evaluation.row_of(unit) for unit in range(len(evaluation))) == [1, 2]
    assert evaluation.meta["datasets"][0]["key"] == "test_datasets[0]"
    lines = summary_lines(result, cfg)
    assert any(line.startswith("train  9 pairs") for line in lines)
    assert "       pairs read 3, kept 2; dropped: longer than sequence_len 1" in lines
    report_dropped(result)
    assert (
        "axr: 1 of 3 preference pairs (eval) dropped: longer than sequence_len 128" in capsys.readouterr().err
    )
