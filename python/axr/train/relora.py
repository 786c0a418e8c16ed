"""ReLoRA (arXiv 2307.05695, as Axolotl runs it): every N steps the adapter is merged into the base
weights and started again, so a run of low-rank cycles adds up to a higher-rank update.

At each restart (after optimizer step k·N, before the next one):

1. every LoRA layer's delta (B·A·scaling) is added to its base weight; on a 4-bit base the sum is
   taken on a full-precision copy of the weight (kept on the CPU) and quantized again, as Axolotl
   merges into the unquantized weights and re-quantizes;
2. the adapter is initialised again as PEFT does (A Kaiming-uniform, B zero), so the model's
   function does not change at the restart;
3. the optimizer state of the adapter is pruned: ``relora_prune_method`` "magnitude" (default) keeps
   the values above the ``relora_prune_ratio`` quantile (default 0.9) of each state tensor,
   "random" zeroes that share at random, "reset" is "random" with a default ratio of 0.999;
4. the learning rate follows the jagged schedule (``axr.train.optim``): it drops and warms up again.

The restart draws its random numbers from a generator seeded by (seed, restart index), not from
the training stream: every rank makes the same restart, and a resumed run makes the same restarts
as an uninterrupted one. The merged base weights go into every checkpoint
(``relora_base.safetensors``), so resuming restores them; the final output is the whole model
with every cycle merged (``model.safetensors``, loadable by plain transformers), since an adapter
alone would miss the earlier cycles.

Keys: ``relora_steps`` (Axolotl's first spelling) or ``relora = true`` with ``jagged_restart_steps``;
``relora_warmup_steps``/``relora_anneal_steps`` are the older names of the jagged warmup/anneal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axr.errors import ConfigError

BASE_FILE = "relora_base.safetensors"
_PRUNE_DEFAULT = {"magnitude": 0.9, "random": 0.9, "reset": 0.999}


def _pick(cfg: Any, old: str, new: str) -> int | None:
    """The old ``relora_*`` key's value or Axolotl's ``jagged_restart_*`` one; both differing is an error."""
    first, second = getattr(cfg, old), getattr(cfg, new)
    if first is not None and second is not None and first != second:
        raise ConfigError(f"{old} ({first}) and {new} ({second}) name the same setting; keep one")
    value = first if first is not None else second
    return None if value is None else int(value)


def restart_schedule(cfg: Any) -> tuple[int, int | None, int | None] | None:
    """(every, warmup, anneal) of the jagged learning-rate restarts, or None without restarts."""
    every = _pick(cfg, "relora_steps", "jagged_restart_steps")
    if every is None:
        return None
    return (
        every,
        _pick(cfg, "relora_warmup_steps", "jagged_restart_warmup_steps"),
        _pick(cfg, "relora_anneal_steps", "jagged_restart_anneal_steps"),
    )


def relora_enabled(cfg: Any) -> bool:
    return bool(cfg.relora or cfg.relora_steps)


@dataclass
class ReLoRA:
    every: int
    prune_method: str
    prune_ratio: float
    cpu_offload: bool
    seed: int
    quantized: bool
    masters: dict[str, Any] = field(default_factory=dict)
    """Full-precision base weights of the 4-bit layers (CPU, float32), by module name."""
    restarts: int = 0

    # ---- restart -------------------------------------------------------------------------------

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 and step < total_steps

    def restart(self, model: Any, optimizer: Any, step: int) -> dict[str, Any]:
        """Merge, re-initialise and prune; returns what it did (logged, and read by the tests)."""
        import torch

        index = step // self.every
        layers = lora_layers(model)
        with torch.no_grad():
            for name, layer in layers.items():
                self._merge(name, layer)
            with _seeded(self.seed * 1_000_003 + index):
                for layer in layers.values():
                    for adapter in layer.active_adapters:
                        layer.reset_lora_parameters(adapter, True)
            zeroed, total = self._prune(model, optimizer, index)
        self.restarts = index
        return {
            "step": step,
            "relora_restart": index,
            "merged_layers": len(layers),
            "optimizer_state_pruned": zeroed / max(total, 1),
        }

    def _merge(self, name: str, layer: Any) -> None:
        (adapter,) = layer.active_adapters
        base = layer.get_base_layer()
        device = base.weight.device
        math_device = "cpu" if self.cpu_offload else device
        delta = layer.get_delta_weight(adapter).to(math_device)
        if not self.quantized or name not in self.masters:
            base.weight.data += delta.to(device=device, dtype=base.weight.dtype)
            return
        master = self.masters[name]
        master += delta.to(device=master.device, dtype=master.dtype)
        requantize(base, master)

    def _prune(self, model: Any, optimizer: Any, index: int) -> tuple[int, int]:
        import torch

        inner = getattr(optimizer, "optimizer", optimizer)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        zeroed = total = 0
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad or "lora_" not in name:
                continue
            for value in inner.state.get(parameter, {}).values():
                moment = torch.is_tensor(value) and value.is_floating_point()
                if not moment or value.shape != parameter.shape:
                    continue  # Adam's step count
                keep = self._keep_mask(value, generator)
                value.mul_(keep.to(value.dtype))
                zeroed += int((value == 0).sum())
                total += value.numel()
        return zeroed, total

    def _keep_mask(self, value: Any, generator: Any) -> Any:
        import torch

        if self.prune_method == "magnitude":
            magnitude = value.abs().flatten().float()
            count = int(self.prune_ratio * magnitude.numel())
            if count == 0:
                return torch.ones_like(value, dtype=torch.bool)
            # The count-th smallest magnitude: what torch.quantile gives, without its size limit.
            threshold = magnitude.kthvalue(count).values
            return value.abs().float() > threshold
        draws = torch.rand(value.shape, generator=generator).to(value.device)
        return draws > self.prune_ratio

    # ---- checkpoints and the final model --------------------------------------------------------

    def base_weights(self, model: Any) -> dict[str, Any]:
        """The merged base weights of every adapted layer (full precision for a 4-bit base)."""
        weights = {}
        for name, layer in lora_layers(model).items():
            master = self.masters.get(name)
            weights[f"{name}.weight"] = master if master is not None else layer.get_base_layer().weight
        return {key: value.detach().to("cpu").contiguous() for key, value in weights.items()}

    def save(self, model: Any, folder: Path) -> None:
        from safetensors.torch import save_file

        metadata = {"restarts": str(self.restarts)}
        save_file(self.base_weights(model), str(folder / BASE_FILE), metadata=metadata)

    def load(self, model: Any, folder: Path) -> None:
        """The merged base weights of a checkpoint (called before the engine wraps the model)."""
        import torch
        from safetensors import safe_open

        file = Path(folder) / BASE_FILE
        if not file.is_file():
            raise ConfigError(
                f"resume_from_checkpoint: {file} is missing: ReLoRA runs resume only from checkpoints "
                "written with ReLoRA (they hold the merged base weights)"
            )
        layers = lora_layers(model)
        with safe_open(str(file), framework="pt") as handle:
            names = {key.removesuffix(".weight") for key in handle.keys()}  # noqa: SIM118
            if names != set(layers):
                raise ConfigError(
                    f"resume_from_checkpoint: {file} holds the base weights of other layers than this "
                    "model's adapter targets; resume with the same adapter settings"
                )
            self.restarts = int((handle.metadata() or {}).get("restarts", 0))
            with torch.no_grad():
                for name, layer in layers.items():
                    weight = handle.get_tensor(f"{name}.weight")
                    base = layer.get_base_layer()
                    if name in self.masters:
                        self.masters[name].copy_(weight)
                        requantize(base, self.masters[name])
                    else:
                        base.weight.data.copy_(weight.to(base.weight.dtype))

    def save_merged(self, model: Any, folder: Path) -> None:
        """The final model: the base with every cycle merged, as plain transformers safetensors."""
        base = model.get_base_model()
        merged = self.merged_state_dict(model)
        if not self.quantized:
            base.save_pretrained(str(folder), state_dict=merged, safe_serialization=True)
            return
        # A 4-bit model saves its own quantized layers whatever state dict it is given: build the
        # plain model of the same config (without quantization) around the merged weights.
        import torch
        from transformers import AutoModelForCausalLM

        settings = base.config.to_dict()
        settings.pop("quantization_config", None)
        config = type(base.config).from_dict(settings)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config)
        result = plain.load_state_dict(merged, strict=False, assign=True)
        tied = set(getattr(plain, "_tied_weights_keys", None) or [])
        missing = [key for key in result.missing_keys if key not in tied]
        if missing or result.unexpected_keys:
            raise ConfigError(
                f"relora: the merged model does not match its config (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
        plain.tie_weights()
        plain.generation_config = base.generation_config
        plain.save_pretrained(str(folder), safe_serialization=True)

    def merged_state_dict(self, model: Any) -> dict[str, Any]:
        """The whole model with every cycle merged, by plain transformers names (final save)."""
        import torch

        peft_model = model
        base_model = peft_model.get_base_model()
        layers = lora_layers(model)
        merged: dict[str, Any] = {}
        with torch.no_grad():
            for name, layer in layers.items():
                (adapter,) = layer.active_adapters
                master = self.masters.get(name)
                weight = master if master is not None else layer.get_base_layer().weight
                delta = layer.get_delta_weight(adapter)
                merged[f"{name}.weight"] = (weight.float() + delta.to(weight.device).float()).to("cpu")
                bias = getattr(layer.get_base_layer(), "bias", None)
                if bias is not None:
                    merged[f"{name}.bias"] = bias.detach().to("cpu")
            for key, value in base_model.state_dict().items():
                if "lora_" in key or ".base_layer." in key:
                    continue
                merged.setdefault(key, value.detach().to("cpu"))
        return merged


class _seeded:
    """Seed torch's generators for a block and put the training stream back afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        import torch

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


