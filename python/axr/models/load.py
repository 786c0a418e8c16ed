"""Load the tokenizer and the causal LM named by the config, in the right dtype, with embeddings sized.

The base model is a local folder or a hub id; with no network a hub id fails with
one clear error naming ``base_model``. Tokens added by the config (``tokens``,
``special_tokens``) are added here exactly as preprocessing added them, and the
embeddings are resized to match, so ids in the prepared store index real rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.hub import model_source
from axr.models.quantization import quantized_load_kwargs
from axr.train.loss import router_loss_function
from axr.train.packing_guard import refuse_unsafe_packing


@dataclass(frozen=True)
class Precision:
    """How weights are stored and how the forward pass runs.

    ``weights`` is the torch dtype name the model is loaded in; ``mixed`` is
    accelerate's ``mixed_precision`` (``"no"``, ``"bf16"``, ``"fp16"``).
    """

    weights: str
    mixed: str


def resolve_precision(cfg: Any, device: str, *, adapter: bool) -> Precision:
    """Weight dtype and autocast mode from the config's precision keys and the device.

    The mode (bf16/fp16/fp32) follows ``axr.config.resolve_precision`` (Axolotl's rule for
    ``bf16 = "auto"``). With an adapter the frozen base weights are stored in that half dtype
    (only the adapter trains); a full fine-tune keeps fp32 weights under autocast, unless
    ``bf16 = "full"``, ``bfloat16`` or ``float16`` ask for half weights throughout.
    """
    from axr.config import resolve_precision as resolve_mode

    if cfg.bfloat16 or cfg.bf16 == "full":
        return Precision("bfloat16", "no")
    if cfg.float16:
        return Precision("float16", "no")
    mode = resolve_mode(cfg, device)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[mode]
    weights = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}[mixed] if adapter else "float32"
    return Precision(weights, mixed)


# Pickled weights (pytorch_model.bin, adapter_model.bin) are read only when this is "1": unpickling
# can run code, and a model downloaded or shared by others is not to be trusted that far.
PICKLE_OPT_IN = "AXR_ALLOW_PICKLE_WEIGHTS"


def pickle_weights_allowed() -> bool:
    return os.environ.get(PICKLE_OPT_IN) == "1"


def refuse_pickle_weights(folder: str | Path, key: str, safetensors_glob: str) -> None:
    """A local weights folder with only pickled weights is an error unless the user opted in."""
    path = Path(folder).expanduser()
    if pickle_weights_allowed() or not path.is_dir() or any(path.glob(safetensors_glob)):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise ConfigError(
            f"{key}: {path / pickles[0]} holds pickled weights and {path} has no safetensors weights; "
            "loading a pickle can run code it names, so axr reads safetensors only. Convert the weights "
            f"to safetensors, or set {PICKLE_OPT_IN}=1 if you trust where the file came from"
        )


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def _from_pretrained(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn "not found / no network" into a ConfigError naming ``key``."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except ValueError as error:
        # transformers refuses a model or tokenizer that ships its own Python code unless trusted.
        if "trust_remote_code" not in str(error) or kwargs.get("trust_remote_code"):
            raise
        raise ConfigError(
            f"trust_remote_code: {name!r} ({key}) needs Python code that comes with it to load, and "
            "axr runs such code only with trust_remote_code = true. Set it only if you trust where "
            f"{name!r} came from (read its .py files first)"
        ) from None
    except OSError as error:
        where = "local folder" if _is_local(name) else "hub id (no local folder has that name)"
        raise ConfigError(
            f"{key}: cannot load {name!r} as a {where}: {error}. Give a local folder with config.json and "
            "weights, or a hub id when the network is reachable"
        ) from error


def load_tokenizer(cfg: Any, *, store_tokenizer: str | Path | None = None) -> tuple[Any, bool]:
    """The training tokenizer, and whether its vocabulary is larger than the base tokenizer's.

    ``store_tokenizer`` is the tokenizer a prepared store saved (the config's ``tokens`` and
    ``special_tokens`` already added): its ids are the ones in the store, so it wins. Without
    one (in-memory data) the config's tokens are added here the same way. When the
    vocabulary grew, the embeddings must grow and be trained.
    """
    import transformers

    loader = getattr(transformers, cfg.tokenizer_type, None)
    if loader is None:
        raise ConfigError(f"tokenizer_type: transformers has no class {cfg.tokenizer_type!r}")
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "use_fast": cfg.tokenizer_use_fast}
    if cfg.tokenizer_legacy is not None:
        kwargs["legacy"] = cfg.tokenizer_legacy
    key = "tokenizer_config" if cfg.tokenizer_config else "base_model"
    base = _from_pretrained(loader, model_source(cfg, key), key, **kwargs)
    base_size = len(base)
    if store_tokenizer is not None and Path(store_tokenizer).is_dir():
        tokenizer = _from_pretrained(loader, str(store_tokenizer), "dataset_prepared_path", **kwargs)
    else:
        tokenizer = base
        special = cfg.special_tokens.model_dump(exclude_none=True) if cfg.special_tokens else {}
        if special:
            tokenizer.add_special_tokens(special)
        if cfg.tokens:
            tokenizer.add_tokens(list(cfg.tokens))
    grew = len(tokenizer) > base_size
    if tokenizer.pad_token is None:
        # Padding positions are never attended to by a sample nor trained, so any id works; EOS is the
        # convention, and it adds no row to the embeddings.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, grew


def model_config_of(cfg: Any) -> Any:
    """The model's transformers config with ``overrides_of_model_config`` applied (cheap: one JSON file)."""
    import transformers

    key = "base_model_config" if cfg.base_model_config else "base_model"
    model_config = _from_pretrained(
        transformers.AutoConfig, model_source(cfg, key), key, trust_remote_code=cfg.trust_remote_code
    )
    for name, value in (cfg.overrides_of_model_config or {}).items():
        if not hasattr(model_config, name):
            raise ConfigError(
                f"overrides_of_model_config.{name}: the model config "
                f"({type(model_config).__name__}) has no such key"
            )
        setattr(model_config, name, value)
    return model_config


