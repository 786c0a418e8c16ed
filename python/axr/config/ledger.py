"""The key ledger: what axr does with every config key it accepts.

Every key of the schema (top level and ``datasets`` entry) is in exactly one of three sets:

* ``used(by, test)``: read by the code that does what the key says; ``test`` names the test
  that shows the key changes behaviour.
* ``not_yet(would, issue)``: accepted by name (an Axolotl key), but setting it fails validation
  with ``KEY: not supported yet: <would>``, before any work starts.
* ``no_effect(why)``: validates, and a note says why it changes nothing in axr.

Moving a key from *not yet supported* to *used* is a one-line edit of its entry below (plus a
typed field in ``schema.py`` when the key has none yet: keys without one are accepted by name
only, which is enough to refuse them or note them). ``tests/config/test_ledger.py`` fails when
a schema key has no entry, when a used key has no typed field or names a missing test.

Values of used keys that axr does not handle yet are refused the same way: ``VALUE_RULES`` below,
optimizer and schedule names in ``axr.config.names``, backends in ``axr.config.attention``.

A key counts as *set* when its value asks for something: blanks, ``false``, empty strings,
lists and tables ask for nothing (``load_in_8bit: false`` is what axr does anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Used:
    by: str
    """The code that reads the key."""
    test: str
    """``tests/<file>.py::<test>``: the test showing the key changes behaviour."""


@dataclass(frozen=True)
class NotYet:
    would: str
    """What setting the key would do."""
    issue: int | None = None
    """The issue that implements it, when one is open."""


@dataclass(frozen=True)
class NoEffect:
    why: str
    """Why the key changes nothing in axr."""


Entry = Used | NotYet | NoEffect


def used(by: str, test: str) -> Used:
    return Used(by, test)


def not_yet(would: str, issue: int | None = None) -> NotYet:
    return NotYet(would, issue)


def no_effect(why: str) -> NoEffect:
    return NoEffect(why)


def kind_of(entry: Entry) -> str:
    return {Used: "used", NotYet: "not yet supported", NoEffect: "no effect"}[type(entry)]


# Tests that show effects, by file.
_EFFECTS = "tests/config/test_key_effects.py"
_OPTIM = "tests/train/test_optim.py"
_FEATURES = "tests/train/test_train_features.py"
_LOOP = "tests/train/test_train_loop.py"
_PRECISION = "tests/config/test_config_precision.py"
_ENGINES = "tests/train/test_engine_config.py"

PREPROCESS = "data.preprocess.options_from_config (the native pipeline's options)"
MODEL_LOAD = "models.load (tokenizer and model loading)"
ADAPTER = "models.adapters.apply_adapter (the PEFT LoRA config)"
HUB = "hub (hub ids resolved into the Hugging Face cache)"
PUSH = "train.push (uploads to the hub)"
GRADIO = "inference.session.launch_gradio (the axr inference --gradio page)"
QUANTIZATION = "models.quantization (bitsandbytes 4-bit / 8-bit base weights)"
OPTIMIZER = "train.optim.build_optimizer"
SCHEDULE = "train.optim.build_scheduler"
LOOP = "train.loop.train"
RELORA = "train.relora (merge, re-initialise and prune at each restart)"
_RELORA = "tests/train/test_relora.py"
ENGINE = "train.engine.build_accelerator (accelerate's DDP, DeepSpeed and FSDP plugins)"
TRACKERS = "train.progress (accelerate trackers)"
DATASET_FORMAT = "data.preprocess: a format key of the dataset's type (native pipeline)"

_GPU_KERNEL = "a fused GPU kernel computing the same thing faster; axr's result does not depend on it"
_INTERNAL = "set internally by Axolotl; axr works it out itself"

TOP_LEVEL: dict[str, Entry] = {
    # ---- model and tokenizer ----------------------------------------------------------------
    "base_model": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "base_model_ignore_patterns": used(
        HUB, "tests/hub/test_hub_models.py::test_revision_and_ignore_patterns_choose_what_is_fetched"
    ),
    "base_model_config": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "gguf_file": used(
        "models.gguf.model_dir (the GGUF file in the base_model folder, converted once)",
        "tests/test_gguf.py::test_every_way_of_naming_the_file_reuses_one_conversion",
    ),
    "revision_of_model": used(
        HUB, "tests/hub/test_hub_models.py::test_revision_and_ignore_patterns_choose_what_is_fetched"
    ),
    "tokenizer_config": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "model_type": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "tokenizer_type": used(MODEL_LOAD, f"{_EFFECTS}::test_tokenizer_load_keys"),
    "trust_remote_code": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "tokenizer_use_fast": used(MODEL_LOAD, f"{_EFFECTS}::test_tokenizer_load_keys"),
    "tokenizer_legacy": used(MODEL_LOAD, f"{_EFFECTS}::test_tokenizer_load_keys"),
    "resize_token_embeddings_to_32x": used(MODEL_LOAD, f"{_EFFECTS}::test_resize_token_embeddings_to_32x"),
    "is_falcon_derived_model": no_effect(_INTERNAL),
    "is_llama_derived_model": no_effect(_INTERNAL),
    "is_qwen_derived_model": no_effect(_INTERNAL),
    "is_mistral_derived_model": no_effect(_INTERNAL),
    "overrides_of_model_config": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "overrides_of_model_kwargs": not_yet("pass extra keyword arguments to the model's from_pretrained"),
    "rope_scaling": not_yet("rope scaling at the top level (removed in Axolotl); set it under model_config"),
    "cls_model_config": not_yet("load the model config with this transformers config class"),
    "tokenizer_use_mistral_common": not_yet(
        "tokenize with Mistral's mistral-common instead of tokenizer.json"
    ),
    "tokenizer_save_jinja_files": no_effect("axr saves the chat template inside tokenizer_config.json"),
    "processor_type": not_yet("load a multimodal processor (images, audio)"),
    "processor_kwargs": not_yet("pass extra options to the multimodal processor"),
    "added_tokens_overrides": not_yet("rename reserved added tokens by id"),
    "fix_untrained_tokens": not_yet("reset these token ids' embeddings to the mean embedding"),
    "mean_resizing_embeddings": not_yet("initialise new embedding rows with the mean of the old ones"),
    "shrink_embeddings": not_yet("shrink the embeddings to the tokenizer's length"),
    "embeddings_skip_upcast": not_yet("keep the embeddings out of the fp32 upcast under PEFT"),
    "reinit_weights": not_yet("start from random weights instead of the pretrained ones"),
    "chat_template_kwargs": not_yet("pass extra variables to the chat template"),
    "num_labels": not_yet("train a classification or reward head with this many labels"),
    "low_cpu_mem_usage": no_effect(
        "transformers always loads with low CPU memory use in the versions axr needs"
    ),
    "experimental_skip_move_to_device": no_effect(
        "accelerate places the model; there is no separate move to skip"
    ),
    "use_kernels": no_effect(_GPU_KERNEL),
    "use_onebitllms": not_yet("1.58-bit (BitNet) training through onebitllms"),
    "trainer_cls": not_yet("train with a custom Trainer class"),
    "freeze_mm_modules": not_yet("freeze the vision/audio towers of a multimodal model"),
    "unfrozen_parameters": used(
        ADAPTER, "tests/train/test_peft_options.py::test_unfrozen_parameters_train_only_the_matching_weights"
    ),
    "image_size": not_yet("resize images of multimodal data"),
    "image_resize_algorithm": not_yet("the filter used to resize images of multimodal data"),
    "role_boundaries": not_yet("role markers of the multimodal loss mask"),
    # ---- quantization and precision ---------------------------------------------------------
    "bnb_config_kwargs": used(
        QUANTIZATION, "tests/train/test_qlora.py::test_bnb_config_kwargs_reach_the_quantized_layers"
    ),
    "gptq": not_yet(
        "train LoRA on a GPTQ-quantized base model; transformers' GPTQ backend (gptqmodel) ships as a"
        " C++/CUDA source build only, with no CPU wheel to build or test it on"
    ),
    "gptq_groupsize": no_effect("setting of Axolotl's old GPTQ loader; Axolotl ignores it too"),
    "gptq_model_v1": no_effect("setting of Axolotl's old GPTQ loader; Axolotl ignores it too"),
    "gptq_disable_exllama": no_effect("dropped by Axolotl's validation, so never read there either"),
    "load_in_8bit": used(QUANTIZATION, "tests/train/test_qlora.py::test_lora_on_an_8bit_base_trains"),
    "load_in_4bit": used(
        QUANTIZATION,
        "tests/train/test_qlora.py::test_qlora_trains_and_the_saved_adapter_reproduces_the_eval_loss",
    ),
    "model_quantization_config": not_yet(
        "load the model with a transformers quantization config (MXFP4, FP8)"
    ),
    "model_quantization_config_kwargs": not_yet("options of model_quantization_config"),
    "quantize_moe_experts": not_yet("quantize MoE expert weights on load"),
    "qat": not_yet("quantization-aware training"),
    "quantization": not_yet("post-training quantization of the trained model"),
    "bf16": used("config.precision.resolve_precision", f"{_PRECISION}::test_explicit_bf16"),
    "fp16": used("config.precision.resolve_precision", f"{_PRECISION}::test_explicit_fp16_wins_over_auto"),
    "tf32": used("config.precision.apply_tf32 (torch's TF32 matmul switches)", f"{_EFFECTS}::test_tf32"),
    "bfloat16": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "float16": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "float32": no_effect("fp32 is what axr uses when no half precision is asked for"),
    "fp8": not_yet("FP8 mixed precision (torchao)"),
    "fp8_enable_fsdp_float8_all_gather": not_yet("FP8 all-gather under FSDP", 13),
    "fp32_norms": not_yet("keep normalisation layers in fp32 under FSDP2", 13),
    "fp32_norm_classes": not_yet("normalisation classes kept in fp32 under FSDP2", 13),
    "gpu_memory_limit": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "lora_on_cpu": used(
        "merge.merge_lora (merges on the CPU)",
        "tests/test_merge.py::test_merged_model_computes_the_adapter_models_logits",
    ),
    # ---- data -------------------------------------------------------------------------------
    "datasets": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "shuffle_merged_datasets": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "shuffle_before_merging_datasets": not_yet("shuffle each dataset before merging them"),
    "test_datasets": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "rl": used(
        "axr.train.preference.train_preference",
        "tests/train/test_preference_training.py::test_dpo_raises_reward_accuracy_on_the_training_pairs",
    ),
    "chat_template": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "chat_template_jinja": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "default_system_message": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "eot_tokens": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "dataset_prepared_path": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "push_dataset_to_hub": used(
        "data.hub_store (the prepared store pushed to, and reused from, a hub dataset repo)",
        "tests/hub/test_hub_push.py::test_push_dataset_to_hub_uploads_the_store_once_and_a_fresh_machine_downloads_it",
    ),
    "dataset_num_proc": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "dataset_keep_in_memory": no_effect(
        "the native pipeline streams rows in bounded memory; there is no dataset to keep"
    ),
    "dataset_exact_deduplication": not_yet("drop rows identical to an earlier row"),
    "hub_model_id": used(PUSH, "tests/hub/test_hub_push.py::test_push_settings_are_checked_before_training"),
    "hub_strategy": used(
        PUSH,
        "tests/hub/test_hub_push.py::test_hub_strategy_checkpoint_pushes_the_model_at_each_save_and_the_last_checkpoint",
    ),
    "hub_revision": not_yet("the hub branch results are pushed to", 15),
    "hf_use_auth_token": no_effect(
        "huggingface_hub always uses the token from HF_TOKEN or `hf auth login` when there is one"
    ),
    "val_set_size": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "dataset_shard_num": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "dataset_shard_idx": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "pretraining_dataset": used(
        "data.preprocess.options_from_config (pretraining entries → completion datasets)",
        "tests/data/test_chunking.py::test_pretraining_dataset_trains_end_to_end",
    ),
    "streaming": no_effect(
        "axr always reads datasets (and pretraining_dataset) as a stream, in bounded memory, into "
        "the prepared store; training reads that store from disk, so nothing is held whole in memory"
    ),
    "streaming_multipack_buffer_size": not_yet("samples buffered to pack streamed data", 11),
    "pretrain_multipack_attn": used(
        "train.batches.collate_micro_batch", "tests/data/test_chunking.py::test_pretrain_multipack_attn"
    ),
    "pretraining_sample_concatenation": not_yet("concatenate pre-training samples", 11),
    "curriculum_sampling": not_yet("sample the training rows in dataset order"),
    # ---- sequence and packing ---------------------------------------------------------------
    "sequence_len": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "eval_sequence_len": not_yet("a different maximum length for evaluation samples"),
    "min_sample_len": not_yet("drop samples shorter than this many tokens"),
    "max_packed_sequence_len": no_effect("removed from Axolotl (use sample_packing), which ignores it too"),
    "sample_packing_seq_len_multiplier": no_effect("old packing setting; Axolotl ignores it too"),
    "pad_to_sequence_len": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "pad_to_multiple_of": not_yet("pad each batch to a multiple of this many tokens"),
    "sample_packing": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "eval_sample_packing": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "sample_packing_eff_est": no_effect("axr packs exactly and needs no efficiency estimate"),
    "sample_packing_group_size": no_effect("axr packs all samples at once; there are no groups"),
    "sample_packing_bin_size": not_yet("limit the number of samples in one packed row"),
    "sample_packing_sequentially": not_yet(
        'pack samples in dataset order (packing_strategy = "sequential" does this)'
    ),
    "sample_packing_mp_start_method": no_effect("axr packs in Rust, without Python worker processes"),
    "multipack_real_batches": not_yet("micro-batches of several packed rows instead of one"),
    "batch_flattening": not_yet("padding-free batches without packing"),
    "use_pose": not_yet("PoSE context extension through position ids"),
    "pose_split_on_token_ids": not_yet("PoSE: token ids to split on"),
    "pose_max_context_len": not_yet("PoSE: the target context length"),
    "pose_num_chunks": not_yet("PoSE: number of chunks"),
    "skip_prepare_dataset": no_effect(
        "axr's prepared store is built once and streamed; tokenizing on the fly would give the same rows"
    ),
    "num_dataset_shards_to_save": no_effect("axr's prepared store has its own file layout"),
    "total_num_tokens": no_effect(_INTERNAL),
    "total_supervised_tokens": no_effect(_INTERNAL),
    "is_preprocess": no_effect(_INTERNAL),
    "preprocess_iterable": no_effect("declared by Axolotl but never read there"),
    "dataloader_num_workers": no_effect(
        "axr's batches come from a memory-mapped store without worker processes"
    ),
    "dataloader_pin_memory": no_effect(
        "axr's batches come from a memory-mapped store without worker processes"
    ),
    "dataloader_prefetch_factor": no_effect(
        "axr's batches come from a memory-mapped store without worker processes"
    ),
    "dataloader_drop_last": not_yet("drop the last partial batch of an epoch"),
    "remove_unused_columns": no_effect("prepared stores hold only the columns training reads"),
    "accelerator_config": not_yet("pass these options to accelerate"),
    "device_map": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    "max_memory": used(MODEL_LOAD, f"{_EFFECTS}::test_model_load_keys"),
    # ---- adapters ---------------------------------------------------------------------------
    "adapter": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_model_dir": used(ADAPTER, f"{_FEATURES}::test_lora_model_dir_continues_an_adapter"),
    "lora_r": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_alpha": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_dropout": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_target_modules": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_target_linear": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_target_parameters": used(
        ADAPTER,
        "tests/train/test_peft_options.py::test_target_modules_layers_and_parameters_select_what_is_adapted",
    ),
    "peft_layers_to_transform": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "peft_layers_pattern": not_yet("the layer-name pattern used with peft_layers_to_transform", 14),
    "lora_modules_to_save": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_fan_in_fan_out": used(ADAPTER, f"{_EFFECTS}::test_adapter_keys"),
    "lora_rank_pattern": not_yet("per-module LoRA ranks", 14),
    "lora_alpha_pattern": not_yet("per-module LoRA alphas", 14),
    "peft": used(
        ADAPTER, "tests/train/test_peft_options.py::test_loftq_and_fan_in_fan_out_reach_the_lora_config"
    ),
    "peft_use_dora": used(
        ADAPTER, "tests/train/test_peft_options.py::test_dora_reaches_peft_and_changes_the_forward"
    ),
    "peft_use_rslora": used(
        ADAPTER, "tests/train/test_peft_options.py::test_rslora_scales_by_alpha_over_sqrt_r"
    ),
    "peft_layer_replication": not_yet("replicate layer ranges before adding adapters", 14),
    "peft_init_lora_weights": not_yet("another LoRA initialisation method", 14),
    "peft_trainable_token_indices": not_yet("train only these embedding rows", 14),
    "peft_ensure_weight_tying": not_yet("keep the adapters of tied weights tied", 14),
    "peft_autocast_adapter_dtype": not_yet("choose whether adapter weights are upcast to fp32", 14),
    "qlora_sharded_model_loading": not_yet("load a QLoRA model shard by shard for FSDP", 14),
    "loraplus_lr_ratio": not_yet("LoRA+: a higher learning rate for the B matrices"),
    "loraplus_lr_embedding": not_yet("LoRA+: the learning rate of embedding adapters"),
    "merge_lora": no_effect("axr merges with the merge-lora command"),
    "merge_method": no_effect("axr merge-lora always merges shard by shard"),
    "lora_mlp_kernel": no_effect(_GPU_KERNEL),
    "lora_qkv_kernel": no_effect(_GPU_KERNEL),
    "lora_o_kernel": no_effect(_GPU_KERNEL),
    "lora_embedding_kernel": no_effect(_GPU_KERNEL),
    "relora": used(RELORA, f"{_RELORA}::test_relora_refuses_what_it_cannot_run"),
    "relora_steps": used(
        RELORA, f"{_RELORA}::test_training_restarts_on_schedule_and_resumes_across_a_restart"
    ),
    "relora_warmup_steps": used(
        SCHEDULE, f"{_RELORA}::test_training_restarts_on_schedule_and_resumes_across_a_restart"
    ),
    "relora_anneal_steps": used(
        SCHEDULE, f"{_RELORA}::test_training_restarts_on_schedule_and_resumes_across_a_restart"
    ),
    "relora_prune_ratio": used(RELORA, f"{_RELORA}::test_restart_merges_the_delta_reinitialises_and_prunes"),
    "relora_prune_method": used(
        RELORA, f"{_RELORA}::test_training_restarts_on_schedule_and_resumes_across_a_restart"
    ),
    "relora_cpu_offload": used(RELORA, f"{_RELORA}::test_restart_merges_the_delta_reinitialises_and_prunes"),
    "jagged_restart_steps": used(
        SCHEDULE,
        "tests/train/test_jagged_schedule.py::test_restarts_drop_to_the_floor_then_warm_up_and_anneal",
    ),
    "jagged_restart_warmup_steps": used(
        SCHEDULE,
        "tests/train/test_jagged_schedule.py::test_restarts_drop_to_the_floor_then_warm_up_and_anneal",
    ),
    "jagged_restart_anneal_steps": used(
        SCHEDULE,
        "tests/train/test_jagged_schedule.py::test_restarts_drop_to_the_floor_then_warm_up_and_anneal",
    ),
    "lisa_n_layers": not_yet("LISA: train this many layers at a time"),
    "lisa_step_interval": not_yet("LISA: steps between layer switches"),
    "lisa_layers_attribute": not_yet("LISA: where the layer list is"),
    # ---- tracking ---------------------------------------------------------------------------
    "use_tensorboard": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "use_wandb": not_yet("turn wandb on without wandb_project (axr turns it on with wandb_project)"),
    "wandb_mode": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "wandb_project": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "wandb_entity": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "wandb_watch": not_yet("log gradients or parameters to wandb"),
    "wandb_name": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "wandb_run_id": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "wandb_log_model": not_yet("upload checkpoints to wandb"),
    "use_mlflow": not_yet("turn MLflow on without mlflow_experiment_name (axr turns it on with it)"),
    "mlflow_tracking_uri": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "mlflow_experiment_name": used(TRACKERS, f"{_EFFECTS}::test_tracker_keys"),
    "mlflow_run_name": not_yet("name the MLflow run"),
    "hf_mlflow_log_artifacts": not_yet("copy checkpoints to the MLflow artifact store"),
    "use_comet": not_yet("log to Comet"),
    "comet_api_key": not_yet("log to Comet"),
    "comet_workspace": not_yet("log to Comet"),
    "comet_project_name": not_yet("log to Comet"),
    "comet_experiment_key": not_yet("log to Comet"),
    "comet_mode": not_yet("log to Comet"),
    "comet_online": not_yet("log to Comet"),
    "comet_experiment_config": not_yet("log to Comet"),
    "use_trackio": not_yet("log to Trackio"),
    "trackio_project_name": not_yet("log to Trackio"),
    "trackio_run_name": not_yet("log to Trackio"),
    "trackio_space_id": not_yet("sync a Trackio dashboard to a Space"),
    "use_otel_metrics": not_yet("serve OpenTelemetry metrics"),
    "otel_metrics_host": not_yet("serve OpenTelemetry metrics"),
    "otel_metrics_port": not_yet("serve OpenTelemetry metrics"),
    "profiler_steps": not_yet("profile training steps into output_dir"),
    "profiler_steps_start": not_yet("profile training steps into output_dir"),
    "include_tokens_per_second": no_effect("axr always reports tokens per second"),
    "include_tkps": no_effect("axr always reports tokens per second"),
    "gradio_title": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    "gradio_share": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    "gradio_server_name": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    "gradio_server_port": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    "gradio_max_new_tokens": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    "gradio_temperature": used(
        GRADIO, "tests/test_gradio.py::test_the_gradio_page_streams_answers_and_keeps_the_chat_history"
    ),
    # ---- training ---------------------------------------------------------------------------
    "output_dir": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "torch_compile": not_yet("compile the model with torch.compile"),
    "torch_compile_backend": not_yet("the torch.compile backend"),
    "torch_compile_mode": not_yet("the torch.compile mode"),
    "torch_compile_options": not_yet("inductor options of torch.compile"),
    "gradient_accumulation_steps": used(LOOP, f"{_LOOP}::test_gradient_accumulation_equals_one_big_batch"),
    "micro_batch_size": used(LOOP, f"{_LOOP}::test_gradient_accumulation_equals_one_big_batch"),
    "batch_size": not_yet("derive gradient_accumulation_steps from the total batch size"),
    "auto_find_batch_size": not_yet("shrink the batch after an out-of-memory error"),
    "eval_batch_size": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "num_epochs": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "warmup_steps": used(SCHEDULE, f"{_OPTIM}::test_cosine_with_warmup_and_min_ratio"),
    "warmup_ratio": used(SCHEDULE, f"{_OPTIM}::test_warmup_ratio_counts_steps_of_the_run"),
    "learning_rate": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "lr_quadratic_warmup": not_yet("a quadratic instead of linear learning-rate warmup"),
    "logging_steps": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "eval_steps": used(LOOP, f"{_FEATURES}::test_eval_loss_is_reported_every_eval_steps"),
    "evals_per_epoch": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "eval_strategy": not_yet("choose when to evaluate (no, steps, epoch)"),
    "save_strategy": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "save_steps": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "saves_per_epoch": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "save_total_limit": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "save_first_step": not_yet("also save a checkpoint after the first step"),
    "save_only_model": not_yet("save checkpoints without optimizer state"),
    "dynamic_checkpoint": not_yet("save a checkpoint when a trigger file appears"),
    "max_steps": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "eval_table_size": not_yet("log generated predictions to wandb at each evaluation"),
    "eval_max_new_tokens": no_effect(
        "only read for eval_table_size's predictions, which axr does not log yet"
    ),
    "eval_causal_lm_metrics": not_yet("compute generation metrics (sacrebleu, comet, ...) at evaluation"),
    "do_causal_lm_eval": not_yet("compute generation metrics at evaluation"),
    "do_bench_eval": not_yet("run a benchmark at evaluation"),
    "bench_dataset": not_yet("the benchmark run at evaluation"),
    "bench_split": not_yet("the split of the benchmark run at evaluation"),
    "metric_for_best_model": not_yet("the metric that picks the best checkpoint"),
    "greater_is_better": not_yet("the direction of metric_for_best_model"),
    "load_best_model_at_end": not_yet("reload the best checkpoint at the end"),
    "generate_samples": not_yet("generate sample completions during training"),
    "num_generation_samples": not_yet("generate sample completions during training"),
    "generation_max_new_tokens": not_yet("generate sample completions during training"),
    "generation_temperature": not_yet("generate sample completions during training"),
    "generation_top_p": not_yet("generate sample completions during training"),
    "generation_top_k": not_yet("generate sample completions during training"),
    "generation_prompt_ratio": not_yet("generate sample completions during training"),
    "generation_do_sample": not_yet("generate sample completions during training"),
    "loss_watchdog_threshold": used(LOOP, f"{_FEATURES}::test_loss_watchdog_stops_a_diverged_run"),
    "loss_watchdog_patience": used(LOOP, f"{_FEATURES}::test_loss_watchdog_stops_a_diverged_run"),
    "save_safetensors": no_effect("axr always saves safetensors"),
    "train_on_inputs": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "group_by_length": used("train.batches.build_plan", f"{_EFFECTS}::test_loop_keys"),
    "gradient_checkpointing": used(MODEL_LOAD, f"{_EFFECTS}::test_gradient_checkpointing_keys"),
    "output_router_logits": used(
        "models.load (the model config) and train.loss (the router auxiliary loss)",
        "tests/train/test_model_matrix.py::test_output_router_logits_changes_what_train_optimises",
    ),
    "gradient_checkpointing_kwargs": used(MODEL_LOAD, f"{_EFFECTS}::test_gradient_checkpointing_keys"),
    "selective_checkpointing": not_yet("keep the outputs of chosen ops instead of recomputing them"),
    "activation_offloading": not_yet("offload activations to CPU memory or disk"),
    "layer_offloading": not_yet("keep layer weights in CPU memory, prefetched for each layer"),
    "tiled_mlp": not_yet("ALST tiled MLP for long sequences"),
    "tiled_mlp_num_shards": not_yet("ALST tiled MLP for long sequences"),
    "tiled_mlp_use_original_mlp": not_yet("ALST tiled MLP for long sequences"),
    "chunked_cross_entropy": no_effect("axr computes the loss only on trained positions, in one pass"),
    "chunked_cross_entropy_num_chunks": no_effect(
        "axr computes the loss only on trained positions, in one pass"
    ),
    "use_eaft": not_yet("entropy-aware focal training loss"),
    "eaft_alpha": not_yet("entropy-aware focal training loss"),
    "eaft_k": not_yet("entropy-aware focal training loss"),
    "experts_implementation": not_yet("another MoE experts backend"),
    "llama4_linearized_experts": not_yet("Llama 4 experts as plain linear layers"),
    "torch_empty_cache_steps": no_effect("memory housekeeping of the CUDA allocator; results are the same"),
    "gc_collect_steps": no_effect("Python garbage-collection housekeeping; results are the same"),
    "early_stopping_patience": used(LOOP, f"{_FEATURES}::test_early_stopping_when_eval_loss_stops_improving"),
    "lr_scheduler": used(SCHEDULE, f"{_OPTIM}::test_linear_decays_to_zero"),
    "lr_scheduler_kwargs": not_yet("extra options of the learning-rate schedule"),
    "cosine_min_lr_ratio": used(SCHEDULE, f"{_OPTIM}::test_cosine_with_warmup_and_min_ratio"),
    "cosine_constant_lr_ratio": used(SCHEDULE, f"{_OPTIM}::test_cosine_constant_ratio_holds_the_minimum"),
    "lr_div_factor": used(SCHEDULE, f"{_OPTIM}::test_one_cycle_matches_torch"),
    "lr_groups": not_yet("per-module learning rates"),
    "embedding_lr": not_yet("a separate learning rate for the embeddings"),
    "embedding_lr_scale": not_yet("a separate learning rate for the embeddings"),
    "optimizer": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "optim_args": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "optim_target_modules": not_yet("the modules GaLore-style optimizers project", 14),
    "weight_decay": used(OPTIMIZER, f"{_OPTIM}::test_weight_decay_skips_biases_and_norms"),
    "adam_beta1": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "adam_beta2": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "adam_beta3": not_yet("beta3 of the CAME optimizer"),
    "adam_epsilon": used(OPTIMIZER, f"{_EFFECTS}::test_optimizer_keys"),
    "adam_epsilon2": not_yet("second epsilon of the CAME optimizer"),
    "adam_eps": no_effect("a misspelling of adam_epsilon in Axolotl's examples; Axolotl ignores it too"),
    "eta_min": no_effect("belongs in lr_scheduler_kwargs; Axolotl ignores it at the top level too"),
    "dion_lr": not_yet("the Dion optimizer"),
    "dion_momentum": not_yet("the Dion optimizer"),
    "dion_rank_fraction": not_yet("the Dion optimizer"),
    "dion_rank_multiple_of": not_yet("the Dion optimizer"),
    "qgalore_rank": not_yet("the Q-GaLore optimizer"),
    "qgalore_update_proj_gap": not_yet("the Q-GaLore optimizer"),
    "qgalore_scale": not_yet("the Q-GaLore optimizer"),
    "qgalore_proj_type": not_yet("the Q-GaLore optimizer"),
    "qgalore_proj_quant": not_yet("the Q-GaLore optimizer"),
    "qgalore_proj_bits": not_yet("the Q-GaLore optimizer"),
    "qgalore_proj_group_size": not_yet("the Q-GaLore optimizer"),
    "qgalore_cos_threshold": not_yet("the Q-GaLore optimizer"),
    "qgalore_gamma_proj": not_yet("the Q-GaLore optimizer"),
    "qgalore_queue_size": not_yet("the Q-GaLore optimizer"),
    "max_grad_norm": used(LOOP, f"{_EFFECTS}::test_loop_keys"),
    "neftune_noise_alpha": used(LOOP, f"{_FEATURES}::test_neftune_noises_the_embeddings_in_training_only"),
    # ---- attention and kernels --------------------------------------------------------------
    "attn_implementation": used("models.attention.select_attention", f"{_EFFECTS}::test_attn_implementation"),
    "flash_optimum": no_effect("BetterTransformer swaps in PyTorch's fused attention; axr already uses SDPA"),
    "flash_attn_cross_entropy": no_effect(_GPU_KERNEL),
    "flash_attn_rms_norm": no_effect(_GPU_KERNEL),
    "flash_attn_fuse_qkv": no_effect(_GPU_KERNEL),
    "flash_attn_fuse_mlp": no_effect(_GPU_KERNEL),
    "s2_attention": not_yet("shifted-sparse attention (LongLoRA)"),
    "flex_attn_compile_kwargs": not_yet("torch.compile options of flex attention"),
    "gemma4_hybrid_attn_impl": not_yet("Gemma 4: flash attention on sliding layers, SDPA on global ones"),
    "large_head_attention": not_yet("another attention kernel for head dimensions above 256"),
    "sdpa_varlen": no_effect("packed SDPA in axr keeps samples apart through position ids already"),
    "fused_attn_kernel": no_effect(_GPU_KERNEL),
    "scaling_softmax": not_yet("scalable softmax (SSMax) attention"),
    "scaling_softmax_factor": not_yet("scalable softmax (SSMax) attention"),
    "scaling_softmax_bias": not_yet("scalable softmax (SSMax) attention"),
    # ---- checkpoints, run, distributed ------------------------------------------------------
    "resume_from_checkpoint": used(LOOP, f"{_LOOP}::test_resume_gives_the_same_losses"),
    "auto_resume_from_checkpoints": used(
        LOOP, f"{_LOOP}::test_auto_resume_on_packed_bins_gives_the_same_losses"
    ),
    "local_rank": no_effect("set by the launcher; axr reads the rank from the launcher's environment"),
    "world_size": no_effect("set by the launcher; axr reads it from the launcher's environment"),
    "device": no_effect("axr picks the device from the launcher's environment"),
    "special_tokens": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "tokens": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "fsdp": used(ENGINE, f"{_ENGINES}::test_fsdp_config_spellings_read_the_same"),
    "fsdp_config": used(ENGINE, f"{_ENGINES}::test_fsdp_config_spellings_read_the_same"),
    "fsdp_version": used(ENGINE, f"{_ENGINES}::test_fsdp_config_spellings_read_the_same"),
    "fsdp_final_state_dict_type": no_effect(
        "deprecated by Axolotl, which only warns and does not copy it; axr gathers the final model whole"
    ),
    "deepspeed": used(ENGINE, f"{_ENGINES}::test_deepspeed_auto_values_are_filled_from_the_axr_config"),
    "deepcompile": not_yet("DeepSpeed's deepcompile", 13),
    "ddp": no_effect("axr uses DDP whenever it is launched on several processes"),
    "ddp_timeout": used(ENGINE, f"{_ENGINES}::test_ddp_keys_reach_accelerate"),
    "ddp_bucket_cap_mb": used(ENGINE, f"{_ENGINES}::test_ddp_keys_reach_accelerate"),
    "ddp_broadcast_buffers": used(ENGINE, f"{_ENGINES}::test_ddp_keys_reach_accelerate"),
    "ddp_find_unused_parameters": used(ENGINE, f"{_ENGINES}::test_ddp_keys_reach_accelerate"),
    "dp_shard_size": not_yet("the size of data-parallel shard groups", 13),
    "dp_replicate_size": not_yet("the size of data-parallel replica groups", 13),
    "context_parallel_size": not_yet("split each sequence over several GPUs"),
    "heads_k_stride": not_yet("context parallelism: KV-head stride"),
    "ring_attn_func": not_yet("context parallelism: the ring-attention variant"),
    "tensor_parallel_size": not_yet("tensor parallelism"),
    "use_ray": not_yet("run training on Ray", 13),
    "ray_run_name": not_yet("run training on Ray", 13),
    "ray_num_workers": not_yet("run training on Ray", 13),
    "resources_per_worker": not_yet("run training on Ray", 13),
    "torchdistx_path": no_effect("only used by the adamw_anyprecision optimizer, which axr does not offer"),
    "debug": no_effect("Axolotl 2024's debug output; axr has the --debug flag"),
    "seed": used(LOOP, f"{_EFFECTS}::test_preprocess_option_keys"),
    "strict": no_effect("axr lets command-line overrides set any key"),
    "axolotl_config_path": no_effect(_INTERNAL),
    # ---- preference training ----------------------------------------------------------------
    "rl_beta": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "orpo_alpha": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "simpo_gamma": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "cpo_alpha": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "kto_desirable_weight": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "kto_undesirable_weight": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "dpo_loss_type": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "dpo_loss_weights": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "dpo_use_weighting": not_yet("DPO example weighting", 16),
    "dpo_label_smoothing": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "dpo_use_liger_kernel": no_effect(_GPU_KERNEL),
    "dpo_padding_free": not_yet("padding-free DPO batches", 16),
    "precompute_ref_log_probs": used(
        "axr.train.preference.Reference.precompute",
        "tests/train/test_preference_training.py::test_precomputed_reference_gives_the_same_losses",
    ),
    "dpo_use_logits_to_keep": not_yet("removed from Axolotl (DPO logits_to_keep)", 16),
    "dpo_generate_during_eval": not_yet("removed from Axolotl (DPO generation at evaluation)", 16),
    "dpo_norm_loss": not_yet("removed from Axolotl (normalised DPO loss)", 16),
    "rpo_alpha": used(
        "axr.train.preference.method_of",
        "tests/train/test_preference_training.py::test_method_keys_reach_the_loss",
    ),
    "max_prompt_len": not_yet("cap prompt length in preference training", 16),
    "reward_model": not_yet("train a reward model"),
    "process_reward_model": not_yet("train a process reward model"),
    "center_rewards_coefficient": not_yet("centre reward-model outputs"),
    "trl": not_yet("settings of TRL's RL trainers (GRPO, ...)", 16),
    "vllm": not_yet("a vLLM server that generates for RL training"),
    "ebft": not_yet("energy-based fine-tuning"),
    # ---- plugins and their keys -------------------------------------------------------------
    "plugins": used("config.plugins.plugin_problems_and_notes", f"{_EFFECTS}::test_plugins"),
    "cut_cross_entropy": no_effect(
        "axr computes the loss only on trained positions; the fused kernel gives the same loss"
    ),
    "liger_rope": no_effect(_GPU_KERNEL),
    "liger_rms_norm": no_effect(_GPU_KERNEL),
    "liger_rms_norm_gated": no_effect(_GPU_KERNEL),
    "liger_layer_norm": no_effect(_GPU_KERNEL),
    "liger_glu_activation": no_effect(_GPU_KERNEL),
    "liger_cross_entropy": no_effect(_GPU_KERNEL),
    "liger_fused_linear_cross_entropy": no_effect(_GPU_KERNEL),
    "liger_use_token_scaling": not_yet("scale each token's loss by its predicted probability"),
    "expert_backend": no_effect(_GPU_KERNEL),
    "use_scattermoe": no_effect(_GPU_KERNEL),
    "use_sonicmoe": no_effect(_GPU_KERNEL),
    "nonexpert_quantization": not_yet("quantize the non-expert layers of an MoE model"),
    "moe_grouped_backend": no_effect(_GPU_KERNEL),
    "moe_dequant_chunk_size": not_yet("4-bit MoE expert weights", 14),
    "moe_bnb_fast": not_yet("4-bit MoE expert weights", 14),
    "use_dsv4_kernels": no_effect(_GPU_KERNEL),
    "dsv4_fp8_nonexpert_mode": not_yet("DeepSeek-V4 FP8 weights"),
    "dsv4_fp8_lora_kernel": no_effect(_GPU_KERNEL),
    "dsv4_shared_mlp_lora_kernel": no_effect(_GPU_KERNEL),
    "dsv4_bf16_all": not_yet("cast DeepSeek-V4's fp32 leftovers to the compute dtype"),
    "dsv4_fp4_grouped_mode": not_yet("DeepSeek-V4 FP4 expert weights"),
    "use_glm_dsa_kernels": no_effect(_GPU_KERNEL),
    "gemma4_fp8_nonexpert": not_yet("Gemma 4: FP8 non-expert layers"),
    "gemma4_nf4_nonexpert": not_yet("Gemma 4: NF4 non-expert layers", 14),
    "nvfp4_merge_aware": not_yet("merge-aware NVFP4 LoRA"),
    "nvfp4_merge_aware_start_step": not_yet("merge-aware NVFP4 LoRA"),
    "expert_parallel_size": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "expert_parallel_backend": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "expert_parallel_num_nvl_bytes": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "expert_parallel_num_rdma_bytes": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "expert_parallel_token_capacity": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "expert_parallel_fallback_on_unsupported": not_yet("spread MoE experts over GPUs (expert parallelism)"),
    "use_swanlab": not_yet("log to SwanLab"),
    "swanlab_project": not_yet("log to SwanLab"),
    "swanlab_experiment_name": not_yet("log to SwanLab"),
    "swanlab_description": not_yet("log to SwanLab"),
    "swanlab_mode": not_yet("log to SwanLab"),
    "swanlab_workspace": not_yet("log to SwanLab"),
    "swanlab_api_key": not_yet("log to SwanLab"),
    "swanlab_log_model": not_yet("log to SwanLab"),
    "swanlab_web_host": not_yet("log to SwanLab"),
    "swanlab_api_host": not_yet("log to SwanLab"),
    "swanlab_lark_webhook_url": not_yet("log to SwanLab"),
    "swanlab_lark_secret": not_yet("log to SwanLab"),
    "swanlab_log_completions": not_yet("log to SwanLab"),
    "swanlab_completion_log_interval": not_yet("log to SwanLab"),
    "swanlab_completion_max_buffer": not_yet("log to SwanLab"),
    "diffusion": not_yet("diffusion language-model training"),
    "llmcompressor": not_yet("compress the model with LLM Compressor"),
    "spectrum_top_fraction": not_yet("Spectrum: train only the layers with the best signal-to-noise ratio"),
    "spectrum_model_name": not_yet("Spectrum: train only the layers with the best signal-to-noise ratio"),
    "lm_eval_tasks": not_yet("run lm-eval-harness tasks"),
    "lm_eval_batch_size": not_yet("run lm-eval-harness tasks"),
    "lm_eval_post_train": not_yet("run lm-eval-harness tasks"),
    "lm_eval_model": not_yet("run lm-eval-harness tasks"),
    "grokfast_alpha": not_yet("Grokfast gradient filtering"),
    "grokfast_lamb": not_yet("Grokfast gradient filtering"),
    "kd_trainer": not_yet("knowledge distillation from a teacher"),
    "kd_ce_alpha": not_yet("knowledge distillation from a teacher"),
    "kd_alpha": not_yet("knowledge distillation from a teacher"),
    "kd_temperature": not_yet("knowledge distillation from a teacher"),
    "kd_beta": not_yet("knowledge distillation from a teacher"),
    "kd_normalize_topk": not_yet("knowledge distillation from a teacher"),
    "kd_online_server_base_url": not_yet("knowledge distillation from a teacher"),
    "kd_online_topk": not_yet("knowledge distillation from a teacher"),
    "kd_online_server": not_yet("knowledge distillation from a teacher"),
    "kd_online_timeout": not_yet("knowledge distillation from a teacher"),
    "kd_temperature_min": not_yet("knowledge distillation from a teacher"),
    "dense_mixer": not_yet("DenseMixer training of MoE routers"),
    "mora": not_yet("MoRA adapters"),
    "hatchery": not_yet("remote training on Tinker/Hatchery"),
    "nemo_gym_enabled": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_dir": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_auto_clone": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_config_paths": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_head_port": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_server_timeout": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_verify_timeout": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_run_timeout": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_datasets": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_auto_start": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_model_name": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_multi_turn": not_yet("NeMo Gym environment rewards"),
    "nemo_gym_max_turns": not_yet("NeMo Gym environment rewards"),
    # ---- keys Axolotl's examples carry but Axolotl does not know ----------------------------
    "torch_dtype": no_effect("derived from bf16/fp16 in Axolotl; a config value is not kept there either"),
    # ---- axr-only ---------------------------------------------------------------------------
    "on_bad_row": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "excess_length_strategy": used(PREPROCESS, f"{_EFFECTS}::test_preprocess_option_keys"),
    "special_tokens_in_text": used(
        "data.preprocess.options_from_config → rust/axr-core/src/pipeline.rs",
        "tests/chat/test_doctor.py::test_findings_on_each_dataset_type_are_counted_over_the_whole_corpus",
    ),
    "packing_strategy": used("train.batches.build_plan", f"{_EFFECTS}::test_loop_keys"),
    "chat_template_limits": used(
        "data.preprocess._dataset_options → rust/axr-core/src/template/render.rs",
        "tests/data/test_hostile_inputs.py::test_chat_template_limits_are_configurable_per_row",
    ),
}

DATASET_ENTRY: dict[str, Entry] = {
    "path": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "type": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "ds_type": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "data_files": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "shards": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "shards_idx": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "preprocess_shards": no_effect(
        "the native pipeline tokenizes in bounded memory without sequential chunks"
    ),
    "name": used(HUB, "tests/hub/test_hub_datasets.py::test_a_named_subset_of_parquet_files"),
    "split": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "train_on_split": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "revision": used(
        HUB, "tests/hub/test_hub_datasets.py::test_a_new_revision_rebuilds_and_the_same_one_reuses"
    ),
    "trust_remote_code": not_yet("run a hub dataset's loading script", 15),
    "input_transform": not_yet("the transform of `type: messages` datasets"),
    "input_format": no_effect("declared by Axolotl but only part of its cache key"),
    "field": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "conversation": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_human": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_model": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "roles": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "strict": not_yet("sharegpt: use turns as given, without normalising role/value keys"),
    "field_messages": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "message_property_mappings": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "message_field_role": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "message_field_content": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "message_field_training": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "message_field_training_detail": not_yet("chat_template: train character spans given per message"),
    "roles_to_train": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "train_on_eos": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "train_on_eot": not_yet("chat_template: choose which end-of-turn tokens are trained, apart from EOS"),
    "chat_template": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "chat_template_jinja": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "drop_system_message": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_tools": not_yet("chat_template: pass tool definitions from this column to the template"),
    "field_thinking": not_yet("chat_template: read reasoning content from this message key"),
    "template_thinking_key": not_yet("the message key the chat template reads reasoning from"),
    "split_thinking": not_yet("chat_template: split <think> blocks out of the content"),
    "field_system": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_instruction": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_input": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "field_output": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "system_prompt": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "system_format": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "format": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "no_input_format": used(DATASET_FORMAT, f"{_EFFECTS}::test_dataset_entry_keys"),
    "dataset_shard_num": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "dataset_shard_idx": used(PREPROCESS, f"{_EFFECTS}::test_dataset_entry_keys"),
    "logprobs_field": not_yet("distillation from teacher log-probabilities in this column"),
    "temperature": not_yet("the temperature of the teacher's log-probabilities"),
    "field_chosen": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "field_rejected": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "field_prompt": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "prompt_format": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "chosen_format": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "rejected_format": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "field_completion": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "field_label": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "completion_format": used(
        "axr.format.preference (Rust)",
        "tests/train/test_preference_training.py::test_dataset_keys_reach_the_formatter",
    ),
    "step_separator": not_yet("process-reward data: the text joining reasoning steps"),
    "max_completion_length": not_yet("process-reward data: cap on completion tokens"),
    "train_on_last_step_only": not_yet("process-reward data: label only the final step"),
    "length": not_yet("synthetic data: rows to generate"),
    "sequence_length": not_yet("synthetic data: tokens per generated row"),
    "min_input_id": not_yet("synthetic data: smallest random token id"),
    "max_input_id": not_yet("synthetic data: largest random token id"),
    "seed": not_yet("synthetic data: seed of the generator"),
    "text_column": used(
        "data.preprocess.options_from_config (pretraining entries → completion datasets)",
        "tests/data/test_chunking.py::test_pretraining_dataset_trains_end_to_end",
    ),
    "skip": not_yet("pre-training data: skip this many rows", 11),
}


@dataclass(frozen=True)
class ValueRule:
    """Values of a used key that ask for something axr does not do yet."""

    key: str
    matches: Callable[[Any], bool]
    would: str
    issue: int | None = None


def _is_gguf(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(".gguf")


VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule(
        "save_strategy",
        lambda value: value == "best",
        'save_strategy "best": keep the checkpoint with the best metric',
    ),
    ValueRule(
        "gradient_checkpointing",
        lambda value: value == "unsloth",
        'gradient_checkpointing "unsloth": offload checkpointed activations',
    ),
    # base_model and tokenizer_config may name a GGUF file (models.gguf converts it); the config alone
    # is not read from one.
    ValueRule("base_model_config", _is_gguf, "a GGUF file as the model config (set base_model to it)"),
)

ALIASES: dict[str, str] = {
    "model_config": "overrides_of_model_config",
    "model_kwargs": "overrides_of_model_kwargs",
    "type_of_model": "model_type",
    "model_revision": "revision_of_model",
    "dataset_processes": "dataset_num_proc",
    "evaluation_strategy": "eval_strategy",
    "noisy_embedding_alpha": "neftune_noise_alpha",
    "dpo_beta": "rl_beta",
    "pretrain_multipack_buffer_size": "streaming_multipack_buffer_size",
    "sequence_parallel_degree": "context_parallel_size",
    "liger_swiglu": "liger_glu_activation",
}
"""Old (or alternative) spellings → the key they mean. Both set is an error."""

ATTENTION_FLAGS: dict[str, str] = {
    "xformers_attention": "xformers",
    "sage_attention": "sage",
    "flex_attention": "flex_attention",
    "flash_attention": "flash_attention_2",
    "sdp_attention": "sdpa",
    "eager_attention": "eager",
}
"""Axolotl's attention flags, in the order Axolotl checks them → the attn_implementation they mean."""

