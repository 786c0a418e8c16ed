"""The key ledger: every accepted key in exactly one set, each used key proven by a named test,
not-yet keys refused at validation (all at once), no-effect keys noted, ``--explain`` per config."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from axr.cli import main
from axr.config import AxrConfig, DatasetConfig, ledger, load_config
from axr.config.messages import known_top_level_keys
from axr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
LEDGER_SOURCE = REPO / "python" / "axr" / "config" / "ledger.py"


def _literal_keys(table_name: str) -> list[str]:
    """The keys of a dict literal in ledger.py, duplicates included (a dict would silently keep one)."""
    tree = ast.parse(LEDGER_SOURCE.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == table_name
        ):
            assert isinstance(node.value, ast.Dict)
            return [key.value for key in node.value.keys if isinstance(key, ast.Constant)]
    raise AssertionError(f"{table_name} not found in ledger.py")


@pytest.mark.parametrize(
    ("table_name", "model"), [("TOP_LEVEL", AxrConfig), ("DATASET_ENTRY", DatasetConfig)]
)
def test_every_schema_key_is_in_exactly_one_set(table_name, model):
    keys = _literal_keys(table_name)
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    assert duplicates == [], f"in several entries of {table_name}: {duplicates}"
    table = getattr(ledger, table_name)
    missing = sorted(set(model.model_fields) - set(table))
    assert missing == [], f"schema keys in none of the sets (add them to ledger.{table_name}): {missing}"
    for key, entry in table.items():
        assert isinstance(entry, ledger.Used | ledger.NotYet | ledger.NoEffect), key


@pytest.mark.parametrize(
    ("table", "model"), [(ledger.TOP_LEVEL, AxrConfig), (ledger.DATASET_ENTRY, DatasetConfig)]
)
def test_used_keys_have_a_typed_field(table, model):
    untyped = sorted(
        key
        for key, entry in table.items()
        if isinstance(entry, ledger.Used) and key not in model.model_fields
    )
    assert untyped == [], f"used keys need a typed field in schema.py: {untyped}"


def _case_tables() -> dict[str, set[str]]:
    """For each test of test_key_effects.py: the keys its cases cover."""
    import test_key_effects as effects

    return {
        "test_preprocess_option_keys": set(effects.PREPROCESS_CASES),
        "test_dataset_entry_keys": set(effects.DATASET_CASES),
        "test_model_load_keys": set(effects.MODEL_CASES),
        "test_tokenizer_load_keys": set(effects.TOKENIZER_CASES),
        "test_adapter_keys": set(effects.ADAPTER_CASES),
        "test_optimizer_keys": set(effects.OPTIMIZER_CASES),
        "test_tracker_keys": set(effects.TRACKER_CASES),
        "test_loop_keys": set(effects.LOOP_CASES),
    }


def _used_entries() -> list[tuple[str, ledger.Used]]:
    return [
        (key, entry)
        for table in (ledger.TOP_LEVEL, ledger.DATASET_ENTRY)
        for key, entry in table.items()
        if isinstance(entry, ledger.Used)
    ]


def test_each_used_key_names_a_test_that_exercises_it():
    cases = _case_tables()
    problems = []
    for key, entry in _used_entries():
        file, _, name = entry.test.partition("::")
        path = REPO / file
        if not path.is_file():
            problems.append(f"{key}: {file} does not exist")
            continue
        source = path.read_text(encoding="utf-8")
        match = re.search(rf"^def {re.escape(name)}\(.*?(?=^def |^@|\Z)", source, re.M | re.S)
        if match is None:
            problems.append(f"{key}: {entry.test} does not exist")
        elif file.endswith("test_key_effects.py") and name in cases:
            if key not in cases[name]:
                problems.append(f"{key}: {entry.test} has no case for it")
        elif key not in match.group(0):
            problems.append(f"{key}: {entry.test} never mentions it")
    assert problems == []


def test_old_spellings_point_at_ledger_keys():
    for old, new in ledger.ALIASES.items():
        assert old not in ledger.TOP_LEVEL, old
        assert old not in AxrConfig.model_fields, old
        assert new in ledger.TOP_LEVEL, (old, new)
    for flag in ledger.ATTENTION_FLAGS:
        assert flag not in ledger.TOP_LEVEL, flag
        assert flag not in AxrConfig.model_fields, flag


def test_counts_add_up():
    counts = ledger.counts()
    assert sum(counts.values()) == len(ledger.TOP_LEVEL) + len(ledger.DATASET_ENTRY)
    assert all(count > 20 for count in counts.values()), counts


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_not_yet_keys_fail_validation_all_at_once(tmp_path, capsys):
    path = write(
        tmp_path,
        "base_model: m\nuse_ray: true\ngptq: true\nadapter: lora\ndpo_use_weighting: true\n"
        "torch_compile: true\nsave_strategy: best\nlora_r: 8\n"
        "datasets:\n  - path: d.jsonl\n    type: alpaca\n    step_separator: x\n",
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert err.startswith(f"axr: error: invalid config {path} (6 problems):"), err
    for key in (
        "use_ray",
        "gptq",
        "dpo_use_weighting",
        "torch_compile",
        "save_strategy",
        "datasets[0].step_separator",
    ):
        assert any(line.startswith(f"{key}: not supported yet: ") for line in lines), (key, err)
    assert "use_ray: not supported yet: run training on Ray (issue 13)" in lines


def test_a_gguf_base_model_validates_and_a_gguf_model_config_does_not(tmp_path):
    config = load_config(write(tmp_path, "base_model: ./models/SmolLM2-135M-Instruct.Q4_1.gguf\n"))
    assert config.base_model.endswith(".gguf")
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "base_model: ./m\nbase_model_config: ./models/m.gguf\n"))
    assert str(error.value).splitlines()[1:] == [
        "  base_model_config: not supported yet: a GGUF file as the model config (set base_model to it)"
    ]


def test_off_values_of_not_yet_keys_validate(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "base_model: m\nload_in_8bit: false\ngptq: false\ndeepspeed:\nfsdp: []\ntorch_compile: false\n",
        )
    )
    assert config.load_in_8bit is False
    assert config.deepspeed is None


def test_no_effect_keys_validate_with_one_note_each(tmp_path, capsys):
    config = load_config(
        write(tmp_path, "base_model: m\nstrict: true\ngptq_groupsize: 128\nlora_qkv_kernel: true\n")
    )
    assert config.notes == [
        "strict: has no effect in axr: axr lets command-line overrides set any key",
        "gptq_groupsize: has no effect in axr: setting of Axolotl's old GPTQ loader; Axolotl ignores it too",
        "lora_qkv_kernel: has no effect in axr: a fused GPU kernel computing the same thing faster; "
        "axr's result does not depend on it",
    ]
    err = capsys.readouterr().err
    assert err.count("axr: note: ") == 3


def test_streaming_validates_with_a_note_that_axr_streams_anyway(tmp_path, capsys):
    config = load_config(write(tmp_path, "base_model: m\nstreaming: true\n"))
    assert len(config.notes) == 1
    assert config.notes[0].startswith("streaming: has no effect in axr: axr always reads datasets")
    assert "bounded memory" in capsys.readouterr().err


def test_explain_prints_the_ledger_entry_of_each_key_set(tmp_path, capsys):
    path = write(
        tmp_path,
        "base_model: m\nmodel_config:\n  max_position_embeddings: 64\nlora_r: 4\nstrict: false\n"
        "liger_rms_norm: true\nload_in_8bit: false\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n",
    )
    assert main(["validate", "--explain", str(path)]) == 0
    out = capsys.readouterr().out
    explained = out.split("# ", 2)[1].splitlines()[1:]
    assert explained == [
        "model_config: old name of overrides_of_model_config; read as overrides_of_model_config",
        "base_model: used by models.load (tokenizer and model loading)",
        "lora_r: used by models.adapters.apply_adapter (the PEFT LoRA config)",
        "strict: has no effect in axr: axr lets command-line overrides set any key",
        "load_in_8bit: used by models.quantization (bitsandbytes 4-bit / 8-bit base weights)",
        "datasets: used by data.preprocess.options_from_config (the native pipeline's options)",
        "overrides_of_model_config: used by models.load (tokenizer and model loading)",
        "liger_rms_norm: has no effect in axr: a fused GPU kernel computing the same thing faster; "
        "axr's result does not depend on it",
        "datasets[0].path: used by data.preprocess.options_from_config (the native pipeline's options)",
        "datasets[0].type: used by data.preprocess: a format key of the dataset's type (native pipeline)",
    ]


def test_explain_still_reports_not_yet_keys(tmp_path, capsys):
    path = write(tmp_path, "base_model: m\nuse_ray: true\n")
    assert main(["validate", "--explain", str(path)]) == 2
    captured = capsys.readouterr()
    assert "use_ray: not supported yet: run training on Ray" in captured.out
    assert "use_ray: not supported yet" in captured.err


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("lora_rr", "lora_r"),
        ("learning_rat", "learning_rate"),
        ("micro_batchsize", "micro_batch_size"),
        ("context_parapllel_size", "context_parallel_size"),
        ("rms_norm_liger", "liger_rms_norm"),
    ],
)
def test_typos_suggest_the_key_they_misspell(tmp_path, typo, meant):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, f"base_model: m\n{typo}: 1\n"))
    assert f"{typo}: unknown key (did you mean '{meant}'?)" in str(error.value)


@pytest.mark.parametrize("key", ["batch_size", "model_config", "liger_rms_norm", "eval_strategy", "plugins"])
def test_keys_of_other_meanings_are_known_keys_not_typos(key):
    assert key in known_top_level_keys()


@pytest.mark.parametrize(
    ("unknown", "not_suggested"),
    [("train_batch_size", "eval_batch_size"), ("liger_norm", "flash_attn_rms_norm")],
)
def test_no_suggestion_of_a_key_with_another_meaning(tmp_path, unknown, not_suggested):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, f"base_model: m\n{unknown}: 1\n"))
    assert f"{unknown}: unknown key" in str(error.value)
    assert not_suggested not in str(error.value)