def lora_layers(model: Any) -> dict[str, Any]:
    """PEFT's LoRA layers of ``model`` by the name of their module in the base model."""
    from peft.tuners.lora import LoraLayer

    inner = getattr(model, "module", model)  # DDP
    base_model = inner.get_base_model()
    return {name: module for name, module in base_model.named_modules() if isinstance(module, LoraLayer)}


def requantize(base: Any, weight: Any) -> None:
    """Quantize ``weight`` (full precision) into the bitsandbytes 4-bit layer ``base`` with its settings."""
    import bitsandbytes

    old = base.weight
    state = old.quant_state
    new = bitsandbytes.nn.Params4bit(
        weight.detach().to("cpu", dtype=state.dtype if state is not None else weight.dtype).contiguous(),
        requires_grad=False,
        quant_type=old.quant_type,
        compress_statistics=old.compress_statistics,
        blocksize=old.blocksize,
        quant_storage=old.quant_storage,
        module=base,
    )
    base.weight = new._quantize(old.device) if not new.bnb_quantized else new


def build_relora(cfg: Any, model: Any, engine_kind: str) -> ReLoRA | None:
    """The ReLoRA state of the run (None when off); refuses what it cannot run, naming the key."""
    if not relora_enabled(cfg):
        return None
    schedule = restart_schedule(cfg)
    if schedule is None:
        raise ConfigError(
            "relora: ReLoRA needs jagged_restart_steps (or relora_steps): the steps between restarts"
        )
    if cfg.adapter not in ("lora", "qlora"):
        raise ConfigError('relora: ReLoRA merges and restarts an adapter; set adapter = "lora" or "qlora"')
    if engine_kind != "ddp":
        raise ConfigError(
            f"relora: ReLoRA under {engine_kind} is not supported yet (the merge needs whole base weights "
            "on every rank); train on one process or with DDP"
        )
    if cfg.peft_use_dora or cfg.lora_target_parameters:
        key = "peft_use_dora" if cfg.peft_use_dora else "lora_target_parameters"
        raise ConfigError(
            f"relora: ReLoRA with {key} is not supported yet (only plain LoRA layers are merged)"
        )
    if "adam" not in cfg.optimizer or "8bit" in cfg.optimizer:
        # Axolotl's rule: the pruned state is Adam's moments; 8-bit state is quantized codes.
        raise ConfigError(
            f"relora: ReLoRA prunes Adam's optimizer state; optimizer {cfg.optimizer!r} is not supported "
            "with it (use adamw_torch or paged_adamw_32bit)"
        )
    method = cfg.relora_prune_method or "magnitude"
    ratio = cfg.relora_prune_ratio if cfg.relora_prune_ratio is not None else _PRUNE_DEFAULT[method]
    from axr.models.quantization import quantization_of

    kind = quantization_of(cfg)
    if kind == "8bit":
        raise ConfigError(
            "relora: ReLoRA on an 8-bit base is not supported yet; use load_in_4bit or no quantization"
        )
    from peft.utils import ModulesToSaveWrapper

    if any(isinstance(module, ModulesToSaveWrapper) for module in model.modules()):
        raise ConfigError(
            "relora: ReLoRA with lora_modules_to_save (or added tokens, which train the embeddings "
            "whole) is not supported yet: only LoRA layers are merged and restarted"
        )
    relora = ReLoRA(
        every=schedule[0],
        prune_method=method,
        prune_ratio=float(ratio),
        cpu_offload=bool(cfg.relora_cpu_offload),
        seed=int(cfg.seed),
        quantized=kind == "4bit",
    )
    if relora.quantized:
        _check_every_4bit_layer_adapted(model)
        relora.masters = _full_precision_masters(cfg, model)
    return relora


