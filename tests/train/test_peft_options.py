"""The config's PEFT keys reach PEFT and change what the model computes; unfrozen_parameters in a full
fine-tune trains exactly the matching weights."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import InMemoryDataset, random_rows, write_config
from safetensors.torch import load_file

from axr.config import load_config
from axr.errors import ConfigError
from axr.models.adapters import apply_adapter, lora_config_kwargs
from axr.models.load import load_model, load_tokenizer, resolve_precision
from axr.train.loop import TrainingData, train

LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8}


def config_of(tmp_path, base_model, *, tables="", **keys):
    path = write_config(tmp_path / "peft.toml", base_model, tmp_path / "out", **keys)
    if tables:
        path.write_text(path.read_text() + tables)
    return load_config(path)


def adapted(cfg):
    precision = resolve_precision(cfg, "cpu", adapter=bool(cfg.adapter))
    tokenizer, added = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, precision=precision, attention="sdpa")
    return apply_adapter(cfg, model, tokens_added=added, precision=precision)


def randomize_lora(model, seed=0):
    """Non-zero LoRA B (PEFT starts it at zero), the same for every model given the same seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


INPUT_IDS = torch.randint(3, 32000, (2, 12), generator=torch.Generator().manual_seed(1))


def logits_of(model):
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def test_dora_reaches_peft_and_changes_the_forward(tmp_path, tiny_llama_dir):
    lora = adapted(config_of(tmp_path, tiny_llama_dir, lora_target_modules=["q_proj", "v_proj"], **LORA))
    dora = adapted(
        config_of(
            tmp_path, tiny_llama_dir, lora_target_modules=["q_proj", "v_proj"], peft_use_dora=True, **LORA
        )
    )
    assert dora.peft_config["default"].use_dora
    assert not lora.peft_config["default"].use_dora
    magnitudes = [name for name, _ in dora.named_parameters() if "lora_magnitude_vector" in name]
    assert len(magnitudes) == 4  # q_proj and v_proj of 2 layers
    randomize_lora(lora)
    randomize_lora(dora)  # same A and B; DoRA also has its magnitude vector
    for name, parameter in dora.named_parameters():
        if "lora_magnitude_vector" in name:
            # Back to the norm of W (its initial value), so only the decomposition differs from LoRA.
            layer = dora.get_submodule(name.rsplit(".lora_magnitude_vector", 1)[0])
            with torch.no_grad():
                parameter.copy_(layer.base_layer.weight.norm(dim=1))
    assert (logits_of(dora) - logits_of(lora)).abs().max() > 1e-3


def test_rslora_scales_by_alpha_over_sqrt_r(tmp_path, tiny_llama_dir):
    plain = adapted(config_of(tmp_path, tiny_llama_dir, lora_target_modules=["q_proj"], **LORA))
    rs = adapted(
        config_of(tmp_path, tiny_llama_dir, lora_target_modules=["q_proj"], peft_use_rslora=True, **LORA)
    )
    assert rs.peft_config["default"].use_rslora
    q_plain = plain.base_model.model.model.layers[0].self_attn.q_proj
    q_rs = rs.base_model.model.model.layers[0].self_attn.q_proj
    assert q_plain.scaling["default"] == pytest.approx(8 / 4)
    assert q_rs.scaling["default"] == pytest.approx(8 / math.sqrt(4))
    randomize_lora(plain)
    randomize_lora(rs)
    hidden = torch.randn(3, 64)
    with torch.no_grad():
        base = q_plain.base_layer(hidden)
        # Same A and B: the adapter's contribution is sqrt(r) = 2 times larger with rsLoRA.
        torch.testing.assert_close(q_rs(hidden) - base, 2 * (q_plain(hidden) - base), rtol=1e-5, atol=1e-6)


def test_target_modules_layers_and_parameters_select_what_is_adapted(tmp_path, tiny_llama_dir):
    only_layer_one = adapted(
        config_of(
            tmp_path, tiny_llama_dir, lora_target_modules=["v_proj"], peft_layers_to_transform=[1], **LORA
        )
    )
    adapted_modules = {name for name, _ in only_layer_one.named_parameters() if "lora_A" in name}
    assert adapted_modules == {"base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"}

    by_parameter = adapted(
        config_of(tmp_path, tiny_llama_dir, lora_target_parameters=["mlp.down_proj.weight"], **LORA)
    )
    assert by_parameter.peft_config["default"].target_parameters == ["mlp.down_proj.weight"]
    lora_names = [name for name, _ in by_parameter.named_parameters() if "lora_" in name]
    assert lora_names
    assert all("down_proj" in name for name in lora_names)
    before = logits_of(by_parameter)
    randomize_lora(by_parameter)
    assert (logits_of(by_parameter) - before).abs().max() > 1e-3

    with pytest.raises(ConfigError, match=r"lora_target_parameters: .* set lora_dropout = 0"):
        adapted(
            config_of(
                tmp_path,
                tiny_llama_dir,
                lora_target_parameters="mlp.down_proj.weight",
                lora_dropout=0.1,
                **LORA,
            )
        )


