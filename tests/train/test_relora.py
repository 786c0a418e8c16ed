"""ReLoRA: every relora_steps the adapter is merged into the base, re-initialised and its optimizer
state pruned; the learning rate restarts; a resumed run crosses a restart exactly as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import InMemoryDataset, random_rows, write_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from axr.config import load_config
from axr.errors import ConfigError
from axr.models.adapters import apply_adapter
from axr.models.load import load_model, load_tokenizer, resolve_precision
from axr.train.loop import TrainingData, train
from axr.train.optim import build_optimizer
from axr.train.relora import BASE_FILE, build_relora, lora_layers

LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True, "sample_packing": False}
PROBE = torch.tensor([[5, 17, 300, 4000, 12, 9, 31000, 7]])


def config_of(tmp_path, name, base_model, **keys):
    return load_config(write_config(tmp_path / f"{name}.toml", base_model, tmp_path / name, **keys))


def trainable(cfg):
    precision = resolve_precision(cfg, "cpu", adapter=True)
    tokenizer, added = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, precision=precision, attention="sdpa")
    return apply_adapter(cfg, model, tokens_added=added, precision=precision)


def take_steps(model, optimizer, steps):
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, 32000, (2, 12), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("quantized", [False, True], ids=["lora", "qlora"])
def test_restart_merges_the_delta_reinitialises_and_prunes(tmp_path, tiny_llama_dir, quantized):
    keys = {**LORA, "relora_steps": 2, "relora_prune_ratio": 0.75, "learning_rate": 1e-2}
    if quantized:
        pytest.importorskip("bitsandbytes")
        # A small step: the merged weights then cross few 4-bit boundaries when quantized again.
        keys |= {"adapter": "qlora", "load_in_4bit": True, "relora_cpu_offload": True, "learning_rate": 1e-4}
    cfg = config_of(tmp_path, "unit", tiny_llama_dir, **keys)
    model = trainable(cfg)
    relora = build_relora(cfg, model, "ddp")
    assert relora is not None
    assert relora.every == 2
    assert relora.quantized == quantized
    optimizer = build_optimizer(cfg, model)
    take_steps(model, optimizer, 2)

    layers = lora_layers(model)
    assert len(layers) == 14  # 2 decoder layers x 7 linear layers
    name, layer = next(iter(layers.items()))
    before_weight = (relora.masters[name] if quantized else layer.get_base_layer().weight).detach().clone()
    delta = layer.get_delta_weight("default").detach().clone()
    assert delta.abs().max() > 0  # two steps moved B away from zero
    before_a = layer.lora_A["default"].weight.detach().clone()
    if quantized:
        packed_before = layer.get_base_layer().weight.data.clone()
        state_before = layer.get_base_layer().weight.quant_state
    with torch.no_grad():
        before_logits = model(input_ids=PROBE).logits

    report = relora.restart(model, optimizer, step=2)

    assert report["relora_restart"] == 1
    assert report["merged_layers"] == 14
    if quantized:
        import bitsandbytes

        # The full-precision copy took the delta exactly; the 4-bit weights were quantized from it again.
        assert torch.equal(relora.masters[name], before_weight + delta.float())
        base = layer.get_base_layer()
        assert isinstance(base, bitsandbytes.nn.Linear4bit)
        assert base.weight.dtype == torch.uint8
        dequantize = bitsandbytes.functional.dequantize_4bit
        packed, state = bitsandbytes.functional.quantize_4bit(
            relora.masters[name], blocksize=state_before.blocksize, compress_statistics=True, quant_type="nf4"
        )
        assert torch.equal(dequantize(base.weight.data, base.weight.quant_state), dequantize(packed, state))
        assert not torch.equal(base.weight.data, packed_before)
    else:
        assert torch.equal(layer.get_base_layer().weight, before_weight + delta)
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    assert not torch.equal(layer.lora_A["default"].weight, before_a)
    with torch.no_grad():
        after_logits = model(input_ids=PROBE).logits
    # B = 0 after the restart: the model computes what it did, now through the merged base (on a
    # 4-bit base up to the noise of quantizing the merged weights again).
    change = (after_logits - before_logits).abs().mean() / before_logits.abs().mean()
    assert change < (0.1 if quantized else 1e-5)
    # Magnitude pruning at 0.75: at least three quarters of every Adam moment of the adapter is zero.
    assert report["optimizer_state_pruned"] >= 0.75
    for parameter in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[parameter][key]
            assert (state == 0).float().mean() >= 0.75
            assert (state != 0).any()  # the largest values stay


def run(tmp_path, name, base_model, **keys):
    cfg = config_of(tmp_path, name, base_model, **keys)
    data = TrainingData(train=InMemoryDataset(random_rows(16, seed=5)))
    return train(cfg, data=data)


def test_training_restarts_on_schedule_and_resumes_across_a_restart(tmp_path, tiny_llama_dir):
    keys = {
        **LORA,
        "relora_steps": 2,
        "relora_warmup_steps": 1,
        "relora_anneal_steps": 1,
        "relora_prune_method": "random",
        "relora_prune_ratio": 0.5,
        "relora_cpu_offload": True,
        "lr_scheduler": "constant",
        "learning_rate": 1e-2,
        "micro_batch_size": 2,
        "max_steps": 5,
        "save_steps": 3,
    }
    full = run(tmp_path, "full", tiny_llama_dir, **keys)
    records = [json.loads(line) for line in (full.output_dir / "metrics.jsonl").read_text().splitlines()]
    restarts = [r for r in records if "relora_restart" in r]
    assert [(r["step"], r["relora_restart"]) for r in restarts] == [(2, 1), (4, 2)]
    assert all(0.4 < r["optimizer_state_pruned"] < 0.6 for r in restarts)
    # The jagged schedule: the step after a restart runs at the floor (0.001) of the rate.
    rates = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert [rates[step] for step in (1, 2, 3, 4, 5)] == pytest.approx([1e-2, 1e-2, 1e-5, 1e-2, 1e-5])

    # The checkpoint after the first restart holds the merged base; resuming crosses the second restart.
    checkpoint = full.output_dir / "checkpoint-3"
    assert (checkpoint / BASE_FILE).is_file()
    resumed = run(tmp_path, "resumed", tiny_llama_dir, **keys, resume_from_checkpoint=str(checkpoint))
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-6)

    # The output is the whole model with every cycle merged, loadable by plain transformers.
    saved = load_file(str(full.output_dir / "model.safetensors"))
    assert not any("lora_" in key for key in saved)
    plain = AutoModelForCausalLM.from_pretrained(full.output_dir).eval()
    full.model.eval()
    with torch.no_grad():
        expected = full.model(input_ids=PROBE).logits
        assert (plain(input_ids=PROBE).logits - expected).abs().max() < 1e-4
        resumed.model.eval()
        assert (resumed.model(input_ids=PROBE).logits - expected).abs().max() < 1e-5
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(saved[key], original.state_dict()[key])


def test_qlora_restarts_quantize_again_and_resume_exactly(tmp_path, tiny_llama_dir):
    pytest.importorskip("bitsandbytes")
    keys = {**LORA, "adapter": "qlora", "load_in_4bit": True, "relora": True, "jagged_restart_steps": 2}
    keys |= {"lr_scheduler": "constant", "learning_rate": 1e-3, "micro_batch_size": 2, "max_steps": 3}
    full = run(tmp_path, "qfull", tiny_llama_dir, **keys, save_steps=2)
    checkpoint = full.output_dir / "checkpoint-2"
    # The checkpoint holds the merged weights in full precision (not the 4-bit codes).
    merged = load_file(str(checkpoint / BASE_FILE))
    assert merged["model.layers.0.mlp.down_proj.weight"].dtype == torch.float32
    resumed = run(tmp_path, "qresumed", tiny_llama_dir, **keys, resume_from_checkpoint=str(checkpoint))
    assert resumed.losses == pytest.approx(full.losses[2:], rel=1e-6)
    # The output: the base with every cycle merged, in full precision, loadable by plain transformers.
    plain = AutoModelForCausalLM.from_pretrained(full.output_dir)
    assert {p.dtype for p in plain.parameters()} == {torch.float32}
    final, final_resumed = (load_file(str(r.output_dir / "model.safetensors")) for r in (full, resumed))
    assert final.keys() == final_resumed.keys()
    assert all(torch.allclose(final[key], final_resumed[key], atol=1e-6) for key in final)
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    key = "model.layers.1.mlp.up_proj.weight"
    assert not torch.equal(final[key], original[key])


def test_relora_refuses_what_it_cannot_run(tmp_path, tiny_llama_dir):
    with pytest.raises(ConfigError, match="relora: ReLoRA needs jagged_restart_steps"):
        run(tmp_path, "nosteps", tiny_llama_dir, **LORA, relora=True, max_steps=1)
    with pytest.raises(ConfigError, match="optimizer 'sgd' is not supported"):
        run(tmp_path, "sgd", tiny_llama_dir, **LORA, relora_steps=2, optimizer="sgd", max_steps=1)
    with pytest.raises(ConfigError, match=r"relora_steps \(2\) and jagged_restart_steps \(3\) name the same"):
        run(tmp_path, "both", tiny_llama_dir, **LORA, relora_steps=2, jagged_restart_steps=3, max_steps=1)
    with pytest.raises(ConfigError, match="relora: ReLoRA with lora_modules_to_save"):
        run(tmp_path, "save", tiny_llama_dir, **LORA, relora_steps=2, lora_modules_to_save=["lm_head"])
    partial = {**LORA, "adapter": "qlora", "lora_target_linear": False, "lora_target_modules": ["q_proj"]}
    with pytest.raises(ConfigError, match="needs an adapter on every quantized layer"):
        run(tmp_path, "part", tiny_llama_dir, **partial, load_in_4bit=True, relora_steps=2)