def _rope_sets(model_config: Any) -> list[dict[str, Any]]:
    """The rope scaling settings of a config: transformers 5's ``rope_parameters`` (one dict, or one
    per attention kind) or the older ``rope_scaling``."""
    found = getattr(model_config, "rope_parameters", None) or getattr(model_config, "rope_scaling", None)
    if not isinstance(found, dict):
        return []
    if found and all(isinstance(value, dict) for value in found.values()):
        return list(found.values())
    return [found]


def context_length(model_config: Any) -> int | None:
    """Positions the model is built for, rope scaling included; None when the config does not say.

    ``linear``/``dynamic`` scaling stretch ``max_position_embeddings`` by ``factor``; ``yarn`` and
    ``llama3`` stretch ``original_max_position_embeddings`` (configs of those usually give the
    stretched length as ``max_position_embeddings`` already, so the larger of the two counts).
    """
    base = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(base, int) or isinstance(base, bool) or base <= 0:
        return None
    limit = base
    for rope in _rope_sets(model_config):
        kind = rope.get("rope_type") or rope.get("type")
        factor = rope.get("factor")
        if not isinstance(factor, int | float) or factor <= 1:
            continue
        if kind in ("linear", "dynamic"):
            limit = max(limit, int(base * factor))
        elif kind in ("yarn", "llama3"):
            original = rope.get("original_max_position_embeddings") or base
            limit = max(limit, int(original * factor))
    return limit


def check_sequence_len(cfg: Any, model_config: Any | None = None) -> None:
    """ConfigError when ``sequence_len`` is longer than the model's context (read before any heavy work)."""
    model_config = model_config if model_config is not None else model_config_of(cfg)
    limit = context_length(model_config)
    if limit is not None and cfg.sequence_len > limit:
        base = model_config.max_position_embeddings
        why = (
            f"max_position_embeddings {base} stretched by rope scaling"
            if limit != base
            else ("its max_position_embeddings")
        )
        raise ConfigError(
            f"sequence_len: {cfg.sequence_len} is longer than the {limit} positions {cfg.base_model!r} "
            f"is built for ({why}). Lower sequence_len, or extend the context with "
            'overrides_of_model_config, e.g. rope_scaling = {rope_type = "linear", factor = 2}'
        )


def load_model(cfg: Any, tokenizer: Any, *, precision: Precision, attention: str) -> Any:
    """The causal LM of ``base_model`` with config overrides, dtype and embeddings sized to the tokenizer."""
    import torch
    import transformers

    model_config = model_config_of(cfg)
    model_config.use_cache = False
    refuse_unsafe_packing(cfg, model_config)
    if cfg.output_router_logits is not None:
        if cfg.output_router_logits and getattr(model_config, "router_aux_loss_coef", None) is None:
            raise ConfigError(
                f"output_router_logits: {model_config.model_type} has no router auxiliary loss in "
                "transformers (no router_aux_loss_coef in its config); remove the key"
            )
        model_config.output_router_logits = cfg.output_router_logits

    loader = getattr(transformers, cfg.model_type, None)
    if loader is None:
        raise ConfigError(f"model_type: transformers has no class {cfg.model_type!r}")
    kwargs: dict[str, Any] = {
        "config": model_config,
        "dtype": getattr(torch, precision.weights),
        "attn_implementation": attention,
        "trust_remote_code": cfg.trust_remote_code,
    }
    # Under accelerate every process places its own copy; device_map is for single-process loading
    # (e.g. sharding a big model over GPUs or offloading).
    if cfg.device_map is not None:
        kwargs["device_map"] = cfg.device_map
    max_memory = cfg.max_memory
    if max_memory is None and cfg.gpu_memory_limit is not None and torch.cuda.is_available():
        limit = cfg.gpu_memory_limit
        limit = f"{limit}GiB" if isinstance(limit, int) else limit
        max_memory = dict.fromkeys(range(torch.cuda.device_count()), limit)
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    kwargs.update(quantized_load_kwargs(cfg, precision))
    # A hub id → its cached snapshot folder; a GGUF file → its converted folder.
    base_model = model_source(cfg, "base_model", weights=True)
    refuse_pickle_weights(base_model, "base_model", "*.safetensors")
    if not pickle_weights_allowed():
        kwargs["use_safetensors"] = True
    try:
        model = _from_pretrained(loader, base_model, "base_model", **kwargs)
    except ValueError as error:
        if "attention implementation" not in str(error):
            raise
        raise ConfigError(
            f"attn_implementation: {model_config.model_type} cannot run {attention} attention in "
            f'transformers: {error}. Choose another backend: attn_implementation = "eager", or '
            '"flash_attention_2" on CUDA'
        ) from error
    if cfg.output_router_logits and router_loss_function(model) is None:
        raise ConfigError(
            f"output_router_logits: {type(model).__name__} has no load_balancing_loss_func in transformers; "
            "remove the key"
        )

    vocabulary = len(tokenizer)
    if model.get_input_embeddings().num_embeddings < vocabulary:
        multiple = 32 if cfg.resize_token_embeddings_to_32x else None
        model.resize_token_embeddings(vocabulary, pad_to_multiple_of=multiple)
    # "unsloth" (offloaded checkpoints) is refused at validation by the key ledger.
    if cfg.gradient_checkpointing:
        checkpoint_kwargs = cfg.gradient_checkpointing_kwargs or {"use_reentrant": False}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
    return model
