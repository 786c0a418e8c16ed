"""Evaluation, early stopping, loss watchdog, added tokens with LoRA, clear errors for what is absent."""

from __future__ import annotations

import json

import pytest
from helpers import InMemoryDataset, random_rows, write_config
from safetensors.torch import load_file

from axr.config import load_config
from axr.errors import AxrError, ConfigError
from axr.models.attention import select_attention
from axr.train.loop import TrainingData, train


def run(tmp_path, tiny_llama_dir, rows, eval_rows=None, **keys):
    config = load_config(write_config(tmp_path / "config.toml", tiny_llama_dir, tmp_path / "out", **keys))
    evaluation = InMemoryDataset(eval_rows) if eval_rows is not None else None
    return train(config, data=TrainingData(train=InMemoryDataset(rows), eval=evaluation))


def test_eval_loss_is_reported_every_eval_steps(tmp_path, tiny_llama_dir):
    result = run(
        tmp_path,
        tiny_llama_dir,
        random_rows(8, seed=1),
        random_rows(5, seed=2),
        micro_batch_size=2,
        max_steps=4,
        eval_steps=2,
        save_strategy="no",
        learning_rate=1e-3,
    )
    assert len(result.eval_losses) == 2
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "eval_loss" in line] == [2, 4]
    assert all(9.0 < loss < 11.5 for loss in result.eval_losses)  # random init: about ln(32000)


def test_early_stopping_when_eval_loss_stops_improving(tmp_path, tiny_llama_dir):
    # A learning rate far below fp32 resolution leaves the weights, and so the eval loss, unchanged.
    result = run(
        tmp_path,
        tiny_llama_dir,
        random_rows(8, seed=1),
        random_rows(4, seed=2),
        micro_batch_size=2,
        max_steps=10,
        eval_steps=1,
        early_stopping_patience=2,
        optimizer="sgd",
        learning_rate=1e-20,
        save_strategy="no",
    )
    assert result.stopped_early
    assert result.steps == 3
    assert len(result.eval_losses) == 3


def test_loss_watchdog_stops_a_diverged_run(tmp_path, tiny_llama_dir):
    with pytest.raises(AxrError, match=r"loss_watchdog_threshold: loss .* stayed above 1.0 for 2 steps"):
        run(
            tmp_path,
            tiny_llama_dir,
            random_rows(8),
            micro_batch_size=2,
            max_steps=5,
            loss_watchdog_threshold=1.0,
            loss_watchdog_patience=2,
            save_strategy="no",
        )


def test_added_tokens_train_embeddings_with_the_adapter(tmp_path, tiny_llama_dir):
    result = run(
        tmp_path,
        tiny_llama_dir,
        random_rows(4),
        micro_batch_size=2,
        max_steps=1,
        adapter="lora",
        lora_target_modules=["q_proj", "v_proj"],
        tokens=["<tool_call>"],
        save_strategy="no",
        resize_token_embeddings_to_32x=True,
    )
    saved = load_file(str(result.output_dir / "adapter_model.safetensors"))
    embed = [name for name in saved if "embed_tokens" in name]
    head = [name for name in saved if "lm_head" in name]
    assert embed
    assert head
    assert saved[embed[0]].shape[0] == 32032  # 32000 + 1 rounded up to a multiple of 32
    adapter_config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert set(adapter_config["modules_to_save"]) >= {"embed_tokens", "lm_head"}


def test_flash_attention_without_the_package_is_a_config_error(tmp_path, tiny_llama_dir):
    # Validation refuses flash_attention_2 on a machine that cannot run it, naming the reason.
    path = write_config(tmp_path / "config.toml", tiny_llama_dir, tmp_path / "out", flash_attention=True)
    with pytest.raises(
        ConfigError, match=r"attn_implementation: flash_attention_2 cannot run on this machine: .*flash-attn"
    ):
        load_config(path)
    # A config validated elsewhere (a GPU machine) fails the same way when the model is loaded here.
    config = load_config(
        write_config(tmp_path / "sdpa.toml", tiny_llama_dir, tmp_path / "out", sample_packing=True)
    )
    config.attn_implementation = "flash_attention_2"
    with pytest.raises(
        ConfigError, match=r"attn_implementation: flash_attention_2 cannot run here: .*pip install flash-attn"
    ):
        select_attention(config)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"adapter": "lora", "relora": True, "lora_target_linear": True},
            "relora: ReLoRA needs jagged_restart_steps",
        ),
        ({"adapter": "lora"}, "lora_target_modules: .* needs the modules to adapt"),
    ],
)
def test_adapter_errors_name_the_key(tmp_path, tiny_llama_dir, keys, message):
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, tiny_llama_dir, random_rows(4), max_steps=1, **keys)


def test_evaluation_counts_every_sample_once_across_ranks(tiny_llama_dir):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from axr.packing import MultipackBatchSampler, plan_summary
    from axr.train.evaluation import evaluation_sums

    rows = InMemoryDataset(random_rows(4, seed=4))  # 2 bins of 64 tokens for 3 ranks: one bin repeats
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    accelerator = Accelerator(cpu=True)
    options = {"packing": True, "attention": "sdpa", "pad": 0, "select": True}

    def sums(rank, world_size):
        plan = MultipackBatchSampler(rows.lengths, 64, 1, rank=rank, world_size=world_size, drop_last=False)
        return evaluation_sums(model, accelerator, rows, plan, **options)

    assert plan_summary(rows.lengths, 64, 1, 3, drop_last=False)["repeated_bins_per_epoch"] > 0
    whole = sums(0, 1)
    split = sums(0, 3) + sums(1, 3) + sums(2, 3)
    assert (
        float(split[1]) == float(whole[1]) == sum(int((labels[1:] != -100).sum()) for _, labels in rows.rows)
    )
    assert float(split[0]) == pytest.approx(float(whole[0]), rel=1e-6)