FSDP_KEYS: tuple[str, ...] = (
    "fsdp_version",
    "offload_params",
    "cpu_offload_pin_memory",
    "state_dict_type",
    "final_state_dict_type",
    "auto_wrap_policy",
    "transformer_layer_cls_to_wrap",
    "min_num_params",
    "reshard_after_forward",
    "activation_checkpointing",
    "cpu_ram_efficient_loading",
    "sync_module_states",
    "use_orig_params",
    "mixed_precision_policy",
    "sharding_strategy",
    "limit_all_gathers",
    "backward_prefetch",
    "forward_prefetch",
)
"""``fsdp_config`` keys by their FSDP2 names; ``fsdp_<name>`` (FSDP1) is accepted for each."""


def is_set(value: Any) -> bool:
    """Whether a value asks for something (see the module docstring)."""
    return value is not None and value is not False and value != "" and value != [] and value != {}


def entry_for(key: str, *, dataset: bool = False) -> Entry | None:
    return (DATASET_ENTRY if dataset else TOP_LEVEL).get(key)


def not_yet_line(key: str, entry: NotYet) -> str:
    issue = f" (issue {entry.issue})" if entry.issue is not None else ""
    return f"{key}: not supported yet: {entry.would}{issue}"


def no_effect_line(key: str, entry: NoEffect) -> str:
    return f"{key}: has no effect in axr: {entry.why}"


