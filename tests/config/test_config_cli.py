"""`axr validate` through the real CLI entry point: exit codes, messages, printed config, examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from axr.cli import main
from axr.config import load_config
from axr.config.reference import reference_markdown

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# Extracted from shared/reference/axolotl-docs-2024-03.txt ("All yaml options"); kept in the repository.
AXOLOTL_KEYS = Path(__file__).with_name("axolotl_documented_keys.txt")

HEAD = 'base_model = "m"\n'
DATASET = '[[datasets]]\npath = "d.jsonl"\ntype = "alpaca"\n'


def run_validate(tmp_path: Path, keys: str, capsys, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "config.toml"
    path.write_text(HEAD + keys + DATASET, encoding="utf-8")
    code = main(["validate", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CONFLICTS = [
    ("warmup_steps = 10\nwarmup_ratio = 0.1\n", ("warmup_steps", "warmup_ratio")),
    ("eval_steps = 50\nevals_per_epoch = 2\n", ("eval_steps", "evals_per_epoch")),
    ("save_steps = 50\nsaves_per_epoch = 2\n", ("save_steps", "saves_per_epoch")),
    (
        'val_set_size = 0.1\ntest_datasets = [{ path = "e.jsonl", type = "alpaca" }]\n',
        ("test_datasets", "val_set_size"),
    ),
    ("load_in_4bit = true\nload_in_8bit = true\n", ("load_in_4bit", "load_in_8bit")),
    ('adapter = "qlora"\n', ("adapter", "qlora", "load_in_4bit")),
    ('adapter = "qlora"\nload_in_8bit = true\n', ("adapter", "qlora", "load_in_4bit")),
    ("relora_steps = 100\n", ("relora_steps", "adapter")),
    ("bf16 = true\nfp16 = true\n", ("bf16", "fp16")),
    ('fsdp = ["full_shard"]\ndeepspeed = "zero3.json"\n', ("fsdp", "deepspeed")),
    ("dataset_shard_num = 2\ndataset_shard_idx = 2\n", ("dataset_shard_idx", "dataset_shard_num")),
    ('chat_template = "jinja"\n', ("chat_template", "chat_template_jinja")),
]


@pytest.mark.parametrize(("keys", "named"), CONFLICTS, ids=[c[1][0] + "+" + c[1][-1] for c in CONFLICTS])
def test_each_conflict_exits_2_naming_both_keys(tmp_path, capsys, keys, named):
    code, out, err = run_validate(tmp_path, keys, capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    # Keys of features axr does not have yet (4-bit, ReLoRA, FSDP) add their own lines; the conflict is one.
    problem_lines = [line.strip() for line in err.splitlines()[1:] if "not supported yet" not in line]
    assert len(problem_lines) == 1, err
    for key in named:
        assert key in problem_lines[0], (key, err)


def test_conflicting_pairs_are_accepted_one_at_a_time(tmp_path, capsys):
    code, _, err = run_validate(tmp_path, 'warmup_steps = 10\nadapter = "lora"\nsave_steps = 5\n', capsys)
    assert code == 0, err


def test_unknown_keys_suggest_the_close_one(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(
        "base_model: m\nlora_rr: 8\ndatasets:\n  - path: d.jsonl\n    typ: alpaca\n", encoding="utf-8"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"axr: error: invalid config {path} (2 problems):")
    assert "lora_rr: unknown key (did you mean 'lora_r'?)" in err
    assert "datasets[0].typ: unknown key (did you mean 'type'?)" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(HEAD + "lora_rr = 8\n", encoding="utf-8")
    assert main(["--debug", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "lora_rr: unknown key" in err


def test_overrides_on_the_command_line(tmp_path, capsys):
    code, out, err = run_validate(tmp_path, "", capsys, "--lora_r=16", "--learning_rate=1e-4")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["lora_r"] == 16
    assert printed["learning_rate"] == pytest.approx(1e-4)
    code, _, err = run_validate(tmp_path, "", capsys, "--micro_batch_size=many")
    assert code == 2
    assert "micro_batch_size:" in err
    assert "(set by --micro_batch_size)" in err


def test_printed_config_is_the_resolved_config(tmp_path, capsys):
    code, out, _ = run_validate(tmp_path, "lora_r = 4\n", capsys)
    assert code == 0
    config = load_config(tmp_path / "config.toml")
    assert yaml.safe_load(out) == config.resolved_dict()
    assert re.search(r"^# mixed precision on this machine: (bf16|fp16|fp32) \((cpu|cuda)\)$", out, re.M)


def test_validate_without_a_config_is_a_user_error(capsys):
    assert main(["validate"]) == 2
    assert "needs a CONFIG" in capsys.readouterr().err


def test_other_commands_reject_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["version", "--lora_r=3"])


EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*.toml")) + sorted(EXAMPLES.glob("*.y*ml"))


def test_there_are_examples_in_both_syntaxes():
    names = {path.name for path in EXAMPLE_CONFIGS}
    assert {"alpaca_lora.toml", "alpaca_lora.yaml", "alpaca_full.toml", "chat_lora.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda path: path.name)
def test_every_example_validates_and_its_data_is_bundled(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # example paths are relative to the repository root
    assert main(["validate", str(path.relative_to(REPO))]) == 0, capsys.readouterr().err
    config = load_config(path)
    for dataset in config.datasets:
        rows = Path(dataset.path).read_text(encoding="utf-8").splitlines()
        assert rows, dataset.path
        assert all(isinstance(json.loads(row), dict) for row in rows)


def test_sample_data_matches_its_generator():
    script = EXAMPLES / "data" / "make_samples.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("alpaca_sample.jsonl", "chat_sample.jsonl"):
        assert (EXAMPLES / "data" / name).stat().st_size < 200_000


def test_key_reference_document_is_current(capsys):
    assert main(["validate", "--schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == reference_markdown()
    assert (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8") == printed, (
        "regenerate with: axr validate --schema > docs/config-reference.md"
    )


def _documented_keys() -> tuple[set[str], set[str]]:
    """Top-level and dataset keys of the "All yaml options" section of Axolotl's 2024-03 docs."""
    lines = [
        line for line in AXOLOTL_KEYS.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"
    ]
    dataset = {line.removeprefix("datasets.") for line in lines if line.startswith("datasets.")}
    return {line for line in lines if not line.startswith("datasets.")}, dataset


def test_schema_covers_every_documented_axolotl_key():
    from axr.config import AxrConfig, DatasetConfig, ledger
    from axr.config.messages import known_top_level_keys

    top, dataset = _documented_keys()
    assert len(top) > 140
    assert {"path", "type", "field_human", "no_input_format", "split"} <= dataset
    # Accepted by name: a typed field, a key of the ledger, or an old spelling read as a new key.
    known_top = set(AxrConfig.model_fields) | known_top_level_keys()
    assert sorted(top - known_top) == []
    assert sorted(dataset - set(DatasetConfig.model_fields) - set(ledger.DATASET_ENTRY)) == []


def test_overrides_as_separate_words_and_flags(tmp_path, capsys):
    code, out, err = run_validate(
        tmp_path, 'adapter = "lora"\n', capsys, "--sequence_len", "1024", "--adapter="
    )
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["sequence_len"] == 1024
    assert printed["adapter"] is None


def test_unknown_key_in_a_nested_table_suggests_the_close_one(tmp_path, capsys):
    code, _, err = run_validate(tmp_path, 'special_tokens = { pad_tokn = "<pad>" }\n', capsys)
    assert code == 2
    assert "special_tokens.pad_tokn: unknown key (did you mean 'pad_token'?)" in err
