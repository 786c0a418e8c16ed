"""The training loop on a tiny random Llama: it learns, accumulates exactly, and resumes exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import QUESTIONS, InMemoryDataset, instruction_rows, prompt_of, random_rows, write_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.loop import TrainingData, train


def run(tmp_path, name, tiny_llama_dir, rows, eval_rows=None, **keys):
    output_dir = tmp_path / name
    config = load_config(write_config(tmp_path / f"{name}.toml", tiny_llama_dir, output_dir, **keys))
    data = TrainingData(
        train=InMemoryDataset(rows), eval=InMemoryDataset(eval_rows) if eval_rows is not None else None
    )
    return train(config, data=data)


def test_learns_and_reproduces_answers(tmp_path, tiny_llama_dir, mistral_tokenizer_dir):
    rows = instruction_rows(mistral_tokenizer_dir)
    result = run(
        tmp_path,
        "learn",
        tiny_llama_dir,
        rows,
        micro_batch_size=8,
        max_steps=40,
        learning_rate=5e-3,
        lr_scheduler="constant",
        warmup_steps=2,
        save_strategy="no",
        sample_packing=False,
    )
    assert result.losses[0] > 8.0  # random init over a 32k vocabulary: about ln(32000) = 10.4
    assert result.losses[-1] < 0.2
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    for question, answer in QUESTIONS:
        inputs = tokenizer(prompt_of(question), return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        text = tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text.strip() == answer


def final_weights(output_dir):
    return load_file(str(output_dir / "model.safetensors"))


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tiny_llama_dir):
    # Four samples with different trainable-token counts: a mean of per-micro-batch means would differ.
    rows = random_rows(4, seed=3, low=6, high=30)
    common = {
        "max_steps": 1,
        "optimizer": "sgd",
        "learning_rate": 1.0,
        "max_grad_norm": 0.0,
        "lr_scheduler": "constant",
        "save_strategy": "no",
        "sample_packing": False,
    }
    accumulated = run(
        tmp_path, "ga", tiny_llama_dir, rows, micro_batch_size=1, gradient_accumulation_steps=4, **common
    )
    big = run(
        tmp_path, "big", tiny_llama_dir, rows, micro_batch_size=4, gradient_accumulation_steps=1, **common
    )
    assert accumulated.losses[0] == pytest.approx(big.losses[0], rel=1e-5)
    # SGD with lr 1: each weight moved by exactly minus its gradient.
    before = final_weights_of_base(tiny_llama_dir)
    after_accumulated, after_big = final_weights(accumulated.output_dir), final_weights(big.output_dir)
    for name, start in before.items():
        grad_accumulated = start - after_accumulated[name]
        grad_big = start - after_big[name]
        torch.testing.assert_close(grad_accumulated, grad_big, atol=1e-6, rtol=1e-4, msg=name)
    moved = sum(float((start - after_big[name]).abs().sum()) for name, start in before.items())
    assert moved > 0


def final_weights_of_base(tiny_llama_dir):
    return load_file(str(tiny_llama_dir / "model.safetensors"))


def losses_in(metrics_path):
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def test_resume_gives_the_same_losses(tmp_path, tiny_llama_dir):
    # LoRA with dropout (RNG matters), AdamW (optimizer state matters), cosine (schedule matters),
    # 10 samples of batch 3 (epochs end mid-way through the run: data position matters).
    rows = random_rows(10, seed=5)
    keys = {
        "adapter": "lora",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "lora_target_linear": True,
        "micro_batch_size": 3,
        "max_steps": 6,
        "save_steps": 3,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "sample_packing": False,
    }
    whole = run(tmp_path, "whole", tiny_llama_dir, rows, **keys)
    checkpoint = whole.output_dir / "checkpoint-3"
    assert (checkpoint / "adapter_model.safetensors").exists()
    resumed = run(tmp_path, "resumed", tiny_llama_dir, rows, resume_from_checkpoint=str(checkpoint), **keys)
    assert resumed.losses == pytest.approx(whole.losses[3:], rel=1e-6)
    assert len(resumed.losses) == 3
    # metrics.jsonl of the uninterrupted run agrees with what train() returned.
    assert losses_in(whole.output_dir / "metrics.jsonl")[6] == pytest.approx(resumed.losses[-1], rel=1e-6)


def test_auto_resume_on_packed_bins_gives_the_same_losses(tmp_path, tiny_llama_dir):
    # Packed bins (the sampler's plan), full fine-tune, gradient accumulation 2, epochs of 3 steps.
    rows = random_rows(24, seed=6, low=10, high=60)
    keys = {
        "sample_packing": True,
        "sequence_len": 128,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 2,
        "max_steps": 5,
        "save_steps": 2,
        "save_total_limit": 1,
        "learning_rate": 1e-3,
    }
    whole = run(tmp_path, "whole", tiny_llama_dir, rows, **keys)
    assert [path.name for path in whole.output_dir.glob("checkpoint-*")] == ["checkpoint-4"]
    # A run that stopped after checkpoint-4 left exactly that folder in its output_dir.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(whole.output_dir / "checkpoint-4", interrupted / "checkpoint-4")
    resumed = run(tmp_path, "interrupted", tiny_llama_dir, rows, auto_resume_from_checkpoints=True, **keys)
    assert resumed.losses == pytest.approx(whole.losses[4:], rel=1e-6)
    assert len(resumed.losses) == 1


def test_resume_with_another_micro_batch_size_is_refused(tmp_path, tiny_llama_dir):
    rows = random_rows(12, seed=8)
    keys = {"max_steps": 4, "save_steps": 2, "learning_rate": 1e-3, "sample_packing": False}
    whole = run(tmp_path, "whole", tiny_llama_dir, rows, micro_batch_size=2, **keys)
    checkpoint = whole.output_dir / "checkpoint-2"
    plan = json.loads((checkpoint / "trainer_state.json").read_text())["plan"]
    assert plan["micro_batch_size"] == 2
    assert plan["world_size"] == 1
    with pytest.raises(ConfigError, match=r"micro_batch_size: checkpoint 2, this run 3"):
        run(tmp_path, "resumed", tiny_llama_dir, rows, micro_batch_size=3,
            resume_from_checkpoint=str(checkpoint), **keys)  # fmt: skip
