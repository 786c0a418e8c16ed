"""The distributed engine of a run: plain/DDP, DeepSpeed ZeRO or FSDP, built through accelerate.

``build_accelerator`` reads the config's engine keys (``deepspeed``, ``fsdp``/``fsdp_config``/
``fsdp_version``, ``ddp_*``) and returns the Accelerator with the matching plugin. Whatever the
engine, accelerate divides the loss given to ``backward`` by ``gradient_accumulation_steps`` and
the engine averages gradients over ranks; the loop undoes both (see ``loop.py``), so a step's
gradient is the sum over its tokens divided by its trainable tokens under every engine.

Two facts of accelerate this module works around, both silent otherwise:

- on CPU, accelerate never enters FSDP (its state stays MULTI_CPU, each rank trains a whole
  replica); the state is set to FSDP here when FSDP was asked for, and the loop's callers
  can check ``Engine.kind`` and the DTensor parameters;
- DeepSpeed on CPU needs the gloo backend named explicitly.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from axr.config import AxrConfig
from axr.errors import ConfigError
from axr.models.load import Precision

# Optimizers that DeepSpeed's CPU Adam (optimizer offload) computes the same way (AdamW, with the
# groups' betas, eps and weight decay).
DEEPSPEED_CPU_ADAM = ("adamw_torch", "adamw_hf", "adamw_torch_fused")
# The DeepSpeed configs axr ships (Axolotl's set), by file stem.
SHIPPED_DEEPSPEED = ("zero1", "zero2", "zero3", "zero3_bf16", "zero3_bf16_cpuoffload_all")


@dataclass(frozen=True)
class Engine:
    """Which engine runs the step: ``ddp`` also covers a single process."""

    kind: Literal["ddp", "deepspeed", "fsdp"]
    zero_stage: int | None = None
    fsdp_version: int | None = None
    sharded_checkpoints: bool = False
    """FSDP with ``state_dict_type = SHARDED_STATE_DICT``: each rank saves its shards (``fsdp_state``)."""


def shipped_deepspeed_config(name: str) -> Path:
    """The shipped config named ``name`` (``zero2``, ``deepspeed_configs/zero2.json``, ...)."""
    stem = Path(name).stem
    if stem not in SHIPPED_DEEPSPEED:
        raise ConfigError(
            f"deepspeed: {name} is neither a file nor one of the shipped configs "
            f"({', '.join(SHIPPED_DEEPSPEED)})"
        )
    with resources.as_file(resources.files("axr") / "deepspeed_configs" / f"{stem}.json") as path:
        return Path(path)


def read_deepspeed_config(value: str | dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config of the ``deepspeed`` key: inline, a JSON file, or a shipped config's name."""
    if isinstance(value, dict):
        return json.loads(json.dumps(value))  # a deep copy: filling "auto" must not edit the config
    path = Path(value).expanduser()
    if not path.is_file():
        path = shipped_deepspeed_config(value)
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"deepspeed: {path} is not a readable JSON file ({error})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"deepspeed: {path} holds a JSON {type(loaded).__name__}, not an object")
    return loaded