def _check_every_4bit_layer_adapted(model: Any) -> None:
    """The final model is saved merged in full precision: a 4-bit layer without an adapter would have
    no full-precision weights to save."""
    import bitsandbytes

    left = [
        name
        for name, module in model.get_base_model().named_modules()
        if isinstance(module, bitsandbytes.nn.Linear4bit) and not name.endswith(".base_layer")
    ]
    if left:
        raise ConfigError(
            f"relora: ReLoRA on a 4-bit base needs an adapter on every quantized layer ({left[0]} has "
            "none); set lora_target_linear = true"
        )


def _full_precision_masters(cfg: Any, model: Any) -> dict[str, Any]:
    """The unquantized base weights of every adapted 4-bit layer, read from the base model's files."""
    import torch
    from safetensors import safe_open

    from axr.hub import model_source

    folder = Path(model_source(cfg, "base_model", weights=True))
    files = sorted(folder.glob("*.safetensors"))
    wanted = {f"{name}.weight": name for name in lora_layers(model)}
    masters: dict[str, Any] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                if key in wanted:
                    masters[wanted[key]] = handle.get_tensor(key).to(torch.float32)
    missing = sorted(set(wanted.values()) - set(masters))
    if missing:
        raise ConfigError(
            f"relora: the base model's safetensors files in {folder} lack the weights of {missing[:3]}; "
            "ReLoRA on a 4-bit base merges into the unquantized weights read from there"
        )
    return masters