def test_modules_to_save_train_in_float32_over_half_weights(tmp_path, tiny_llama_dir):
    cfg = config_of(
        tmp_path,
        tiny_llama_dir,
        bf16=True,
        lora_target_modules=["q_proj"],
        lora_modules_to_save=["lm_head"],
        **LORA,
    )
    assert resolve_precision(cfg, "cpu", adapter=True).mixed == "bf16"
    model = adapted(cfg)
    head = model.base_model.model.lm_head
    assert head.original_module.weight.dtype == torch.bfloat16
    assert head.modules_to_save["default"].weight.dtype == torch.float32
    assert head.modules_to_save["default"].weight.requires_grad
    assert model.base_model.model.model.layers[0].self_attn.k_proj.weight.dtype == torch.bfloat16


def test_loftq_and_fan_in_fan_out_reach_the_lora_config(tmp_path, tiny_llama_dir):
    cfg = config_of(
        tmp_path,
        tiny_llama_dir,
        lora_target_linear=True,
        lora_fan_in_fan_out=True,
        tables="[peft.loftq_config]\nloftq_bits = 4\n",
        **LORA,
    )
    lora = lora_config_kwargs(cfg, [])
    assert lora["init_lora_weights"] == "loftq"
    assert lora["loftq_config"] == {"loftq_bits": 4, "loftq_iter": 1}
    assert lora["fan_in_fan_out"]
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match=r"peft\.loftq_config: PEFT's LoftQ initialisation runs on a CUDA"
        ):
            adapted(cfg)


def test_loftq_on_a_quantized_base_is_refused(tmp_path, tiny_llama_dir):
    cfg = config_of(
        tmp_path,
        tiny_llama_dir,
        load_in_4bit=True,
        lora_target_linear=True,
        tables="[peft.loftq_config]\nloftq_bits = 4\n",
        **{**LORA, "adapter": "qlora"},
    )
    with pytest.raises(ConfigError, match=r"peft\.loftq_config: LoftQ quantizes the base weights itself"):
        adapted(cfg)


def test_unfrozen_parameters_train_only_the_matching_weights(tmp_path, tiny_llama_dir):
    patterns = ["model.layers.1.mlp", "model.embed_tokens.weight[:100]"]
    cfg = config_of(
        tmp_path,
        tiny_llama_dir,
        unfrozen_parameters=patterns,
        optimizer="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        lr_scheduler="constant",
        max_steps=1,
        micro_batch_size=4,
        save_strategy="no",
    )
    # Rows 3..99 of the vocabulary appear in the batch, so the embedding rows below 100 get gradients.
    rows = [(ids % 100 + 3, labels) for ids, labels in random_rows(4, seed=2)]
    for ids, labels in rows:
        labels[labels != -100] = ids[labels != -100]
    result = train(cfg, data=TrainingData(train=InMemoryDataset(rows)))
    before = load_file(str(tiny_llama_dir / "model.safetensors"))
    after = load_file(str(result.output_dir / "model.safetensors"))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.embed_tokens.weight",
    }
    embeddings_moved = (before["model.embed_tokens.weight"] != after["model.embed_tokens.weight"]).any(dim=1)
    assert embeddings_moved[:100].any()
    assert not embeddings_moved[100:].any()


def test_unfrozen_parameters_errors_name_the_key(tmp_path, tiny_llama_dir):
    with_adapter = config_of(
        tmp_path, tiny_llama_dir, unfrozen_parameters=["lm_head"], lora_target_linear=True, **LORA
    )
    with pytest.raises(
        ConfigError, match="unfrozen_parameters: chooses the trained weights of a full fine-tune"
    ):
        adapted(with_adapter)
    matching_nothing = config_of(tmp_path, tiny_llama_dir, unfrozen_parameters=["no_such_layer"])
    with pytest.raises(ConfigError, match=r"unfrozen_parameters: no parameter of the model matches"):
        adapted(matching_nothing)
