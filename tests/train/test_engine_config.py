"""Engine settings read from real configs: DeepSpeed "auto" filling and FSDP's two spellings (no launch)."""

from __future__ import annotations

import json

import pytest
from helpers import InMemoryDataset, random_rows, write_config

from axr.config import load_config
from axr.errors import ConfigError
from axr.models.load import Precision
from axr.train.engine import (
    SHIPPED_DEEPSPEED,
    _fsdp_settings,
    engine_of,
    fill_deepspeed_config,
    fsdp_version_of,
    read_deepspeed_config,
)

FP32 = Precision("float32", "no")


def config_of(tmp_path, extra="", **keys):
    path = write_config(tmp_path / "c.toml", tmp_path / "model", tmp_path / "out", **keys)
    path.write_text(path.read_text() + extra)
    return load_config(path)


@pytest.mark.parametrize("name", SHIPPED_DEEPSPEED)
def test_shipped_deepspeed_configs_are_found_by_name_and_by_axolotl_path(name):
    by_name = read_deepspeed_config(name)
    assert by_name == read_deepspeed_config(f"deepspeed_configs/{name}.json")
    assert by_name["zero_optimization"]["stage"] in (1, 2, 3)


def test_deepspeed_auto_values_are_filled_from_the_axr_config(tmp_path):
    cfg = config_of(tmp_path, deepspeed="zero3", micro_batch_size=3, gradient_accumulation_steps=5)
    filled = fill_deepspeed_config(cfg, read_deepspeed_config(cfg.deepspeed), Precision("bfloat16", "bf16"))
    assert filled["train_micro_batch_size_per_gpu"] == 3
    assert filled["gradient_accumulation_steps"] == 5
    assert filled["gradient_clipping"] == 1.0
    assert filled["bf16"]["enabled"] is True
    assert filled["fp16"]["enabled"] is False
    assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert engine_of(cfg).zero_stage == 3


def test_deepspeed_file_values_that_disagree_are_errors(tmp_path):
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}}))
    cfg = config_of(tmp_path, deepspeed=str(own), micro_batch_size=2)
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu is 4 .* implies 2"):
        fill_deepspeed_config(cfg, read_deepspeed_config(cfg.deepspeed), FP32)
    with pytest.raises(ConfigError, match=r"bf16\.enabled is True .* fp32"):
        fill_deepspeed_config(cfg, read_deepspeed_config("zero3_bf16"), FP32)
    with pytest.raises(ConfigError, match='"optimizer" section'):
        fill_deepspeed_config(cfg, {"optimizer": {"type": "AdamW"}}, FP32)
    with pytest.raises(ConfigError, match="neither a file nor one of the shipped configs"):
        read_deepspeed_config("zero4")


def test_deepspeed_checkpoints_refuse_what_they_cannot_hold(tmp_path):
    fp16 = Precision("float32", "fp16")
    saving = config_of(tmp_path, deepspeed="zero2", save_steps=2)
    with pytest.raises(ConfigError, match=r"checkpoints under fp16 \(the loss scaler"):
        fill_deepspeed_config(saving, read_deepspeed_config("zero2"), fp16)
    with pytest.raises(ConfigError, match="checkpoints under ZeRO stage 0 are not supported yet"):
        fill_deepspeed_config(saving, {"zero_optimization": {"stage": 0}}, FP32)
    not_saving = config_of(tmp_path, deepspeed="zero2", save_strategy="no")
    assert fill_deepspeed_config(not_saving, read_deepspeed_config("zero2"), fp16)["fp16"]["enabled"] is True


def test_optimizer_offload_refuses_optimizers_deepspeed_would_replace(tmp_path):
    offload = read_deepspeed_config("zero3_bf16_cpuoffload_all")
    bf16 = Precision("bfloat16", "bf16")
    lion = config_of(tmp_path, deepspeed="zero3_bf16_cpuoffload_all", optimizer="lion_32bit", bf16=True)
    with pytest.raises(ConfigError, match=r"DeepSpeed runs its own CPU Adam .* optimizer = 'lion_32bit'"):
        fill_deepspeed_config(lion, json.loads(json.dumps(offload)), bf16)
    # AdamW is what DeepSpeed's CPU Adam computes; with zero_force_ds_cpu_optimizer false any optimizer stays.
    adamw = config_of(tmp_path, deepspeed="zero3_bf16_cpuoffload_all", optimizer="adamw_torch", bf16=True)
    assert fill_deepspeed_config(adamw, json.loads(json.dumps(offload)), bf16)["bf16"]["enabled"] is True
    kept = fill_deepspeed_config(lion, {**offload, "zero_force_ds_cpu_optimizer": False}, bf16)
    assert kept["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_fsdp_config_spellings_read_the_same(tmp_path):
    prefixed = config_of(
        tmp_path,
        "[fsdp_config]\nfsdp_version = 2\nfsdp_offload_params = true\n"
        'fsdp_transformer_layer_cls_to_wrap = "LlamaDecoderLayer"\nfsdp_reshard_after_forward = false\n',
    )
    unprefixed = config_of(
        tmp_path,
        "[fsdp_config]\nversion = 2\noffload_params = true\n"
        'transformer_layer_cls_to_wrap = "LlamaDecoderLayer"\nreshard_after_forward = false\n',
    )
    assert _fsdp_settings(prefixed) == _fsdp_settings(unprefixed)
    assert _fsdp_settings(unprefixed)["offload_params"] is True
    assert fsdp_version_of(prefixed) == fsdp_version_of(unprefixed) == 2
    assert engine_of(unprefixed).kind == "fsdp"
    # Without a version FSDP is FSDP1, as in Axolotl; the top-level key counts too.
    assert fsdp_version_of(config_of(tmp_path, fsdp=["full_shard", "auto_wrap"])) == 1
    assert fsdp_version_of(config_of(tmp_path, "[fsdp_config]\noffload_params = true\n", fsdp_version=2)) == 2


def test_fsdp_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="fsdp_offload_params"):
        config_of(tmp_path, "[fsdp_config]\noffload_params = true\nfsdp_offload_params = true\n")
    with pytest.raises(ConfigError, match="disagree"):
        fsdp_version_of(config_of(tmp_path, "[fsdp_config]\nversion = 2\n", fsdp_version=1))
    with pytest.raises(ConfigError, match="fsdp_config and deepspeed are both set: use one"):
        config_of(tmp_path, "[fsdp_config]\nversion = 2\n", deepspeed="zero2")


