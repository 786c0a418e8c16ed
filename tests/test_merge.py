"""`axr merge-lora`: the merged weights compute what base + adapter computed, and load without PEFT."""

from __future__ import annotations

from pathlib import Path

import pytest

from axr.cli import main

# fp32 on CPU: merging adds B·A·scale to W once instead of computing it per forward;
# the two orders of summation differ by float rounding only.
LOGITS_ATOL = 1e-4


def make_adapter(base_model: Path, out: Path, *, seed: int = 1) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so merging changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(str(out))
    return out


def write_config(root: Path, base_model: Path, extra: str = "") -> Path:
    config = root / "config.toml"
    config.write_text(
        f'base_model = "{base_model}"\nsequence_len = 256\nadapter = "lora"\nlora_target_linear = true\n'
        f'output_dir = "{root / "out"}"\n{extra}\n'
        f'[[datasets]]\npath = "{root / "rows.jsonl"}"\ntype = "alpaca"\n'
    )
    return config


def test_merged_model_computes_the_adapter_models_logits(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_llama_dir, tmp_path / "adapter")
    config = write_config(tmp_path, tiny_llama_dir, "lora_on_cpu = true")
    assert main(["merge-lora", str(config), "--lora_model_dir", str(adapter)]) == 0
    out = capsys.readouterr().out
    for part in (
        f"base {tiny_llama_dir}",
        f"adapter {adapter}",
        "dtype float32",
        "device cpu",
        "attention sdpa",
    ):
        assert part in out

    merged_dir = adapter / "merged"
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()

    # Plain transformers, no PEFT.
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()
    input_ids = torch.randint(3, 32000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = with_adapter(input_ids=input_ids).logits
        got = merged(input_ids=input_ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)(
            input_ids=input_ids
        ).logits
    # The adapter matters, so equality is not trivially the base model's.
    assert (expected - plain).abs().max() > 100 * LOGITS_ATOL
    torch.testing.assert_close(got, expected, atol=LOGITS_ATOL, rtol=0)


def test_adapter_left_in_output_dir_by_training_is_the_default(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = make_adapter(tiny_llama_dir, tmp_path / "out")
    config = write_config(tmp_path, tiny_llama_dir)
    assert main(["merge-lora", str(config)]) == 0
    assert (adapter / "merged" / "model.safetensors").is_file()
    assert f"adapter {adapter}" in capsys.readouterr().out


def test_merge_without_an_adapter_is_a_clear_error(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_llama_dir)
    assert main(["merge-lora", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no trained adapter" in err
    assert "--lora_model_dir" in err
    assert main(["merge-lora", str(config), "--adapter="]) == 2
    assert "lora_model_dir" in capsys.readouterr().err


def test_inference_with_the_adapter_equals_inference_with_the_merged_model(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    adapter = make_adapter(tiny_llama_dir, tmp_path / "adapter", seed=2)
    config = write_config(tmp_path, tiny_llama_dir)
    assert main(["merge-lora", str(config), f"--lora_model_dir={adapter}"]) == 0
    greedy = ["--prompt", "Name a colour.", "--temperature=0", "--max_new_tokens=8", "--repetition_penalty=1"]
    capsys.readouterr()
    assert main(["inference", str(config), f"--lora_model_dir={adapter}", *greedy]) == 0
    with_adapter = capsys.readouterr()
    assert f"adapter {adapter} |" in with_adapter.err
    merged = ["--adapter=", f"--base_model={adapter / 'merged'}"]
    assert main(["inference", str(config), *merged, *greedy]) == 0
    from_merged = capsys.readouterr()
    assert "adapter none" in from_merged.err
    assert with_adapter.out.strip()
    assert from_merged.out == with_adapter.out


def test_a_qlora_adapter_merges_into_the_unquantized_base(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("bitsandbytes")
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )

    def four_bit_base():
        return AutoModelForCausalLM.from_pretrained(
            tiny_llama_dir, quantization_config=quantization, dtype=torch.float32, device_map={"": "cpu"}
        )

    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    adapter = tmp_path / "qlora-adapter"
    get_peft_model(four_bit_base(), lora).save_pretrained(str(adapter))
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_model = "{tiny_llama_dir}"\nadapter = "qlora"\nload_in_4bit = true\n'
        f'lora_target_linear = true\noutput_dir = "{tmp_path / "out"}"\n'
    )
    assert main(["merge-lora", str(config), "--lora_model_dir", str(adapter)]) == 0
    out = capsys.readouterr().out
    assert "trained on 4-bit base weights; merging into the unquantized base in float32" in out

    merged = AutoModelForCausalLM.from_pretrained(adapter / "merged", dtype=torch.float32).eval()
    assert type(merged.model.layers[0].mlp.down_proj) is torch.nn.Linear
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    on_full_base = PeftModel.from_pretrained(base, str(adapter)).eval()
    # Train mode under no_grad (no dropout anywhere): eval mode would switch bitsandbytes to its
    # bfloat16 CPU inference kernel on CPUs that have one, adding an error unrelated to the merge.
    on_four_bit_base = PeftModel.from_pretrained(four_bit_base(), str(adapter)).train()
    plain_four_bit = four_bit_base().train()
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    input_ids = torch.randint(3, 32000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = merged(input_ids=input_ids).logits
        expected = on_full_base(input_ids=input_ids).logits
        trained_on = on_four_bit_base(input_ids=input_ids).logits
        quantization_error = float(
            (plain_four_bit(input_ids=input_ids).logits - plain(input_ids=input_ids).logits).abs().max()
        )
    assert (expected - plain(input_ids=input_ids).logits).abs().max() > 100 * LOGITS_ATOL
    # The merge is exact against the adapter on the unquantized base ...
    torch.testing.assert_close(got, expected, atol=LOGITS_ATOL, rtol=0)
    # ... and differs from what the adapter computed on its 4-bit base by the base's own 4-bit
    # quantization error (the same order as between the plain 4-bit and full-precision bases).
    assert quantization_error > 0
    assert float((got - trained_on).abs().max()) < 3 * quantization_error
