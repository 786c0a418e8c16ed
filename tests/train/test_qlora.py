"""QLoRA (4-bit base) and 8-bit base weights through bitsandbytes on a tiny random Llama, on the CPU."""

from __future__ import annotations

import pytest
import torch
from helpers import InMemoryDataset, instruction_rows, random_rows, write_config
from safetensors.torch import load_file

from axr.config import load_config
from axr.errors import ConfigError
from axr.train.loop import TrainingData, train

bitsandbytes = pytest.importorskip("bitsandbytes")

QLORA = {
    "adapter": "qlora",
    "load_in_4bit": True,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_target_linear": True,
    "sample_packing": False,
}
LINEAR_LAYERS = 14  # 2 decoder layers x (q, k, v, o, gate, up, down)


def config_of(tmp_path, name, base_model, *, tables="", **keys):
    """A validated config from a TOML file; ``tables`` is raw TOML appended after the keys."""
    path = write_config(tmp_path / f"{name}.toml", base_model, tmp_path / name, **keys)
    if tables:
        path.write_text(path.read_text() + tables)
    return load_config(path)


def run(tmp_path, name, base_model, rows, *, eval_rows=None, tables="", **keys):
    cfg = config_of(tmp_path, name, base_model, tables=tables, **keys)
    evaluation = InMemoryDataset(eval_rows) if eval_rows is not None else None
    return train(cfg, data=TrainingData(train=InMemoryDataset(rows), eval=evaluation))


def load_trainable(cfg):
    """The model exactly as train() builds it before accelerate: loader, then adapter."""
    from axr.models.adapters import apply_adapter
    from axr.models.load import load_model, load_tokenizer, resolve_precision

    precision = resolve_precision(cfg, "cpu", adapter=bool(cfg.adapter))
    tokenizer, added = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, precision=precision, attention="sdpa")
    return apply_adapter(cfg, model, tokens_added=added, precision=precision)


def four_bit_layers(model):
    return [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]


def test_qlora_defaults_are_nf4_double_quantized_in_the_training_dtype(tmp_path, tiny_llama_dir):
    model = load_trainable(
        config_of(tmp_path, "defaults", tiny_llama_dir, gradient_checkpointing=True, **QLORA)
    )
    layers = four_bit_layers(model)
    assert len(layers) == LINEAR_LAYERS
    state = layers[0].weight.quant_state
    assert state.quant_type == "nf4"
    assert state.nested  # double quantization
    assert layers[0].compute_dtype == torch.float32  # bf16 = "auto" on a CPU: fp32
    assert layers[0].weight.dtype == torch.uint8
    assert model.base_model.model.is_gradient_checkpointing
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in name for name in trainable)
    # prepare_model_for_kbit_training: what is not quantized is float32 (norms, embeddings, head).
    assert {p.dtype for p in model.parameters()} == {torch.uint8, torch.float32}


def test_bnb_config_kwargs_reach_the_quantized_layers(tmp_path, tiny_llama_dir):
    tables = (
        "[bnb_config_kwargs]\n"
        'bnb_4bit_quant_type = "fp4"\n'
        "bnb_4bit_use_double_quant = false\n"
        'bnb_4bit_compute_dtype = "bfloat16"\n'
        'bnb_4bit_quant_storage = "bfloat16"\n'
        'llm_int8_skip_modules = ["down_proj", "lm_head"]\n'
    )
    model = load_trainable(config_of(tmp_path, "kwargs", tiny_llama_dir, tables=tables, **QLORA))
    layers = four_bit_layers(model)
    assert len(layers) == LINEAR_LAYERS - 2  # down_proj of both layers left in full precision
    state = layers[0].weight.quant_state
    assert state.quant_type == "fp4"
    assert not state.nested
    assert layers[0].compute_dtype == torch.bfloat16
    assert layers[0].weight.dtype == torch.bfloat16  # the storage dtype FSDP shards
    down = model.base_model.model.model.layers[0].mlp.down_proj.base_layer
    assert type(down) is torch.nn.Linear