def test_fsdp_state_dict_types_and_the_keys_axr_does_another_way(tmp_path):
    from axr.train.engine import _fsdp_plugin, fsdp_notes

    def fsdp(text, version=2):
        return config_of(tmp_path, f"[fsdp_config]\nversion = {version}\n{text}")

    # SHARDED_STATE_DICT: per-rank shards under FSDP2, refused (not ignored) under FSDP1.
    sharded = fsdp('state_dict_type = "SHARDED_STATE_DICT"\n')
    assert engine_of(sharded).sharded_checkpoints is True
    assert engine_of(fsdp("")).sharded_checkpoints is False
    with pytest.raises(ConfigError, match="SHARDED_STATE_DICT checkpoints under FSDP1 are not supported yet"):
        _fsdp_plugin(fsdp('state_dict_type = "SHARDED_STATE_DICT"\n', version=1), 1, "cpu")
    with pytest.raises(ConfigError, match="final_state_dict_type: LOCAL_STATE_DICT is not supported yet"):
        _fsdp_plugin(fsdp('final_state_dict_type = "LOCAL_STATE_DICT"\n'), 2, "cpu")
    # FSDP1 always keeps the original parameters; false, and the final SHARDED save, print a note.
    flat = fsdp('use_orig_params = false\nfinal_state_dict_type = "SHARDED_STATE_DICT"\n', version=1)
    assert _fsdp_plugin(flat, 1, "cpu").use_orig_params is True
    notes = fsdp_notes(flat, 1)
    assert [note.split(" = ")[0] for note in notes] == [
        "fsdp_config.final_state_dict_type",
        "fsdp_config.use_orig_params",
    ]
    assert all("has no effect in axr" in note for note in notes)
    assert fsdp_notes(fsdp(""), 2) == []


def test_a_rank_without_eval_rows_still_runs_its_forwards(tiny_llama_dir):
    """Under FSDP/ZeRO-3 a skipped forward hangs the others: a rank short of rows runs a 0-weight copy"""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from axr.packing import PaddedBatchSampler
    from axr.train.evaluation import evaluation_sums

    rows = InMemoryDataset(random_rows(2, seed=4))  # 2 rows for 3 ranks: one rank gets a copy
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    accelerator = Accelerator(cpu=True)
    options = {"packing": False, "attention": "sdpa", "pad": 0, "select": True}

    def sums(rank):
        plan = PaddedBatchSampler(rows.lengths, 1, rank=rank, world_size=3, drop_last=False, order="dataset")
        assert len(plan) == 1
        return evaluation_sums(model, accelerator, rows, plan, **options)

    whole = evaluation_sums(
        model,
        accelerator,
        rows,
        PaddedBatchSampler(rows.lengths, 2, drop_last=False, order="dataset"),
        **options,
    )
    split = [sums(rank) for rank in range(3)]
    assert len(forwards) == 1 + 3  # one forward per rank, the empty one included
    assert [part.tolist() for part in split].count([0.0, 0.0]) == 1  # the copy weighs nothing
    assert (split[0] + split[1] + split[2]).tolist() == pytest.approx(whole.tolist(), rel=1e-6)


def test_ddp_keys_reach_accelerate(tmp_path):
    from datetime import timedelta

    from axr.train.engine import build_accelerator

    cfg = config_of(
        tmp_path,
        ddp_timeout=123,
        ddp_bucket_cap_mb=10,
        ddp_broadcast_buffers=False,
        ddp_find_unused_parameters=True,
    )
    accelerator, engine = build_accelerator(
        cfg, precision=FP32, trackers=[], output_dir=tmp_path / "out", device_type="cpu"
    )
    assert engine.kind == "ddp"
    assert accelerator.gradient_accumulation_steps == cfg.gradient_accumulation_steps
    assert accelerator.init_handler.timeout == timedelta(seconds=123)
    handler = accelerator.ddp_handler
    assert (handler.bucket_cap_mb, handler.broadcast_buffers, handler.find_unused_parameters) == (
        10,
        False,
        True,
    )


def test_a_zero_checkpoint_resumed_without_deepspeed_says_so(tmp_path):
    from accelerate import Accelerator

    from axr.train.checkpoint import load_checkpoint
    from axr.train.state_file import save_state
    from axr.train.zero_state import zero_file_name

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    save_state({"zero_stage": 3}, folder / zero_file_name(0))  # what rank 0 of a ZeRO run writes
    with pytest.raises(ConfigError, match=r"was written under DeepSpeed ZeRO .* same deepspeed config"):
        load_checkpoint(Accelerator(cpu=True), None, None, None, folder)
