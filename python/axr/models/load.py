"""Load the tokenizer and the causal LM named by the config, in the right dtype, with embeddings sized.

The base model is a local folder or a hub id; with no network a hub id fails with
one clear error naming ``base_model``. Tokens added by the config (``tokens``,
``special_tokens``) are added here exactly as preprocessing added them, and the
embeddings are resized to match, so ids in the prepared store index real rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.models.gguf import model_dir, tokenizer_source


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

    if getattr(cfg, "bfloat16", False) or cfg.bf16 == "full":
        return Precision("bfloat16", "no")
    if getattr(cfg, "float16", False):
        return Precision("float16", "no")
    mode = resolve_mode(cfg, device)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[mode]
    weights = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}[mixed] if adapter else "float32"
    return Precision(weights, mixed)


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def _from_pretrained(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn "not found / no network" into a ConfigError naming ``key``."""
    try:
        return loader.from_pretrained(name, **kwargs)
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

    name = tokenizer_source(cfg)
    loader = getattr(transformers, cfg.tokenizer_type, None)
    if loader is None:
        raise ConfigError(f"tokenizer_type: transformers has no class {cfg.tokenizer_type!r}")
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "use_fast": cfg.tokenizer_use_fast}
    if cfg.tokenizer_legacy is not None:
        kwargs["legacy"] = cfg.tokenizer_legacy
    key = "tokenizer_config" if cfg.tokenizer_config else "base_model"
    base = _from_pretrained(loader, name, key, **kwargs)
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


def load_model(cfg: Any, tokenizer: Any, *, precision: Precision, attention: str) -> Any:
    """The causal LM of ``base_model`` with config overrides, dtype and embeddings sized to the tokenizer."""
    import torch
    import transformers

    source = model_dir(cfg.base_model, gguf_file=cfg.gguf_file)  # a GGUF file: its converted folder
    config_name = cfg.base_model_config or source
    model_config = _from_pretrained(
        transformers.AutoConfig, config_name, "base_model", trust_remote_code=cfg.trust_remote_code
    )
    for key, value in (cfg.overrides_of_model_config or {}).items():
        if not hasattr(model_config, key):
            raise ConfigError(
                f"overrides_of_model_config.{key}: the model config "
                f"({type(model_config).__name__}) has no such key"
            )
        setattr(model_config, key, value)
    model_config.use_cache = False

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
    model = _from_pretrained(loader, source, "base_model", **kwargs)

    vocabulary = len(tokenizer)
    if model.get_input_embeddings().num_embeddings < vocabulary:
        multiple = 32 if cfg.resize_token_embeddings_to_32x else None
        model.resize_token_embeddings(vocabulary, pad_to_multiple_of=multiple)
    checkpointing = getattr(cfg, "gradient_checkpointing", False)
    if checkpointing in ("unsloth", "offload"):
        raise ConfigError(
            f"gradient_checkpointing: {checkpointing!r} (activation offloading) is not supported; use true"
        )
    if checkpointing:
        checkpoint_kwargs = cfg.gradient_checkpointing_kwargs or {"use_reentrant": False}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
    return model