def test_qlora_trains_and_the_saved_adapter_reproduces_the_eval_loss(tmp_path, tiny_llama_dir, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from axr.data.collate import collate_padded
    from axr.train.loss import forward_summed_loss

    rows = instruction_rows(tiny_llama_dir)
    result = run(
        tmp_path,
        "learn",
        tiny_llama_dir,
        rows,
        eval_rows=rows,
        micro_batch_size=8,
        max_steps=12,
        learning_rate=2e-2,
        lr_scheduler="constant",
        save_strategy="no",
        **QLORA,
    )
    out = "".join(capsys.readouterr())
    assert (
        f"base weights: {LINEAR_LAYERS} linear layers in 4-bit nf4 double-quantized (compute float32)" in out
    )
    assert result.losses[-1] < result.losses[0] - 0.5

    adapter = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert adapter
    assert all("lora_" in key for key in adapter)  # the 4-bit base weights are not part of the adapter
    assert all(float(tensor.abs().max()) > 0 for key, tensor in adapter.items() if "lora_B" in key)

    # A fresh 4-bit base (the training run left it unchanged) plus the saved adapter, through PEFT alone,
    # computes the eval loss the run reported after its last step.
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, quantization_config=quantization, dtype=torch.float32, device_map={"": "cpu"}
    )
    # Train mode (no dropout here) under no_grad, as axr evaluates: in eval mode bitsandbytes would switch
    # to its bfloat16 CPU inference kernel where the CPU has one (see keep_4bit_layout_trainable).
    model = PeftModel.from_pretrained(base, str(result.output_dir)).train()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            batch = collate_padded([(ids, labels)], pad_token_id=0)
            total += float(forward_summed_loss(model, batch, "sdpa", torch.device("cpu"), select=True))
            count += int((labels != -100).sum())
    assert total / count == pytest.approx(result.eval_losses[-1], rel=1e-5)


def test_an_evaluation_does_not_change_the_following_qlora_steps(tmp_path, tiny_llama_dir):
    rows = random_rows(8, seed=7)
    keys = {**QLORA, "micro_batch_size": 4, "max_steps": 4, "learning_rate": 1e-2, "save_strategy": "no"}
    plain = run(tmp_path, "plain", tiny_llama_dir, rows, **keys)
    evaluated = run(tmp_path, "evaluated", tiny_llama_dir, rows, eval_rows=rows[:4], eval_steps=1, **keys)
    assert len(evaluated.eval_losses) == 4
    assert evaluated.losses == pytest.approx(plain.losses, rel=1e-6)


# 4-bit packed vs unpacked: bitsandbytes dequantizes each weight to the compute dtype (fp32 here) and runs
# an ordinary matmul, so the only difference from packing is the order of float32 sums, as without
# quantization: losses agree to 1e-6 relative and SGD updates (= gradients) to 1e-5 of their largest value.
PACKED_LOSS_REL = 1e-6
PACKED_GRADIENT_REL = 1e-5


def test_qlora_packed_equals_unpacked(tmp_path, tiny_llama_dir):
    rows = random_rows(8, seed=4, low=8, high=40)
    common = {
        **QLORA,
        "lora_dropout": 0.0,
        "optimizer": "sgd",
        "learning_rate": 1.0,
        "max_grad_norm": 0.0,
        "lr_scheduler": "constant",
        "max_steps": 1,
        "save_strategy": "no",
        "sequence_len": 512,
    }
    unpacked = run(tmp_path, "unpacked", tiny_llama_dir, rows, micro_batch_size=8, **common)
    common["sample_packing"] = True
    packed = run(tmp_path, "packed", tiny_llama_dir, rows, micro_batch_size=1, **common)
    assert packed.losses[0] == pytest.approx(unpacked.losses[0], rel=PACKED_LOSS_REL)
    # lora_A starts random and lora_B at zero: one SGD step moves lora_B by minus its gradient.
    got, expected = (load_file(str(r.output_dir / "adapter_model.safetensors")) for r in (packed, unpacked))
    for key, value in expected.items():
        if "lora_B" in key:
            scale = float(value.abs().max())
            assert scale > 0
            torch.testing.assert_close(got[key], value, atol=PACKED_GRADIENT_REL * scale, rtol=0, msg=key)


def optimizer_state_of(checkpoint):
    files = sorted(checkpoint.glob("optimizer.*"))
    assert len(files) == 1
    if files[0].suffix == ".safetensors":
        from axr.train.state_file import load_state

        return load_state(files[0])
    return torch.load(files[0], weights_only=False)


def test_qlora_resume_with_an_8bit_optimizer_gives_the_same_losses(tmp_path, tiny_llama_dir):
    rows = random_rows(10, seed=5)
    keys = {
        **QLORA,
        "lora_dropout": 0.1,
        "optimizer": "adamw_bnb_8bit",
        # The LoRA matrices are tiny; without this they would get 32-bit state.
        "optim_args": "min_8bit_size=64",
        "micro_batch_size": 3,
        "max_steps": 6,
        "save_steps": 3,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
    }
    whole = run(tmp_path, "whole", tiny_llama_dir, rows, **keys)
    checkpoint = whole.output_dir / "checkpoint-3"
    state = optimizer_state_of(checkpoint)["state"]
    dtypes = set()
    for entry in state.values():
        for value in entry.values():
            for tensor in value.values() if isinstance(value, dict) else [value]:
                if isinstance(tensor, torch.Tensor):
                    dtypes.add(tensor.dtype)
    assert torch.uint8 in dtypes  # 8-bit moments really were saved
    resumed = run(tmp_path, "resumed", tiny_llama_dir, rows, resume_from_checkpoint=str(checkpoint), **keys)
    assert len(resumed.losses) == 3
    assert resumed.losses == pytest.approx(whole.losses[3:], rel=1e-6)