def review(
    data: Mapping[str, Any], *, prefix: str = "", dataset: bool = False
) -> tuple[list[str], list[str]]:
    """(problems, notes) for the keys of one table: not-yet keys that are set, no-effect notes."""
    problems: list[str] = []
    notes: list[str] = []
    for key, value in data.items():
        entry = entry_for(key, dataset=dataset)
        if entry is None or not is_set(value):
            continue
        if isinstance(entry, NotYet):
            problems.append(not_yet_line(prefix + key, entry))
        elif isinstance(entry, NoEffect):
            notes.append(no_effect_line(prefix + key, entry))
    if not dataset:
        for rule in VALUE_RULES:
            if rule.key in data and rule.matches(data[rule.key]):
                problems.append(not_yet_line(prefix + rule.key, NotYet(rule.would, rule.issue)))
    return problems, notes


def explain(key: str, entry: Entry) -> str:
    """One line of ``axr validate --explain``."""
    if isinstance(entry, Used):
        return f"{key}: used by {entry.by}"
    if isinstance(entry, NotYet):
        return not_yet_line(key, entry)
    return no_effect_line(key, entry)


def counts() -> dict[str, int]:
    """How many keys (top level and dataset entry) are in each set."""
    result = {"used": 0, "not yet supported": 0, "no effect": 0}
    for table in (TOP_LEVEL, DATASET_ENTRY):
        for entry in table.values():
            result[kind_of(entry)] += 1
    return result
