"""Every *used* key of the ledger changes what axr does: each case sets one key and shows a difference.

The ledger (``axr.config.ledger``) names, for each used key, the test that proves it; the cases
here cover the keys it sends to this file (``test_ledger.py`` checks that each such key has a
case). Each case compares what the code builds from a real validated config with the key set
against the same config without it: the native pipeline's options, the arguments reaching
``from_pretrained``, the PEFT config, the optimizer, the trackers, or what a short training
run does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from axr.config import load_config
from axr.config.precision import apply_tf32
from axr.errors import ConfigError


def validated(tmp_path: Path, keys: dict[str, Any], name: str = "config.yaml") -> Any:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(keys, sort_keys=False), encoding="utf-8")
    return load_config(path)


def with_and_without(tmp_path: Path, base: dict[str, Any], change: dict[str, Any]) -> tuple[Any, Any]:
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    return validated(tmp_path / "a", base), validated(tmp_path / "b", {**base, **change})


# ---- preprocessing options ---------------------------------------------------------------------

ALPACA = [{"path": "d.jsonl", "type": "alpaca"}]
CHAT = [{"path": "c.jsonl", "type": "chat_template"}]

# key: (the change, extra base keys)
PREPROCESS_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "tokenizer_config": ({"tokenizer_config": "OTHER"}, {}),
    "datasets": ({"datasets": [{"path": "other.jsonl", "type": "alpaca"}]}, {}),
    "shuffle_merged_datasets": ({"shuffle_merged_datasets": False}, {}),
    "test_datasets": ({"test_datasets": [{"path": "e.jsonl", "type": "alpaca"}]}, {}),
    "chat_template": ({"chat_template": "chatml"}, {}),
    "chat_template_jinja": (
        {"chat_template_jinja": "{{ messages }}"},
        {"chat_template": "jinja", "chat_template_jinja": "{{ bos_token }}"},
    ),
    "default_system_message": ({"default_system_message": "Be brief."}, {"datasets": CHAT}),
    "eot_tokens": ({"eot_tokens": ["<|im_end|>"]}, {"datasets": CHAT}),
    "dataset_prepared_path": ({"dataset_prepared_path": "elsewhere"}, {}),
    "dataset_num_proc": ({"dataset_num_proc": 3}, {}),
    "val_set_size": ({"val_set_size": 0.1}, {}),
    "dataset_shard_num": ({"dataset_shard_num": 2}, {}),
    "dataset_shard_idx": ({"dataset_shard_idx": 1}, {"dataset_shard_num": 2}),
    "sequence_len": ({"sequence_len": 1024}, {}),
    "train_on_inputs": ({"train_on_inputs": True}, {}),
    "special_tokens": ({"special_tokens": {"pad_token": "<pad>"}}, {}),
    "tokens": ({"tokens": ["<extra>"]}, {}),
    "seed": ({"seed": 0}, {}),
    "on_bad_row": ({"on_bad_row": "skip"}, {}),
    "excess_length_strategy": ({"excess_length_strategy": "truncate"}, {}),
}


@pytest.fixture
def tokenizer_folders(tmp_path: Path) -> tuple[Path, Path]:
    folders = (tmp_path / "model", tmp_path / "OTHER")
    for folder in folders:
        folder.mkdir()
        (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    return folders


def _options(cfg: Any) -> dict[str, Any]:
    from axr.data.preprocess import options_from_config

    return options_from_config(cfg)


@pytest.mark.parametrize("key", sorted(PREPROCESS_CASES))
def test_preprocess_option_keys(tmp_path, tokenizer_folders, monkeypatch, key):
    monkeypatch.chdir(tmp_path)  # relative tokenizer_config "OTHER" resolves here
    change, extra = PREPROCESS_CASES[key]
    base = {"base_model": str(tokenizer_folders[0]), "datasets": ALPACA, **extra}
    without, with_key = with_and_without(tmp_path, base, change)
    assert _options(with_key) != _options(without)


def test_seed_zero_is_the_store_shuffle_seed(tmp_path, tokenizer_folders):
    cfg = validated(tmp_path, {"base_model": str(tokenizer_folders[0]), "datasets": ALPACA, "seed": 0})
    assert _options(cfg)["seed"] == 0


DATASET_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "path": ({"path": "other.jsonl"}, {}),
    "type": ({"type": "completion"}, {}),
    "ds_type": ({"ds_type": "json"}, {}),
    "data_files": ({"data_files": ["part-1.jsonl"]}, {}),
    "shards": ({"shards": 2}, {}),
    "shards_idx": ({"shards_idx": 1}, {"shards": 2}),
    "split": ({"split": "validation"}, {}),
    "train_on_split": ({"train_on_split": "validation"}, {}),
    "field": ({"field": "body"}, {"type": "completion"}),
    "conversation": ({"conversation": "chatml"}, {"type": "alpaca:chat"}),
    "field_human": ({"field_human": "user"}, {"type": "sharegpt"}),
    "field_model": ({"field_model": "bot"}, {"type": "sharegpt"}),
    "roles": ({"roles": {"user": ["human"]}}, {"type": "chat_template"}),
    "field_messages": ({"field_messages": "conversation"}, {"type": "chat_template"}),
    "message_property_mappings": ({"message_property_mappings": {"role": "from"}}, {"type": "chat_template"}),
    "message_field_role": ({"message_field_role": "from"}, {"type": "chat_template"}),
    "message_field_content": ({"message_field_content": "value"}, {"type": "chat_template"}),
    "message_field_training": ({"message_field_training": "train"}, {"type": "chat_template"}),
    "roles_to_train": ({"roles_to_train": ["assistant", "user"]}, {"type": "chat_template"}),
    "train_on_eos": ({"train_on_eos": "all"}, {"type": "chat_template"}),
    "chat_template": ({"chat_template": "chatml"}, {"type": "chat_template"}),
    "chat_template_jinja": (
        {"chat_template_jinja": "{{ messages }}"},
        {"type": "chat_template", "chat_template": "jinja", "chat_template_jinja": "{{ bos_token }}"},
    ),
    "drop_system_message": ({"drop_system_message": True}, {"type": "chat_template"}),
    "field_system": ({"field_system": "sys"}, {"type": None}),
    "field_instruction": ({"field_instruction": "question"}, {"type": None}),
    "field_input": ({"field_input": "context"}, {"type": None}),
    "field_output": ({"field_output": "answer"}, {"type": None}),
    "system_prompt": ({"system_prompt": "Be brief."}, {"type": None}),
    "system_format": ({"system_format": "[{system}]"}, {"type": None}),
    "format": ({"format": "Q: {instruction} {input}\nA: "}, {"type": None}),
    "no_input_format": ({"no_input_format": "Q: {instruction}\nA: "}, {"type": None}),
    "dataset_shard_num": ({"dataset_shard_num": 2}, {}),
    "dataset_shard_idx": ({"dataset_shard_idx": 1}, {"dataset_shard_num": 2}),
}


@pytest.mark.parametrize("key", sorted(DATASET_CASES))
def test_dataset_entry_keys(tmp_path, tokenizer_folders, key):
    change, extra = DATASET_CASES[key]
    entry = {"path": "d.jsonl", "type": "alpaca", **extra}
    entry = {name: value for name, value in entry.items() if value is not None}
    base = {"base_model": str(tokenizer_folders[0]), "datasets": [entry]}
    without, with_key = with_and_without(tmp_path, base, {"datasets": [{**entry, **change}]})
    assert _options(with_key)["datasets"] != _options(without)["datasets"]


# ---- model and tokenizer loading ---------------------------------------------------------------


class _LoadedModel(Exception):
    pass


def _model_calls(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, str, dict[str, Any]]]:
    """The from_pretrained calls load_model makes (config, then model), stopped before the weights load."""
    import transformers

    from axr.models import load as load_module

    calls: list[tuple[Any, str, dict[str, Any]]] = []

    def fake(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
        calls.append((loader, name, kwargs))
        if loader is transformers.AutoConfig:
            return transformers.LlamaConfig(vocab_size=8)
        raise _LoadedModel

    monkeypatch.setattr(load_module, "_from_pretrained", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    precision = load_module.resolve_precision(cfg, "cpu", adapter=False)
    with pytest.raises(_LoadedModel):
        load_module.load_model(cfg, tokenizer=None, precision=precision, attention="sdpa")
    config_call, model_call = calls
    model_kwargs = dict(model_call[2])
    model_config = model_kwargs.pop("config")
    return [
        (config_call[0], config_call[1], config_call[2]),
        (model_call[0], model_call[1], {**model_kwargs, "config": model_config.to_dict()}),
    ]


MODEL_CASES: dict[str, dict[str, Any]] = {
    "base_model": {"base_model": "other-model"},
    "base_model_config": {"base_model_config": "config-folder"},
    "model_type": {"model_type": "LlamaForCausalLM"},
    "trust_remote_code": {"trust_remote_code": True},
    "overrides_of_model_config": {"overrides_of_model_config": {"max_position_embeddings": 1234}},
    "bfloat16": {"bfloat16": True},
    "float16": {"float16": True},
    "device_map": {"device_map": "auto"},
    "max_memory": {"max_memory": {"cpu": "1GiB"}},
    "gpu_memory_limit": {"gpu_memory_limit": 20},
}


@pytest.mark.parametrize("key", sorted(MODEL_CASES))
def test_model_load_keys(tmp_path, monkeypatch, key):
    without, with_key = with_and_without(tmp_path, {"base_model": "m"}, MODEL_CASES[key])
    assert _model_calls(with_key, monkeypatch) != _model_calls(without, monkeypatch)


TOKENIZER_CASES: dict[str, dict[str, Any]] = {
    "tokenizer_type": {"tokenizer_type": "LlamaTokenizerFast"},
    "tokenizer_use_fast": {"tokenizer_use_fast": False},
    "tokenizer_legacy": {"tokenizer_legacy": False},
}


@pytest.mark.parametrize("key", sorted(TOKENIZER_CASES))
def test_tokenizer_load_keys(tmp_path, monkeypatch, key):
    from axr.models import load as load_module

    def calls_of(cfg: Any) -> list[tuple[Any, str, dict[str, Any]]]:
        calls: list[tuple[Any, str, dict[str, Any]]] = []

        def fake(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
            calls.append((loader, name, kwargs))
            raise _LoadedModel

        monkeypatch.setattr(load_module, "_from_pretrained", fake)
        with pytest.raises(_LoadedModel):
            load_module.load_tokenizer(cfg)
        return calls

    without, with_key = with_and_without(tmp_path, {"base_model": "m"}, TOKENIZER_CASES[key])
    assert calls_of(with_key) != calls_of(without)


def _tiny_model(tmp_path: Path, tiny_llama_dir: Path, **keys: Any) -> Any:
    from axr.models.load import load_model, load_tokenizer, resolve_precision

    cfg = validated(tmp_path, {"base_model": str(tiny_llama_dir), **keys})
    tokenizer, _ = load_tokenizer(cfg)
    return load_model(
        cfg, tokenizer, precision=resolve_precision(cfg, "cpu", adapter=False), attention="sdpa"
    )


def test_resize_token_embeddings_to_32x(tmp_path, tiny_llama_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = _tiny_model(tmp_path / "a", tiny_llama_dir, tokens=["<new>"])
    rounded = _tiny_model(
        tmp_path / "b", tiny_llama_dir, tokens=["<new>"], resize_token_embeddings_to_32x=True
    )
    rows = plain.get_input_embeddings().num_embeddings
    assert rounded.get_input_embeddings().num_embeddings == -(-rows // 32) * 32 != rows


def _checkpointing_kwargs(model: Any) -> dict[str, Any] | None:
    for module in model.modules():
        function = getattr(module, "_gradient_checkpointing_func", None)
        if isinstance(function, functools.partial):
            return dict(function.keywords)
    return None


def test_gradient_checkpointing_keys(tmp_path, tiny_llama_dir):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    plain = _tiny_model(tmp_path / "a", tiny_llama_dir)
    checkpointed = _tiny_model(tmp_path / "b", tiny_llama_dir, gradient_checkpointing=True)
    reentrant = _tiny_model(
        tmp_path / "c",
        tiny_llama_dir,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": True},
    )
    assert not plain.is_gradient_checkpointing
    assert checkpointed.is_gradient_checkpointing
    assert _checkpointing_kwargs(checkpointed) == {"use_reentrant": False}
    assert _checkpointing_kwargs(reentrant) == {"use_reentrant": True}


def test_tf32(tmp_path):
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        apply_tf32(validated(tmp_path, {"base_model": "m", "tf32": True}))
        assert torch.backends.cuda.matmul.allow_tf32 is True
        apply_tf32(validated(tmp_path, {"base_model": "m", "tf32": False}))
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


# ---- adapter, optimizer, trackers, attention, plugins ------------------------------------------

ADAPTER_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "adapter": ({"adapter": "lora"}, {}),
    "lora_r": ({"lora_r": 4}, {"adapter": "lora"}),
    "lora_alpha": ({"lora_alpha": 64}, {"adapter": "lora"}),
    "lora_dropout": ({"lora_dropout": 0.1}, {"adapter": "lora"}),
    "lora_target_modules": ({"lora_target_modules": ["k_proj"]}, {"adapter": "lora"}),
    "lora_target_linear": ({"lora_target_linear": True}, {"adapter": "lora"}),
    "peft_layers_to_transform": ({"peft_layers_to_transform": [0]}, {"adapter": "lora"}),
    "lora_modules_to_save": ({"lora_modules_to_save": ["lm_head"]}, {"adapter": "lora"}),
    "lora_fan_in_fan_out": ({"lora_fan_in_fan_out": True}, {"adapter": "lora"}),
}


@pytest.mark.parametrize("key", sorted(ADAPTER_CASES))
def test_adapter_keys(tmp_path, monkeypatch, key):
    import peft

    from axr.models.adapters import apply_adapter

    monkeypatch.setattr(peft, "get_peft_model", lambda model, config: config)
    change, extra = ADAPTER_CASES[key]
    base = {"base_model": "m", "lora_target_modules": ["q_proj", "v_proj"], **extra}
    without, with_key = with_and_without(tmp_path, base, change)
    model = torch.nn.Linear(2, 2)

    def built(cfg: Any) -> Any:
        result = apply_adapter(cfg, model, tokens_added=False)
        return result.to_dict() if hasattr(result, "to_dict") else "full fine-tune"

    assert built(with_key) != built(without)


OPTIMIZER_CASES: dict[str, dict[str, Any]] = {
    "learning_rate": {"learning_rate": 0.5},
    "optimizer": {"optimizer": "sgd"},
    "optim_args": {"optim_args": "amsgrad=true"},
    "adam_beta1": {"adam_beta1": 0.0},
    "adam_beta2": {"adam_beta2": 0.5},
    "adam_epsilon": {"adam_epsilon": 0.1},
}


def _optimizer_summary(cfg: Any) -> Any:
    from axr.train.optim import build_optimizer

    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    return type(optimizer).__name__, groups


@pytest.mark.parametrize("key", sorted(OPTIMIZER_CASES))
def test_optimizer_keys(tmp_path, key):
    without, with_key = with_and_without(tmp_path, {"base_model": "m"}, OPTIMIZER_CASES[key])
    assert _optimizer_summary(with_key) != _optimizer_summary(without)


def test_adam_beta1_zero_is_kept_and_optim_args_string_is_parsed(tmp_path):
    cfg = validated(
        tmp_path, {"base_model": "m", "adam_beta1": 0.0, "optim_args": "amsgrad=true,foreach=False"}
    )
    assert cfg.optim_args == {"amsgrad": True, "foreach": False}
    _, groups = _optimizer_summary(cfg)
    assert groups[0]["betas"] == (0.0, 0.999)
    assert groups[0]["amsgrad"] is True


TRACKER_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "use_tensorboard": ({"use_tensorboard": True}, {}),
    "wandb_project": ({"wandb_project": "p"}, {}),
    "wandb_mode": ({"wandb_mode": "offline"}, {"wandb_project": "p"}),
    "wandb_entity": ({"wandb_entity": "team"}, {"wandb_project": "p"}),
    "wandb_name": ({"wandb_name": "run"}, {"wandb_project": "p"}),
    "wandb_run_id": ({"wandb_run_id": "id-1"}, {"wandb_project": "p"}),
    "mlflow_tracking_uri": ({"mlflow_tracking_uri": "file:./ml"}, {}),
    "mlflow_experiment_name": ({"mlflow_experiment_name": "exp"}, {}),
}


def _trackers(cfg: Any) -> Any:
    from axr.train.progress import tracker_init_kwargs, trackers_of

    try:
        wanted: Any = trackers_of(cfg)
    except ConfigError as error:  # the package is missing: the key was read all the same
        wanted = str(error)
    return wanted, tracker_init_kwargs(cfg)


@pytest.mark.parametrize("key", sorted(TRACKER_CASES))
def test_tracker_keys(tmp_path, key):
    change, extra = TRACKER_CASES[key]
    without, with_key = with_and_without(tmp_path, {"base_model": "m", **extra}, change)
    assert _trackers(with_key) != _trackers(without)


def test_attn_implementation(tmp_path):
    from axr.models.attention import select_attention

    assert select_attention(validated(tmp_path, {"base_model": "m"})) == "sdpa"
    assert (
        select_attention(validated(tmp_path, {"base_model": "m", "attn_implementation": "eager"})) == "eager"
    )
    assert select_attention(validated(tmp_path, {"base_model": "m", "eager_attention": True})) == "eager"


def test_plugins(tmp_path, capsys):
    plain = validated(tmp_path, {"base_model": "m"})
    liger = validated(tmp_path, {"base_model": "m", "plugins": ["axolotl.integrations.liger.LigerPlugin"]})
    assert plain.notes == []
    assert liger.notes == [
        "plugins[0]: LigerPlugin has no effect in axr: Liger's fused GPU kernels compute the same model; "
        "axr trains without them"
    ]
    assert "LigerPlugin has no effect" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"plugins\[0\]: not supported yet: SwanLabPlugin"):
        validated(tmp_path, {"base_model": "m", "plugins": ["axolotl.integrations.swanlab.SwanLabPlugin"]})
    with pytest.raises(ConfigError, match=r"plugins\[0\]: unknown plugin 'my.Plugin'"):
        validated(tmp_path, {"base_model": "m", "plugins": ["my.Plugin"]})


# ---- the training loop -------------------------------------------------------------------------

LOOP_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "output_dir": ({"output_dir": "elsewhere"}, {}),
    "pad_to_sequence_len": ({"pad_to_sequence_len": True}, {}),
    "sample_packing": ({"sample_packing": True}, {}),
    "eval_sample_packing": ({"eval_sample_packing": True}, {}),
    "eval_batch_size": ({"eval_batch_size": 4}, {}),
    "num_epochs": ({"num_epochs": 2}, {}),
    "max_steps": ({"max_steps": 2}, {}),
    "logging_steps": ({"logging_steps": 2}, {}),
    "evals_per_epoch": ({"evals_per_epoch": 0}, {}),
    "save_strategy": ({"save_strategy": "no"}, {}),
    "save_steps": ({"save_steps": 2}, {}),
    "saves_per_epoch": ({"saves_per_epoch": 2}, {}),
    "save_total_limit": ({"save_total_limit": 1}, {"save_steps": 1}),
    "group_by_length": ({"group_by_length": True}, {}),
    "packing_strategy": ({"packing_strategy": "sequential"}, {"sample_packing": True}),
    "max_grad_norm": ({"max_grad_norm": 0.0}, {}),
}


def _rows(count: int, seed: int) -> list[tuple[Any, Any]]:
    import numpy as np

    generator = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        ids = generator.integers(3, 32000, size=int(generator.integers(4, 30)))
        labels = ids.copy()
        labels[:2] = -100
        rows.append((ids, labels))
    return rows


def _training_trace(tmp_path: Path, tiny_llama_dir: Path, keys: dict[str, Any], monkeypatch: Any) -> Any:
    from axr.testing import InMemoryDataset
    from axr.train import loop

    shapes: list[tuple[Any, ...]] = []
    collate = loop.collate_micro_batch

    def recording(*args: Any, **kwargs: Any) -> Any:
        batch = collate(*args, **kwargs)
        shapes.append((tuple(batch["input_ids"].shape), int(batch["input_ids"].sum())))
        return batch

    monkeypatch.setattr(loop, "collate_micro_batch", recording)
    monkeypatch.chdir(tmp_path)
    config = {
        "base_model": str(tiny_llama_dir),
        "output_dir": "out",
        "sequence_len": 64,
        "micro_batch_size": 2,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        **keys,
    }
    cfg = validated(tmp_path, config)
    result = loop.train(
        cfg,
        data=loop.TrainingData(
            train=InMemoryDataset(_rows(8, seed=1)),
            eval=InMemoryDataset(_rows(4, seed=2)),
        ),
    )
    output = Path(cfg.output_dir)
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {
        "output_dir": str(output.resolve()),
        "steps": result.steps,
        "losses": [round(loss, 5) for loss in result.losses],
        "eval_losses": [round(loss, 5) for loss in result.eval_losses],
        "logged": [line.get("step") for line in metrics],
        "checkpoints": sorted(path.name for path in output.glob("checkpoint-*")),
        "batches": shapes,
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(LOOP_CASES))
def test_loop_keys(tmp_path, tiny_llama_dir, monkeypatch, key):
    change, extra = LOOP_CASES[key]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    without = _training_trace(tmp_path / "a", tiny_llama_dir, extra, monkeypatch)
    with_key = _training_trace(tmp_path / "b", tiny_llama_dir, {**extra, **change}, monkeypatch)
    differing = [name for name in without if name != "output_dir" and without[name] != with_key[name]]
    if key == "output_dir":
        differing = ["output_dir"] if without["output_dir"] != with_key["output_dir"] else []
    assert differing, (key, without)