def test_lora_on_an_8bit_base_trains(tmp_path, tiny_llama_dir, capsys):
    rows = instruction_rows(tiny_llama_dir)
    keys = {**QLORA, "adapter": "lora", "load_in_4bit": False, "load_in_8bit": True}
    result = run(
        tmp_path,
        "eight",
        tiny_llama_dir,
        rows,
        micro_batch_size=8,
        max_steps=8,
        learning_rate=1e-2,
        lr_scheduler="constant",
        save_strategy="no",
        **keys,
    )
    assert f"base weights: {LINEAR_LAYERS} linear layers in 8-bit (LLM.int8())" in "".join(
        capsys.readouterr()
    )
    assert result.losses[-1] < result.losses[0] - 0.5
    assert all("lora_" in key for key in load_file(str(result.output_dir / "adapter_model.safetensors")))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"load_in_4bit": True},
            'load_in_4bit: quantized base weights cannot be trained; set adapter = "qlora"',
        ),
        (
            {"load_in_8bit": True},
            'load_in_8bit: quantized base weights cannot be trained; set adapter = "lora"',
        ),
        (
            {"gptq": True, "adapter": "lora", "lora_target_linear": True},
            "gptq: not supported yet: train LoRA on a GPTQ",
        ),
    ],
)
def test_quantization_errors_name_the_key(tmp_path, tiny_llama_dir, keys, message):
    # gptq is refused when the config is validated, the others when training starts.
    def run() -> None:
        cfg = config_of(tmp_path, "bad", tiny_llama_dir, **keys)
        train(cfg, data=TrainingData(train=InMemoryDataset(random_rows(2))))

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run()


# Axolotl's examples/llama-2/qlora.yml of early 2024, with local paths for the model and data and
# flash_attention off (flash-attn needs CUDA).
AXOLOTL_2024_QLORA = """\
base_model: {base_model}
model_type: LlamaForCausalLM
tokenizer_type: LlamaTokenizer
load_in_8bit: false
load_in_4bit: true
strict: false
datasets:
  - path: {dataset}
    type: alpaca
dataset_prepared_path: {folder}/prepared
val_set_size: 0.05
output_dir: {folder}/qlora-out
adapter: qlora
lora_model_dir:
sequence_len: 4096
sample_packing: true
pad_to_sequence_len: true
lora_r: 32
lora_alpha: 16
lora_dropout: 0.05
lora_target_modules:
lora_target_linear: true
lora_fan_in_fan_out:
wandb_project:
wandb_entity:
wandb_watch:
wandb_name:
wandb_log_model:
gradient_accumulation_steps: 4
micro_batch_size: 1
num_epochs: 4
optimizer: paged_adamw_32bit
lr_scheduler: cosine
learning_rate: 0.0002
train_on_inputs: false
group_by_length: false
bf16: auto
fp16:
tf32: false
gradient_checkpointing: true
early_stopping_patience:
resume_from_checkpoint:
local_rank:
logging_steps: 1
xformers_attention:
flash_attention: false  # true in the example; flash-attn needs CUDA
warmup_steps: 10
evals_per_epoch: 4
eval_table_size:
saves_per_epoch: 1
debug:
deepspeed:
weight_decay: 0.0
fsdp:
fsdp_config:
special_tokens:
"""


@pytest.mark.slow
def test_axolotls_2024_qlora_example_trains_as_written(tmp_path, tiny_llama_dir, capsys):
    from pathlib import Path

    from axr.cli import main

    dataset = Path(__file__).resolve().parents[2] / "examples" / "data" / "alpaca_sample.jsonl"
    config = tmp_path / "qlora.yml"
    config.write_text(AXOLOTL_2024_QLORA.format(base_model=tiny_llama_dir, dataset=dataset, folder=tmp_path))
    assert main(["train", str(config), "--max_steps=2"]) == 0
    printed = "".join(capsys.readouterr())
    assert f"base weights: {LINEAR_LAYERS} linear layers in 4-bit nf4 double-quantized" in printed
    assert "eval loss" in printed  # evals_per_epoch with val_set_size
    out = tmp_path / "qlora-out"
    adapter = json_of(out / "adapter_config.json")
    assert adapter["r"] == 32
    assert adapter["lora_alpha"] == 16
    assert (out / "adapter_model.safetensors").is_file()


def json_of(path):
    import json

    return json.loads(path.read_text())
