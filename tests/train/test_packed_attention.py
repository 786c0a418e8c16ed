"""Packed rows never attend across samples: loss and gradients equal the samples run one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from axr.data.collate import collate_packed, collate_padded
from axr.models.attention import forward_kwargs
from axr.train.loss import (
    count_trainable,
    forward_summed_loss,
    summed_token_loss,
    supports_position_selection,
)

# fp32 on CPU: packed and unpacked differ only by summation order inside the matmuls.
LOSS_RTOL = 1e-5
GRAD_ATOL = 1e-6
GRAD_RTOL = 1e-4


def make_samples(lengths, seed=0):
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
    total_loss = 0.0
    total_count = 0
    for batch in batches:
        output = model(**forward_kwargs(batch, implementation, "cpu"))
        loss_sum = summed_token_loss(output.logits, batch["labels"])
        loss_sum.backward()
        total_loss += loss_sum.item()
        total_count += count_trainable(batch["labels"])
    grads = {name: p.grad.detach().clone() / total_count for name, p in model.named_parameters()}
    return total_loss / total_count, grads


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_equals_unpacked(tiny_llama_dir, implementation):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=implementation)
    model.train()
    samples = make_samples([7, 12, 5, 9])
    packed = collate_packed([[samples[0], samples[1]], [samples[2], samples[3]]], pad_token_id=0, pad_to=24)
    assert packed["num_trainable"] == sum(
        count_trainable(collate_padded([s], pad_token_id=0)["labels"]) for s in samples
    )
    packed_loss, packed_grads = loss_and_grads(model, [packed], implementation)

    singles = []
    for sample in samples:
        batch = collate_padded([sample], pad_token_id=0)
        del batch["attention_mask"]  # one unpadded sample: plain causal attention
        singles.append(batch)
    single_loss, single_grads = loss_and_grads(model, singles, implementation)

    assert packed_loss == pytest.approx(single_loss, rel=LOSS_RTOL)
    for name, grad in single_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)

    # The same row with a plain causal mask (positions that do not restart) leaks across samples,
    # so the comparison above is able to fail.
    leaky = dict(packed)
    leaky["position_ids"] = torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"])
    leaky_loss, _ = loss_and_grads(model, [leaky], implementation)
    assert abs(leaky_loss - single_loss) > 1e-3


def test_collate_packed_layout():
    samples = [(np.array([10, 11, 12]), np.array([-100, 11, 12])), (np.array([20, 21]), np.array([20, 21]))]
    batch = collate_packed([samples, [samples[1]]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21], [20, 21, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 11, 12, -100, 21], [-100, 21, -100, -100, -100]]
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == [0, 3, 5, 7, 10]
    assert batch["max_seqlen"] == 3
    assert batch["num_trainable"] == 4


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_head_on_trained_positions_only_gives_the_same_loss_and_grads(tiny_llama_dir, implementation):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=implementation)
    assert supports_position_selection(model)
    samples = make_samples([7, 12, 5, 9], seed=1)
    batch = collate_packed([[samples[0], samples[1]], [samples[2], samples[3]]], pad_token_id=0)
    results = []
    for select in (False, True):
        model.zero_grad()
        loss = forward_summed_loss(model, batch, implementation, "cpu", select=select)
        loss.backward()
        results.append((loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (full_loss, full_grads), (selected_loss, selected_grads) = results
    assert selected_loss == pytest.approx(full_loss, rel=LOSS_RTOL)
    for name, grad in full_grads.items():
        torch.testing.assert_close(selected_grads[name], grad, atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


def test_collate_padded_layout_and_fixed_lengths():
    samples = [(np.array([10, 11, 12]), np.array([-100, 11, 12])), (np.array([20, 21]), np.array([20, 21]))]
    batch = collate_padded(samples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[10, 11, 12], [20, 21, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 11, 12], [-100, 21, -100]]
    assert batch["num_tokens"] == 5
    assert batch["num_trainable"] == 3
    assert collate_padded(samples, pad_token_id=0, pad_to=8)["input_ids"].shape == (2, 8)
    packed = collate_packed([samples], pad_token_id=0, pad_to_multiple_of=4)
    assert packed["input_ids"].shape == (1, 8)
    assert packed["cu_seqlens"].tolist() == [0, 3, 5, 8]
