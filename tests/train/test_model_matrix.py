"""The model-family matrix: every architecture axr trains, proven on a tiny random model of it.

For each family of ``axr.testing.families.FAMILIES`` (2 layers, hidden 64, the Mistral tokenizer):

* packed rows give the loss and every gradient of the samples run one at a time, with SDPA and
  with eager attention, for a full fine-tune and for LoRA; a leaky row (positions that do not
  restart, so a plain causal mask over the whole row) fails the same checks, and the start-up
  guard (``axr.train.packing_guard``) passes the packed row and refuses the leaky one;
* ``lora_target_linear`` adapts exactly the family's linear layers, ``train()`` (packed, guard on)
  lowers the loss, ``axr merge-lora`` computes the adapter model's logits, ``axr inference`` answers
  and greedy generation with the KV cache equals an argmax decode without it;
* MoE families add the router auxiliary loss (``output_router_logits``) normalised like the loss.

A family the matrix finds leaking with the installed transformers is refused with packing
(``PACKING_UNSAFE``); a backend a family lacks is a config error naming the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers import InMemoryDataset, instruction_rows, write_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from axr.cli import main
from axr.config import load_config
from axr.data.collate import collate_packed, collate_padded
from axr.errors import ConfigError
from axr.models.attention import forward_kwargs, select_attention
from axr.models.load import load_model, load_tokenizer, resolve_precision
from axr.testing.families import FAMILIES, SLIDING_WINDOW, build_tiny_family
from axr.train.loop import TrainingData, train
from axr.train.loss import count_trainable, forward_summed_loss, summed_token_loss
from axr.train.packing_guard import (
    PACKING_UNSAFE,
    TOLERANCE,
    PackingLeakError,
    check_packing,
    packed_logit_difference,
)

# fp32 on CPU: packed and unpacked differ only by summation order inside the matmuls.
LOSS_RTOL = 1e-5
GRAD_ATOL = 1e-6
GRAD_RTOL = 1e-4
LEAK_MIN_LOSS_CHANGE = 1e-4
SAMPLE_LENGTHS = (9, 12, 7, 10)  # longer than SLIDING_WINDOW, and packed rows of 21 and 17 tokens
IMPLEMENTATIONS = ("sdpa", "eager")


def causal_lm_class(name: str):
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = FAMILIES[name].config(8).model_type
    return getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])


def supported(name: str, implementation: str) -> bool:
    """What the installed transformers offers: eager always, SDPA where the class says so."""
    return implementation == "eager" or bool(causal_lm_class(name)._supports_sdpa)


SAFE = [name for name in FAMILIES if FAMILIES[name].config(8).model_type not in PACKING_UNSAFE]
UNSAFE = [name for name in FAMILIES if name not in SAFE]
CELLS = [(name, impl) for name in SAFE for impl in IMPLEMENTATIONS if supported(name, impl)]
MISSING = [(name, impl) for name in FAMILIES for impl in IMPLEMENTATIONS if not supported(name, impl)]
MOE = [name for name in FAMILIES if FAMILIES[name].router_aux_loss]


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory, mistral_tokenizer_dir):
    root = tmp_path_factory.mktemp("families")

    def build(name: str) -> Path:
        return build_tiny_family(name, root / name, mistral_tokenizer_dir)

    return build


def make_samples(lengths=SAMPLE_LENGTHS, seed=0):
    generator = np.random.default_rng(seed)
    samples = []
    for length in lengths:
        ids = generator.integers(3, 32000, size=length)
        labels = ids.copy()
        labels[: length // 3] = -100  # a masked prompt
        samples.append((ids, labels))
    return samples


def loss_and_grads(model, batches, implementation):
    model.zero_grad()
    total_loss, total_count = 0.0, 0
    for batch in batches:
        loss_sum = summed_token_loss(
            model(**forward_kwargs(batch, implementation, "cpu")).logits, batch["labels"]
        )
        loss_sum.backward()
        total_loss += loss_sum.item()
        total_count += count_trainable(batch["labels"])
    grads = {
        name: p.grad.detach().clone() / total_count
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    return total_loss / total_count, grads


def mismatches(expected, got):
    """Which of the loss and the gradients differ (empty: packed equals unpacked)."""
    (expected_loss, expected_grads), (got_loss, got_grads) = expected, got
    problems = []
    if got_loss != pytest.approx(expected_loss, rel=LOSS_RTOL):
        problems.append(f"loss {got_loss} != {expected_loss}")
    assert expected_grads.keys() == got_grads.keys()
    for name, grad in expected_grads.items():
        if not torch.allclose(got_grads[name], grad, atol=GRAD_ATOL, rtol=GRAD_RTOL):
            problems.append(f"gradient of {name}")
    return problems


def leak_caught(problems):
    """Both checks fail on a leaky row: the loss, and the gradients."""
    return bool(problems) and problems[0].startswith("loss") and len(problems) > 1


def packed_and_leaky(samples):
    packed = collate_packed([[samples[0], samples[1]], [samples[2], samples[3]]], pad_token_id=0, pad_to=24)
    leaky = dict(packed)
    leaky["position_ids"] = torch.arange(24).expand(2, 24)  # no restart: a plain causal mask over the row
    return packed, leaky


def singles_of(samples):
    singles = []
    for sample in samples:
        batch = collate_padded([sample], pad_token_id=0)
        del batch["attention_mask"]  # one unpadded sample: plain causal attention
        singles.append(batch)
    return singles


@pytest.mark.parametrize(("name", "implementation"), CELLS)
def test_packed_equals_unpacked_and_a_leaky_row_fails(family_dir, name, implementation):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(
        family_dir(name), attn_implementation=implementation, dtype=torch.float32
    )
    model.train()
    samples = make_samples()
    packed, leaky = packed_and_leaky(samples)
    singles = singles_of(samples)

    # Full fine-tune: the loss and every parameter's gradient.
    alone = loss_and_grads(model, singles, implementation)
    assert mismatches(alone, loss_and_grads(model, [packed], implementation)) == []
    leaked = loss_and_grads(model, [leaky], implementation)
    problems = mismatches(alone, leaked)
    assert leak_caught(problems), problems
    assert abs(leaked[0] - alone[0]) > LEAK_MIN_LOSS_CHANGE

    # The start-up guard passes the packed row and would refuse the leaky one.
    guard = check_packing(model, implementation, "cpu")
    assert guard.difference <= TOLERANCE["float32"]
    leak, _ = packed_logit_difference(model, implementation, "cpu", position_ids=torch.arange(24)[None])
    assert leak > TOLERANCE["float32"]
    assert model.training  # the guard restored training mode

    if FAMILIES[name].options.get("sliding_window"):
        # The window is in force inside the 12-token sample: widening it changes that sample's logits.
        with torch.no_grad():
            ids = torch.as_tensor(samples[1][0])[None]
            windowed = model(input_ids=ids, use_cache=False).logits
            model.config.sliding_window = 4096
            wide = model(input_ids=ids, use_cache=False).logits
            model.config.sliding_window = SLIDING_WINDOW
        assert (windowed - wide).abs().max() > 1e-3

    # LoRA on every linear layer (random B, so the adapter changes the forward): adapter gradients.
    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lora.train()
    alone = loss_and_grads(lora, singles, implementation)
    assert alone[1]
    assert all("lora_" in key for key in alone[1])
    assert mismatches(alone, loss_and_grads(lora, [packed], implementation)) == []
    problems = mismatches(alone, loss_and_grads(lora, [leaky], implementation))
    assert leak_caught(problems), problems


@pytest.mark.parametrize("name", UNSAFE)
def test_a_family_whose_packed_rows_leak_is_refused_with_packing(tmp_path, family_dir, name):
    model = AutoModelForCausalLM.from_pretrained(family_dir(name), attn_implementation="eager")
    model.train()
    samples = make_samples()
    packed, _ = packed_and_leaky(samples)
    problems = mismatches(
        loss_and_grads(model, singles_of(samples), "eager"), loss_and_grads(model, [packed], "eager")
    )
    assert problems  # the reason it is refused: packed rows leak with the installed transformers
    with pytest.raises(PackingLeakError, match=f"{type(model).__name__}.*eager attention"):
        check_packing(model, "eager", "cpu")

    config = load_config(
        write_config(tmp_path / "c.toml", family_dir(name), tmp_path / "out", sample_packing=True)
    )
    tokenizer, _ = load_tokenizer(config)
    with pytest.raises(
        ConfigError, match=rf"sample_packing: {FAMILIES[name].config(8).model_type} .*cannot be packed"
    ):
        load_model(
            config, tokenizer, precision=resolve_precision(config, "cpu", adapter=False), attention="eager"
        )


@pytest.mark.parametrize(("name", "implementation"), MISSING)
def test_a_backend_the_family_lacks_is_a_config_error(tmp_path, family_dir, name, implementation):
    config = load_config(
        write_config(
            tmp_path / "c.toml", family_dir(name), tmp_path / "out", attn_implementation=implementation
        )
    )
    tokenizer, _ = load_tokenizer(config)
    attention = select_attention(config)
    assert attention == implementation
    model_type = FAMILIES[name].config(8).model_type
    with pytest.raises(
        ConfigError, match=f"attn_implementation: {model_type} cannot run {implementation} attention"
    ):
        load_model(
            config, tokenizer, precision=resolve_precision(config, "cpu", adapter=False), attention=attention
        )


def lora_module_names(adapter_file: Path) -> set[str]:
    # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> q_proj; a second targeted
    # parameter of one module (MoE experts' gate_up_proj and down_proj) nests as experts.base_layer.
    keys = load_file(str(adapter_file))
    return {key.split(".lora_")[0].replace(".base_layer", "").rsplit(".", 1)[-1] for key in keys}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_target_linear_trains_merges_and_generates(
    tmp_path, family_dir, mistral_tokenizer_dir, name, capsys
):
    base = family_dir(name)
    packing = name in SAFE
    keys = {
        "adapter": "lora",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_linear": True,
        "sample_packing": packing,
        "sequence_len": 64,
        "micro_batch_size": 2,
        "max_steps": 6,
        "learning_rate": 0.01,
        "lr_scheduler": "constant",
        "save_strategy": "no",
    }
    if not supported(name, "sdpa"):
        keys["eager_attention"] = True
    rows = instruction_rows(mistral_tokenizer_dir)
    if FAMILIES[name].target_linear_refused:
        config_path = write_config(tmp_path / "c.toml", base, tmp_path / "out", **keys)
        with pytest.raises(ConfigError, match=r"lora_target_linear: PEFT left .* without an adapter"):
            train(load_config(config_path), data=TrainingData(train=InMemoryDataset(rows)))
        keys["lora_target_linear"] = False
        keys["lora_target_modules"] = list(FAMILIES[name].linear_modules)
    config_path = write_config(tmp_path / "c.toml", base, tmp_path / "out", **keys)
    result = train(load_config(config_path), data=TrainingData(train=InMemoryDataset(rows)))
    assert result.steps == 6
    assert result.losses[-1] < result.losses[0]
    err = capsys.readouterr().err
    if packing:  # the start-up guard ran on the real (PEFT-wrapped) model
        assert f"packing check: {causal_lm_class(name).__name__} with " in err

    adapter_file = tmp_path / "out" / "adapter_model.safetensors"
    assert lora_module_names(adapter_file) == set(FAMILIES[name].linear_modules)
    trained = load_file(str(adapter_file))
    assert all(tensor.abs().max() > 0 for key, tensor in trained.items() if "lora_B" in key)  # B starts at 0

    # merge-lora: the merged plain model computes the base + adapter logits.
    assert main(["merge-lora", str(config_path)]) == 0
    merged_dir = tmp_path / "out" / "merged"
    from peft import PeftModel

    ids = torch.as_tensor(rows[0][0])[None]
    attention = "eager" if not supported(name, "sdpa") else "sdpa"
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, attn_implementation=attention).eval()
        plain = AutoModelForCausalLM.from_pretrained(base, attn_implementation=attention).eval()
        base_logits = plain(input_ids=ids, use_cache=False).logits
        with_adapter = PeftModel.from_pretrained(plain, str(tmp_path / "out")).eval()
        expected = with_adapter(input_ids=ids, use_cache=False).logits
        got = merged(input_ids=ids, use_cache=False).logits
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter matters
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    # Greedy generation with the KV cache equals an argmax decode without it (EOS banned in both, so
    # every step is compared).
    eos = merged.generation_config.eos_token_id
    with torch.no_grad():
        generated = merged.generate(
            ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0
        )[0, ids.shape[1] :]
        decoded = ids
        for _ in range(6):
            logits = merged(input_ids=decoded, use_cache=False).logits[:, -1]
            logits[:, eos] = -torch.inf
            decoded = torch.cat([decoded, logits.argmax(-1, keepdim=True)], 1)
    assert generated.tolist() == decoded[0, ids.shape[1] :].tolist()

    # axr inference: the base model with the trained adapter answers.
    capsys.readouterr()
    argv = [
        "inference",
        str(config_path),
        "--prompter",
        "none",
        "--prompt",
        "Name a fruit.",
        "--max_new_tokens=4",
        "--temperature=0",
    ]
    assert main(argv) == 0
    loaded = capsys.readouterr().err
    for part in (f"base {base}", f"adapter {tmp_path / 'out'}", f"attention {attention}"):
        assert part in loaded


# ---- MoE: the router auxiliary loss ------------------------------------------------------------


def moe_model(tmp_path, base, **keys):
    config = load_config(
        write_config(tmp_path / "moe.toml", base, tmp_path / "out", output_router_logits=True, **keys)
    )
    tokenizer, _ = load_tokenizer(config)
    model = load_model(
        config, tokenizer, precision=resolve_precision(config, "cpu", adapter=False), attention="sdpa"
    )
    model.train()
    return model


@pytest.mark.parametrize("name", MOE)
def test_router_loss_is_transformers_own_and_weighted_by_tokens(tmp_path, family_dir, name):
    model = moe_model(tmp_path, family_dir(name))
    assert model.config.output_router_logits
    coefficient = model.config.router_aux_loss_coef
    samples = make_samples(seed=2)

    # One padded micro-batch: axr's summed loss / trainable tokens is transformers' loss with labels
    # (mean cross-entropy + router_aux_loss_coef × aux over the unpadded tokens), value and gradients.
    padded = collate_padded(samples[:2], pad_token_id=0)
    count = count_trainable(padded["labels"])
    model.zero_grad()
    ours = forward_summed_loss(model, padded, "sdpa", "cpu", select=True) / count
    ours.backward()
    our_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference = model(
        input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"]
    )
    reference.loss.backward()
    assert ours.item() == pytest.approx(reference.loss.item(), rel=1e-5)
    assert coefficient * reference.aux_loss.item() > 1e-3  # the auxiliary term is there and not negligible
    for parameter_name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(our_grads[parameter_name], parameter.grad, atol=1e-6, rtol=1e-4)

    # Several micro-batches: each one's auxiliary loss is weighted by its trainable tokens, like its
    # cross-entropy, so the step's loss is the token-weighted mean of transformers' per-batch losses.
    batches = [collate_padded([sample], pad_token_id=0) for sample in samples]
    step = sum(forward_summed_loss(model, b, "sdpa", "cpu", select=False).item() for b in batches)
    counts = [count_trainable(b["labels"]) for b in batches]
    with torch.no_grad():
        per_batch = [model(input_ids=b["input_ids"], labels=b["labels"]).loss.item() for b in batches]
    expected = sum(n * loss for n, loss in zip(counts, per_batch, strict=True)) / sum(counts)
    assert step / sum(counts) == pytest.approx(expected, rel=1e-5)

    # Packed rows: padding is left out of the routing statistics (transformers' forward without an
    # attention mask would count it), so the loss does not depend on how far a row is padded.
    short = collate_packed([samples], pad_token_id=0)
    long = collate_packed([samples], pad_token_id=0, pad_to=64)
    with torch.no_grad():
        assert forward_summed_loss(model, long, "sdpa", "cpu", select=True).item() == pytest.approx(
            forward_summed_loss(model, short, "sdpa", "cpu", select=True).item(), rel=1e-6
        )
        unmasked = [
            model(**forward_kwargs(b, "sdpa", "cpu"), output_router_logits=True).aux_loss
            for b in (short, long)
        ]
    assert abs(unmasked[0].item() - unmasked[1].item()) > 1e-4  # the check above can fail

    # Evaluation reports the cross-entropy alone.
    model.eval()
    with torch.no_grad():
        evaluated = forward_summed_loss(model, padded, "sdpa", "cpu", select=True).item()
        plain = summed_token_loss(
            model(**forward_kwargs(padded, "sdpa", "cpu")).logits, padded["labels"]
        ).item()
    assert evaluated == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("name", MOE)
def test_output_router_logits_changes_what_train_optimises(tmp_path, family_dir, mistral_tokenizer_dir, name):
    rows = instruction_rows(mistral_tokenizer_dir)
    losses = []
    for router in (False, True):
        keys = {"sample_packing": True, "sequence_len": 64, "max_steps": 1, "save_strategy": "no"}
        path = write_config(
            tmp_path / f"{router}.toml",
            family_dir(name),
            tmp_path / f"out-{router}",
            output_router_logits=router,
            **keys,
        )
        losses.append(train(load_config(path), data=TrainingData(train=InMemoryDataset(rows))).losses[0])
    # Same data, seed and weights: the first step's loss grows by router_aux_loss_coef × the balancing loss.
    assert losses[1] - losses[0] > 1e-3


@pytest.mark.parametrize("name", ["llama", "deepseek_v3"])
def test_output_router_logits_without_a_router_loss_is_a_config_error(tmp_path, family_dir, name):
    config = load_config(
        write_config(tmp_path / "c.toml", family_dir(name), tmp_path / "out", output_router_logits=True)
    )
    tokenizer, _ = load_tokenizer(config)
    with pytest.raises(
        ConfigError, match=f"output_router_logits: {FAMILIES[name].config(8).model_type} has no"
    ):
        load_model(
            config, tokenizer, precision=resolve_precision(config, "cpu", adapter=False), attention="sdpa"
        )