def one_step_setup(tmp_path, tiny_llama_dir, **keys):
    """The run ``setup`` makes for ``keys`` (LoRA, packed), and the micro-batches of its first step."""
    from axr.train.loop import _micro_batches, next_micro_batches, setup

    config = load_config(
        write_config(
            tmp_path / "config.toml", tiny_llama_dir, tmp_path / "out",
            sample_packing=True, sequence_len=128, micro_batch_size=2, gradient_accumulation_steps=2,
            max_steps=1, adapter="lora", lora_target_linear=True, save_strategy="no", **keys,
        )
    )  # fmt: skip
    run = setup(config, data=TrainingData(train=InMemoryDataset(random_rows(12))))
    batches, _ = next_micro_batches(run, _micro_batches(run.plan, 0, 0))
    return run, batches


def first_layer(model):
    return model.get_base_model().model.layers[0]


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_runs_the_training_forward_under_bfloat16_autocast(tmp_path, tiny_llama_dir, bf16):
    import torch

    from axr.train.loop import optimizer_step

    run, batches = one_step_setup(tmp_path, tiny_llama_dir, bf16=bf16)
    # The adapter's own matrices are float32 either way; only autocast makes their matmul bfloat16.
    lora_a = first_layer(run.model).mlp.down_proj.lora_A["default"]
    assert lora_a.weight.dtype == torch.float32
    seen = []
    lora_a.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    outcome = optimizer_step(run, batches)
    assert 9.0 < outcome.loss < 11.5
    assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    assert len(seen) == len(batches)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_recomputes_each_layer_in_the_backward(
    tmp_path, tiny_llama_dir, checkpointing
):
    from axr.train.loop import optimizer_step

    run, batches = one_step_setup(tmp_path, tiny_llama_dir, gradient_checkpointing=checkpointing)
    assert run.model.get_base_model().is_gradient_checkpointing == checkpointing
    mlp = first_layer(run.model).mlp
    forwards = []
    forward = mlp.forward

    def counted(*args, **kwargs):
        forwards.append(1)
        return forward(*args, **kwargs)

    mlp.forward = counted
    optimizer_step(run, batches)
    # Each micro-batch runs the layer once forward, and once more in the backward when checkpointed.
    assert len(forwards) == len(batches) * (2 if checkpointing else 1)


@pytest.mark.parametrize("alpha", [None, 5.0])
def test_neftune_noises_the_embeddings_in_training_only(tmp_path, tiny_llama_dir, alpha):
    import math

    import torch

    keys = {} if alpha is None else {"neftune_noise_alpha": alpha}
    run, _ = one_step_setup(tmp_path, tiny_llama_dir, **keys)
    embeddings = run.model.get_input_embeddings()
    ids = torch.tensor([[5, 17, 300, 4000, 12, 9, 31000, 7]])
    with torch.no_grad():
        clean = embeddings.weight[ids]
        embeddings.train()
        trained = embeddings(ids)
        embeddings.eval()
        evaluated = embeddings(ids)
    assert torch.equal(evaluated, clean)
    if alpha is None:
        assert torch.equal(trained, clean)
        return
    # Uniform noise in ±alpha / sqrt(length × width), on every element.
    bound = alpha / math.sqrt(ids.shape[1] * clean.shape[-1])
    noise = (trained - clean).abs()
    assert float(noise.max()) <= bound * (1 + 1e-5)
    assert float(noise.mean()) > bound / 4


def test_a_hub_id_without_network_names_base_model(tmp_path, monkeypatch):
    from axr.models.load import load_tokenizer

    # axr reads HF_HUB_OFFLINE and HF_HOME at each call (not when huggingface_hub was imported).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = load_config(write_config(tmp_path / "c.toml", "no-such-org/no-such-model", tmp_path / "out"))
    expected = r"base_model: 'no-such-org/no-such-model' is not in the local cache and the hub is offline"
    with pytest.raises(ConfigError, match=expected):
        load_tokenizer(config)


def test_lora_model_dir_continues_an_adapter(tmp_path, tiny_llama_dir):
    keys = {
        "adapter": "lora",
        "lora_target_modules": ["q_proj", "v_proj"],
        "save_strategy": "no",
        "max_steps": 1,
    }
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = run(tmp_path / "first", tiny_llama_dir, random_rows(4), micro_batch_size=2, **keys)
    trained = load_file(str(first.output_dir / "adapter_model.safetensors"))
    second = run(
        tmp_path / "second",
        tiny_llama_dir,
        random_rows(4),
        micro_batch_size=2,
        lora_model_dir=str(first.output_dir),
        learning_rate=1e-20,
        optimizer="sgd",
        **keys,
    )
    continued = load_file(str(second.output_dir / "adapter_model.safetensors"))
    # lora_B starts at zero in a fresh adapter; continuing keeps the trained values (lr ~ 0 here).
    name = next(name for name in trained if "lora_B" in name)
    assert float(trained[name].abs().sum()) > 0
    assert continued[name].equal(trained[name])


@pytest.mark.parametrize(
    ("keys", "package"), [({"wandb_project": "axr"}, "wandb"), ({"mlflow_experiment_name": "axr"}, "mlflow")]
)
def test_tracker_without_its_package_is_a_config_error(tmp_path, tiny_llama_dir, keys, package):
    import importlib.util

    from axr.train.progress import trackers_of

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError, match=f"needs the {package} package: pip install {package}"):
        trackers_of(
            load_config(write_config(tmp_path / "config.toml", tiny_llama_dir, tmp_path / "out", **keys))
        )