def _fill(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` ("a.b") when missing or "auto"; an explicit value that differs is an error."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    current = node.get(leaf, "auto")
    if current == "auto":
        node[leaf] = value
    elif current != value:
        raise ConfigError(
            f"deepspeed: {key} is {current!r} in the DeepSpeed config but the axr config implies {value!r}; "
            'set it to "auto" or make the two agree'
        )


def fill_deepspeed_config(cfg: AxrConfig, config: dict[str, Any], precision: Precision) -> dict[str, Any]:
    """Fill the "auto" values axr knows; accelerate fills train_batch_size and the hidden-size ones."""
    for section in ("optimizer", "scheduler"):
        if section in config:
            raise ConfigError(
                f'deepspeed: the DeepSpeed config has an "{section}" section; axr builds the {section} from '
                f"its own keys ({'optimizer, learning_rate' if section == 'optimizer' else 'lr_scheduler'}), "
                "so remove that section"
            )
    _fill(config, "train_micro_batch_size_per_gpu", cfg.micro_batch_size)
    _fill(config, "gradient_accumulation_steps", cfg.gradient_accumulation_steps)
    _fill(config, "gradient_clipping", float(cfg.max_grad_norm))
    for name in ("bf16", "fp16"):
        block = config.get(name)
        if isinstance(block, dict):
            wanted = precision.mixed == name
            if block.get("enabled", "auto") == "auto":
                block["enabled"] = wanted
            elif bool(block["enabled"]) != wanted:
                raise ConfigError(
                    f"deepspeed: {name}.enabled is {block['enabled']} in the DeepSpeed config but the axr "
                    f"config trains in {precision.mixed if precision.mixed != 'no' else 'fp32'}; "
                    f'set {name} in the axr config (or "auto" in the DeepSpeed config)'
                )
    zero = config.setdefault("zero_optimization", {})
    offload = (zero.get("offload_optimizer") or {}).get("device", "none")
    keeps_optimizer = config.get("zero_force_ds_cpu_optimizer", True) is False
    if offload not in ("none", None) and not keeps_optimizer and cfg.optimizer not in DEEPSPEED_CPU_ADAM:
        # accelerate swaps the optimizer for DeepSpeed's CPU Adam (keeping lr and the groups' settings):
        # any other optimizer would silently become Adam.
        raise ConfigError(
            f"deepspeed: with zero_optimization.offload_optimizer, DeepSpeed runs its own CPU Adam in place "
            f"of the optimizer, so optimizer = {cfg.optimizer!r} would not be used; choose adamw_torch, or "
            'set "zero_force_ds_cpu_optimizer": false in the DeepSpeed config to step '
            f"{cfg.optimizer!r} on the CPU partitions"
        )
    checkpoints = cfg.save_strategy != "no" or cfg.resume_from_checkpoint or cfg.auto_resume_from_checkpoints
    if checkpoints and (precision.mixed == "fp16" or int(zero.get("stage", 0)) == 0):
        # Found before training rather than at the first save (axr.train.zero_state says why).
        what = "fp16 (the loss scaler's state is not saved)" if precision.mixed == "fp16" else "ZeRO stage 0"
        raise ConfigError(
            f"deepspeed: checkpoints under {what} are not supported yet; train in bf16 or fp32 with "
            'ZeRO stage 1, 2 or 3, or set save_strategy = "no" and do not resume'
        )
    if int(zero.get("stage", 0)) == 3:
        # The final model is saved whole (loadable by plain transformers): ZeRO-3 must gather it.
        gather = zero.get("stage3_gather_16bit_weights_on_model_save", "auto")
        if gather is False:
            raise ConfigError(
                "deepspeed: zero_optimization.stage3_gather_16bit_weights_on_model_save is false, but axr "
                "saves the final model whole; set it to true"
            )
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return config


def _fsdp_settings(cfg: AxrConfig) -> dict[str, Any]:
    """The ``fsdp_config`` keys that are set, by their FSDP2 names (the config loader renamed FSDP1's)."""
    if cfg.fsdp_config is None:
        return {}
    settings: dict[str, Any] = cfg.fsdp_config.model_dump(exclude_none=True)
    return settings


def fsdp_notes(cfg: AxrConfig, version: int) -> list[str]:
    """What ``fsdp_config`` asks that axr does another way, one line each (printed at start)."""
    settings = _fsdp_settings(cfg)
    notes = []
    if settings.get("final_state_dict_type") == "SHARDED_STATE_DICT":
        notes.append(
            "fsdp_config.final_state_dict_type = SHARDED_STATE_DICT has no effect in axr: the final "
            "model is always gathered whole, so plain transformers and PEFT load it"
        )
    if settings.get("use_orig_params") is False:
        notes.append(
            "fsdp_config.use_orig_params = false has no effect in axr: FSDP1 keeps the original "
            "parameters, which the optimizer's weight-decay groups and LoRA's frozen weights need"
            if version == 1
            else "fsdp_config.use_orig_params has no effect under FSDP2, which always keeps them"
        )
    return notes


def fsdp_version_of(cfg: AxrConfig) -> int | None:
    """1 or 2 when FSDP is asked for (``fsdp`` or ``fsdp_config``), else None."""
    if not cfg.fsdp and cfg.fsdp_config is None:
        return None
    settings = _fsdp_settings(cfg)
    nested, top = settings.get("fsdp_version"), cfg.fsdp_version
    if nested is not None and top is not None and nested != top:
        raise ConfigError(f"fsdp_version ({top}) and fsdp_config.fsdp_version ({nested}) disagree")
    return int(top or nested or 1)


def _fsdp_plugin(cfg: AxrConfig, version: int, device_type: str) -> Any:
    from accelerate import FullyShardedDataParallelPlugin

    settings = _fsdp_settings(cfg)
    for key in ("mixed_precision_policy", "cpu_offload_pin_memory"):
        if key in settings:
            raise ConfigError(f"fsdp_config.{key}: not supported yet (axr's precision keys set FSDP's)")
    for key in ("state_dict_type", "final_state_dict_type"):
        if settings.get(key) == "LOCAL_STATE_DICT":
            raise ConfigError(
                f"fsdp_config.{key}: LOCAL_STATE_DICT is not supported yet; use FULL_STATE_DICT or "
                "SHARDED_STATE_DICT"
            )
    if settings.get("state_dict_type") == "SHARDED_STATE_DICT" and version == 1:
        raise ConfigError(
            "fsdp_config.state_dict_type: SHARDED_STATE_DICT checkpoints under FSDP1 are not supported "
            "yet; use fsdp_version = 2 (same config keys) or FULL_STATE_DICT"
        )
    options = set(cfg.fsdp or [])
    unknown = options - {"full_shard", "shard_grad_op", "hybrid_shard", "no_shard", "auto_wrap", "offload"}
    if unknown:
        raise ConfigError(f"fsdp: unknown option(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {"fsdp_version": version}
    policy = settings.get("auto_wrap_policy")
    if policy is None and ("auto_wrap" in options or settings.get("transformer_layer_cls_to_wrap")):
        policy = "TRANSFORMER_BASED_WRAP"
    if policy is not None:
        kwargs["auto_wrap_policy"] = policy.lower()
    if settings.get("transformer_layer_cls_to_wrap"):
        kwargs["transformer_cls_names_to_wrap"] = [
            name.strip() for name in str(settings["transformer_layer_cls_to_wrap"]).split(",")
        ]
    if settings.get("min_num_params") is not None:
        kwargs["min_num_params"] = settings["min_num_params"]
    if settings.get("offload_params") or "offload" in options:
        kwargs["cpu_offload"] = True
    for key in ("cpu_ram_efficient_loading", "activation_checkpointing", "sync_module_states"):
        if settings.get(key) is not None:
            kwargs[key] = settings[key]
    if version == 2:
        if settings.get("reshard_after_forward") is not None:
            kwargs["reshard_after_forward"] = settings["reshard_after_forward"]
        elif "shard_grad_op" in options:
            kwargs["reshard_after_forward"] = False
        for key in ("sharding_strategy", "backward_prefetch", "forward_prefetch", "limit_all_gathers"):
            if settings.get(key) is not None:
                raise ConfigError(f"fsdp_config.{key} is an FSDP1 setting; FSDP2 has no such option")
    else:
        strategy = settings.get("sharding_strategy")
        if strategy is None:
            named = ("full_shard", "shard_grad_op", "hybrid_shard", "no_shard")
            strategy = next((option.upper() for option in named if option in options), None)
        if strategy is not None:
            kwargs["sharding_strategy"] = strategy
        for key in ("backward_prefetch", "forward_prefetch", "limit_all_gathers"):
            if settings.get(key) is not None:
                kwargs[key] = settings[key]
        # Always the original parameters: the optimizer is built on them before the engine wraps the
        # model (weight decay off biases and norms, LoRA's frozen weights left out), and accelerate
        # re-points it at FSDP1's parameters only when they keep their identity.
        kwargs["use_orig_params"] = True
    return FullyShardedDataParallelPlugin(**kwargs)


def engine_of(cfg: AxrConfig) -> Engine:
    """The engine the config asks for (no accelerate objects built)."""
    if cfg.deepspeed is not None:
        stage = read_deepspeed_config(cfg.deepspeed).get("zero_optimization", {}).get("stage", 0)
        return Engine("deepspeed", zero_stage=int(stage))
    version = fsdp_version_of(cfg)
    if version is not None:
        sharded = _fsdp_settings(cfg).get("state_dict_type") == "SHARDED_STATE_DICT"
        return Engine("fsdp", fsdp_version=version, sharded_checkpoints=sharded)
    return Engine("ddp")


def build_accelerator(
    cfg: AxrConfig, *, precision: Precision, trackers: list[str], output_dir: Path, device_type: str
) -> tuple[Any, Engine]:
    """The Accelerator of the run with its engine plugin, gradient accumulation and process-group options."""
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

    engine = engine_of(cfg)
    handlers: list[Any] = []
    group: dict[str, Any] = {}
    if cfg.ddp_timeout is not None:
        group["timeout"] = timedelta(seconds=cfg.ddp_timeout)
    if engine.kind == "deepspeed" and device_type == "cpu":
        group["backend"] = "gloo"  # without it every rank fails on DeepSpeed's batch size check
    if group:
        handlers.append(InitProcessGroupKwargs(**group))
    ddp: dict[str, Any] = {}
    if cfg.ddp_bucket_cap_mb is not None:
        ddp["bucket_cap_mb"] = cfg.ddp_bucket_cap_mb
    if cfg.ddp_broadcast_buffers is not None:
        ddp["broadcast_buffers"] = cfg.ddp_broadcast_buffers
    if cfg.ddp_find_unused_parameters is not None:
        ddp["find_unused_parameters"] = cfg.ddp_find_unused_parameters
    if ddp:
        handlers.append(DistributedDataParallelKwargs(**ddp))

    kwargs: dict[str, Any] = {}
    if engine.kind == "deepspeed":
        config = fill_deepspeed_config(cfg, read_deepspeed_config(cfg.deepspeed or {}), precision)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=config)
    fsdp_plugin = None
    if engine.kind == "fsdp":
        fsdp_plugin = _fsdp_plugin(cfg, engine.fsdp_version or 2, device_type)
        kwargs["fsdp_plugin"] = fsdp_plugin

    # accelerate keeps one process-wide state: a second train() in the same process (a notebook, the
    # tests) with other settings needs a fresh one. The process group (PartialState) stays.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=precision.mixed,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=trackers or None,
        project_dir=str(output_dir),
        # cpu=True on a machine without CUDA is what makes accelerate run CPU processes as a gloo group;
        # DeepSpeed must not get it (accelerate then skips the DeepSpeed engine).
        cpu=device_type == "cpu" and engine.kind != "deepspeed",
        kwargs_handlers=handlers,
        **kwargs,
    )
    left_out = accelerator.distributed_type != DistributedType.FSDP and accelerator.num_processes > 1
    if fsdp_plugin is not None and left_out:
        # accelerate left FSDP out (on CPU it always does): enter it explicitly. Every later
        # AcceleratorState() copies PartialState's fields over its own, so both are set.
        PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = fsdp_plugin
        if precision.mixed != "no":
            fsdp_plugin.set_mixed_precision(precision.mixed)
        if fsdp_plugin.fsdp_version == 1 and device_type == "cpu":
            # accelerate names the CPU device of every rank "cpu:0"; FSDP1 compares its `device_id`
            # with torch's current CPU device ("cpu") and refuses the mismatch. Both mean the same.
            import torch

            PartialState().device = torch.device("cpu")
            accelerator.state.device = torch.device("cpu")
    if engine.kind == "fsdp" and accelerator.is_main_process:
        for note in fsdp_notes(cfg, engine.fsdp_version or 2):
            print(f"axr: note: {note}", file=sys.stderr)
    if engine.kind == "deepspeed" and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            "deepspeed: accelerate did not start the DeepSpeed engine (distributed type "
            f"{accelerator.distributed_type}); launch with `accelerate launch` or `torchrun`"
        )
    return accelerator, engine
