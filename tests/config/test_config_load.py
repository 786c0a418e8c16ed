"""Loading configs: TOML and YAML agree, overrides are typed, every problem is reported with its key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from axr.config import AxrConfig, DatasetConfig, UserDefinedFormat, load_config, parse_overrides
from axr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

MINIMAL = 'base_model = "./model"\n[[datasets]]\npath = "data.jsonl"\ntype = "alpaca"\n'


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(error: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [line.strip() for line in str(error.value).splitlines()[1:]]


def test_toml_and_yaml_examples_resolve_to_the_same_config():
    from_toml = load_config(EXAMPLES / "alpaca_lora.toml")
    from_yaml = load_config(EXAMPLES / "alpaca_lora.yaml")
    assert from_toml == from_yaml
    assert from_toml.resolved_dict() == from_yaml.resolved_dict()
    assert from_toml.learning_rate == pytest.approx(5e-4)


def test_toml_and_yaml_agree_on_nested_tables_and_yaml_exponents(tmp_path):
    toml_path = write(
        tmp_path,
        """
        base_model = "m"
        learning_rate = 3e-5
        lora_target_modules = ["q_proj", "v_proj"]
        special_tokens = { pad_token = "<pad>" }
        overrides_of_model_config = { rope_scaling = { type = "linear", factor = 2.0 } }
        [[datasets]]
        path = "d.jsonl"
        type = { field_instruction = "question", format = "Q: {instruction} {input}" }
        [[datasets]]
        path = "c.jsonl"
        type = "chat_template"
        message_property_mappings = { role = "from", content = "value" }
        """,
    )
    # YAML 1.1 reads `3e-5` (no dot) as a string, as Axolotl users often write it.
    yaml_path = write(
        tmp_path,
        """
        base_model: m
        learning_rate: 3e-5
        lora_target_modules: [q_proj, v_proj]
        special_tokens:
          pad_token: "<pad>"
        overrides_of_model_config:
          rope_scaling: {type: linear, factor: 2.0}
        datasets:
          - path: d.jsonl
            type:
              field_instruction: question
              format: "Q: {instruction} {input}"
          - path: c.jsonl
            type: chat_template
            message_property_mappings: {role: from, content: value}
        """,
        "config.yaml",
    )
    from_toml, from_yaml = load_config(toml_path), load_config(yaml_path)
    assert from_toml == from_yaml
    assert isinstance(from_toml.learning_rate, float)
    custom = from_toml.datasets[0].type
    assert isinstance(custom, UserDefinedFormat)
    assert (custom.field_instruction, custom.field_output, custom.no_input_format) == (
        "question",
        "output",
        "{instruction} ",
    )
    assert from_toml.datasets[1].message_property_mappings == {"role": "from", "content": "value"}


def test_defaults_are_filled_and_attribute_names_are_axolotl_keys(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert isinstance(config, AxrConfig)
    assert isinstance(config.datasets[0], DatasetConfig)
    assert config.datasets[0].type == "alpaca"
    assert config.sequence_len == 512
    assert config.micro_batch_size == 1
    assert config.train_on_inputs is False
    assert config.dataset_prepared_path is None
    assert config.bf16 == "auto"
    # excess_length_strategy unset: split for completion data, drop for the rest (decided per dataset).
    assert (config.on_bad_row, config.excess_length_strategy, config.packing_strategy) == (
        "error",
        None,
        "bfd",
    )
    assert config.datasets[0].message_property_mappings == {"role": "role", "content": "content"}
    assert config.config_path == str(tmp_path / "config.toml")


def test_legacy_message_fields_fold_into_the_property_map(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
            base_model = "m"
            [[datasets]]
            path = "c.jsonl"
            type = "chat_template"
            message_field_role = "from"
            message_field_content = "value"
            """,
        )
    )
    assert config.datasets[0].message_property_mappings == {"role": "from", "content": "value"}


def test_overrides_are_typed_through_the_schema(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        [
            "--lora_r=16",
            "--learning_rate=1e-4",
            "--save_strategy=no",
            "--lora_target_modules=[q_proj, v_proj]",
            "--sample_packing",
            "--sequence_len",
            "1024",
            "--adapter=lora",
            "--base_model=123",
        ],
    )
    assert config.lora_r == 16
    assert isinstance(config.lora_r, int)
    assert config.learning_rate == pytest.approx(1e-4)
    assert isinstance(config.learning_rate, float)
    # YAML would read `no` as false; the schema wants a string here, so the string wins.
    assert config.save_strategy == "no"
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.sample_packing is True
    assert config.sequence_len == 1024
    assert config.adapter == "lora"
    assert config.base_model == "123"


def test_an_empty_override_unsets_a_key(tmp_path):
    config = load_config(write(tmp_path, 'adapter = "lora"\n' + MINIMAL), ["--adapter="])
    assert config.adapter is None


def test_a_bad_override_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, MINIMAL), ["--lora_r=abc", "--lora_rr=3", "oops"])
    lines = problems(error)
    assert any(line.startswith("lora_r:") and "--lora_r" in line and "'abc'" in line for line in lines), lines
    assert "--lora_rr: unknown key (did you mean '--lora_r'?)" in lines
    assert any("'oops'" in line and "--key=value" in line for line in lines)


def test_parse_overrides_reports_without_raising():
    values, found = parse_overrides(["--micro_batch_size=8", "--nope=1"])
    assert values == {"micro_batch_size": 8}
    assert found == ["--nope: unknown key"]


def test_every_problem_is_reported_at_once_with_the_file(tmp_path):
    path = write(
        tmp_path,
        """
        base_model = "m"
        lora_rr = 8
        lora_r = 0
        learning_rate = -1.0
        sequence_len = "long"
        bf16 = "maybe"
        warmup_ratio = 1.5
        [[datasets]]
        path = "d.jsonl"
        feild_messages = "conversations"
        """,
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value).splitlines()[0]
    lines = problems(error)
    assert "lora_rr: unknown key (did you mean 'lora_r'?)" in lines
    assert "datasets[0].feild_messages: unknown key (did you mean 'field_messages'?)" in lines
    assert any(line.startswith("lora_r: input should be greater than or equal to 1") for line in lines)
    assert any(line.startswith("learning_rate: input should be greater than 0") for line in lines)
    assert any(line.startswith("sequence_len: ") and "'long'" in line for line in lines)
    assert 'bf16: expected true/false or "auto" or "full" (got \'maybe\')' in lines
    assert any(line.startswith("warmup_ratio: input should be less than 1") for line in lines)
    assert len(lines) == 7, lines


def test_conflicts_are_reported_alongside_type_errors(tmp_path):
    path = write(tmp_path, "lora_r = 'x'\nwarmup_steps = 10\nwarmup_ratio = 0.1\n" + MINIMAL)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    lines = problems(error)
    assert any(line.startswith("lora_r:") for line in lines)
    assert any("warmup_steps" in line and "warmup_ratio" in line for line in lines)


def test_top_level_use_of_a_dataset_key_says_where_it_belongs(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(
            write(
                tmp_path,
                MINIMAL.replace('base_model = "./model"', 'base_model = "m"\nroles_to_train = ["assistant"]'),
            )
        )
    assert "roles_to_train: unknown key (it is a key of each datasets entry)" in problems(error)


def test_custom_format_table_is_checked(tmp_path):
    path = write(
        tmp_path,
        """
        base_model = "m"
        [[datasets]]
        path = "d.jsonl"
        type = { formatt = "x" }
        [[datasets]]
        path = "d.jsonl"
        type = { no_input_format = "{instruction} {input}" }
        [[datasets]]
        path = "d.jsonl"
        shards_idx = 2
        """,
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert problems(error) == [
        "datasets[0].type.formatt: unknown key (did you mean 'format'?)",
        "datasets[1].type: no_input_format must not contain {input} (it is for rows without an input)",
        "datasets[2]: shards_idx is set without shards: give the number of shards too",
    ]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.toml", None, "config file not found"),
        ("config.ini", "a=1", "unknown config file type '.ini'"),
        ("bad.toml", "base_model = \n", "not valid TOML"),
        ("bad.yaml", "base_model: [1,\n", "not valid YAML: line"),
        ("list.yaml", "- 1\n", "must be a table of keys, not a list"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path, name, text, expected):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_importing_axr_config_does_not_import_torch():
    code = "import sys, axr.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["alpaca_lora.toml", "alpaca_full.toml", "chat_lora.toml"])
def test_resolved_dict_validates_back_to_the_same_config(name):
    config = load_config(EXAMPLES / name)
    assert AxrConfig.model_validate(config.resolved_dict()) == config


def test_blank_yaml_values_mean_unset(tmp_path):
    path = write(
        tmp_path,
        """
        base_model: m
        adapter:
        bf16:
        save_strategy: no
        datasets:
          - path: tokenized.jsonl
            type:
        """,
        "config.yaml",
    )
    config = load_config(path)
    assert config.adapter is None
    assert config.bf16 == "auto"  # blank is unset, so the default applies, as in Axolotl
    assert config.datasets[0].type is None
    assert config.save_strategy == "no"  # YAML 1.1 reads a bare `no` as false


def test_a_boolean_is_not_a_number(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "lora_r = true\nlearning_rate = false\n" + MINIMAL))
    assert problems(error) == [
        "lora_r: expected a number, not true/false (got True)",
        "learning_rate: expected a number, not true/false (got False)",
    ]
