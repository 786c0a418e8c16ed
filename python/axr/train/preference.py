"""Preference training (``rl: dpo | ipo | kto | orpo | simpo``) on the native data path.

Data: each ``datasets`` entry goes through ``axr._native.encode_preference`` (Rust: read, render
with the dataset type's formatter or chat template, tokenize once, mask the prompt), once, when
``axr preprocess`` (or the first ``axr train``) writes the preference store
(``axr.data.preference_store``); training reads the pairs from that store. A *unit* is what
shuffling, splitting and batching move as a whole: a pair (chosen, rejected) for DPO-style
methods, one labelled completion for KTO. So a pair is never separated.

A micro-batch is a list of bins of units (the same plans as SFT). Packed, each bin is one row
holding every sequence of its units with block-diagonal attention (position ids restart per
sequence); padded, each sequence is its own row. Per-sequence log-probability sums come from
the batch's logits through a sequence index per token (``sequence_logps``), so packed and padded
batches give the same sums.

Reference model: with an adapter, the same model with the adapter disabled; for a full fine-tune,
a second, frozen copy of the base model; with ``precompute_ref_log_probs``, the reference
log-probs of every sequence are computed once before training and the reference is dropped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from axr._native import IGNORE_INDEX
from axr.data.preprocess import PREFERENCE_KEYS
from axr.errors import ConfigError
from axr.train import preference_losses as losses

NO_REFERENCE = ("orpo", "simpo")
# Keys that only one method reads: set with another, they would silently change nothing.
_METHOD_KEYS = {
    "orpo_alpha": ("orpo",),
    "simpo_gamma": ("simpo",),
    "cpo_alpha": ("simpo",),
    "kto_desirable_weight": ("kto",),
    "kto_undesirable_weight": ("kto",),
}
# Keys of a datasets entry's format part that the preference formatter reads.
_SPEC_KEYS = {
    "type",
    "field_messages",
    "field_chosen",
    "field_rejected",
    "field_prompt",
    "field_system",
    "field_completion",
    "field_label",
    "prompt_format",
    "chosen_format",
    "rejected_format",
    "completion_format",
    "message_property_mappings",
    "chat_template",
    "chat_template_jinja",
    "template_limits",
}
_PREFERENCE_KEYS = set(PREFERENCE_KEYS)
# Filled in for every entry by the schema or the SFT options; meaningless for preference rows.
_IGNORED_FORMAT_KEYS = {"train_on_inputs"}


@dataclass
class PreferenceSet:
    """Tokenized preference data: sequences grouped in units (pairs, or single KTO rows)."""

    input_ids: np.ndarray
    trainable: np.ndarray
    offsets: np.ndarray
    per_unit: int
    desirable: np.ndarray | None = None
    units: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ref_logps: np.ndarray | None = None
    """Precomputed reference log-prob sums per sequence (and ``ref_kl_logps`` for KTO)."""
    ref_kl_logps: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None
    """Per unit number, the row it was rendered from over the config's datasets (None: the same)."""
    row_len: int | None = None
    """The length of a packed row (sequence_len): a unit whose sequences together are longer (each
    fits, as Axolotl requires) is planned as one full row and, packed, collated as a row per sequence."""

    def __len__(self) -> int:
        return len(self.units)

    def sequences_of(self, unit: int) -> list[int]:
        """Sequence numbers of unit ``unit`` (an index into ``units``): chosen then rejected."""
        first = int(self.units[unit]) * self.per_unit
        return list(range(first, first + self.per_unit))

    def sequence_length(self, sequence: int) -> int:
        return int(self.offsets[sequence + 1] - self.offsets[sequence])

    @property
    def lengths(self) -> np.ndarray:
        starts = self.units * self.per_unit
        total = self.offsets[starts + self.per_unit].astype(np.int64) - self.offsets[starts].astype(np.int64)
        return total if self.row_len is None else np.minimum(total, self.row_len)

    def sample(self, sequence: int) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, labels)`` of one sequence (labels -100 on the prompt)."""
        start, end = int(self.offsets[sequence]), int(self.offsets[sequence + 1])
        ids = self.input_ids[start:end].astype(np.int64)
        return ids, np.where(self.trainable[start:end], ids, IGNORE_INDEX)

    def kl_sample(self, sequence: int) -> tuple[np.ndarray, np.ndarray]:
        """KTO: this row's prompt with the next unit's completion (the KL estimate's mismatched pair)."""
        position = int(np.searchsorted(self.units, sequence))
        other = int(self.units[(position + 1) % len(self.units)])
        ids, labels = self.sample(sequence)
        other_ids, other_labels = self.sample(other)
        prompt_end = int(np.argmax(labels != IGNORE_INDEX))
        completion_start = int(np.argmax(other_labels != IGNORE_INDEX))
        return (
            np.concatenate([ids[:prompt_end], other_ids[completion_start:]]),
            np.concatenate([labels[:prompt_end], other_labels[completion_start:]]),
        )

    def subset(self, units: np.ndarray) -> PreferenceSet:
        return PreferenceSet(
            self.input_ids,
            self.trainable,
            self.offsets,
            self.per_unit,
            self.desirable,
            np.asarray(units, dtype=np.int64),
            self.ref_logps,
            self.ref_kl_logps,
            dict(self.meta),
            self.rows,
            self.row_len,
        )

    def row_of(self, unit: int) -> int:
        """The dataset row (0-based over the config's datasets) of unit ``unit`` (an index into ``units``)."""
        number = int(self.units[unit])
        return number if self.rows is None else int(self.rows[number])


def _table_defaults() -> dict[str, Any]:
    from axr.config.schema import UserDefinedFormat

    return {
        name: info.default
        for name, info in UserDefinedFormat.model_fields.items()
        if info.default is not None
    }


def _spec(format_keys: dict[str, Any], key: str, cfg: Any) -> dict[str, Any]:
    if "type" not in format_keys and set(format_keys) & _PREFERENCE_KEYS:
        # A `type:` table with preference keys is Axolotl's user_defined.default; the SFT table's
        # defaults that come with it are not settings of the user's.
        defaults = _table_defaults()
        format_keys = {k: v for k, v in format_keys.items() if k not in defaults or defaults[k] != v}
        format_keys["type"] = "user_defined.default"
    unknown = sorted(set(format_keys) - _SPEC_KEYS - _IGNORED_FORMAT_KEYS)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}: not used by preference datasets (rl: {cfg.rl}); the keys they read are "
            + ", ".join(sorted(_SPEC_KEYS - {"template_limits"}))
        )
    spec = {name: value for name, value in format_keys.items() if name in _SPEC_KEYS}
    if "type" not in spec:
        raise ConfigError(f"{key}.type: preference datasets need a type (e.g. chat_template.default)")
    if cfg.chat_template is not None and "chat_template" not in spec:
        spec["chat_template"] = cfg.chat_template
        if cfg.chat_template_jinja is not None:
            spec.setdefault("chat_template_jinja", cfg.chat_template_jinja)
    return spec


def spec_of(entry: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The preference spec of one ``options_from_config`` dataset entry (a ConfigError names a bad key
    or a type that ``cfg.rl`` does not read)."""
    from axr._native import check_preference_type

    key = entry["source"]["key"]
    spec = _spec(entry["format"], key, cfg)
    # dpo and orpo share a store for the same pairs, so ORPO's own type must be refused under dpo
    # here, before a store built under orpo could be reused.
    check_preference_type(spec["type"], cfg.rl, key)
    return spec


def encode_entries(cfg: Any, entries: list[dict[str, Any]], options: dict[str, Any]) -> PreferenceSet:
    """Tokenize the preference datasets ``entries`` (``options_from_config`` dicts) into one set."""
    from axr._native import encode_preference

    kto = cfg.rl == "kto"
    added = json.dumps({"special_tokens": options["special_tokens"], "tokens": options["tokens"]})
    parts = []
    for entry in entries:
        key = entry["source"]["key"]
        spec = _spec(entry["format"], key, cfg)
        ids, trainable, offsets, desirable, warnings = encode_preference(
            json.dumps(entry["source"]), json.dumps(spec), options["tokenizer_dir"], cfg.rl, added
        )
        for warning in warnings:
            print(f"axr: warning: {warning}", file=sys.stderr)
        parts.append((ids, trainable, offsets, desirable))
    # One offsets array over every dataset: each part's offsets shifted by the tokens before it.
    shifts = np.cumsum([0] + [len(part[0]) for part in parts[:-1]])
    pieces = [part[2][1:].astype(np.int64) + shift for part, shift in zip(parts, shifts, strict=True)]
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), *pieces])
    per_unit = 1 if kto else 2
    data = PreferenceSet(
        input_ids=np.concatenate([part[0] for part in parts]),
        trainable=np.concatenate([part[1] for part in parts]),
        offsets=offsets,
        per_unit=per_unit,
        desirable=np.concatenate([part[3] for part in parts]) if kto else None,
    )
    data.units = np.arange((len(offsets) - 1) // per_unit, dtype=np.int64)
    data.meta["dataset_units"] = [(len(part[2]) - 1) // per_unit for part in parts]
    return data


def open_preference_data(cfg: Any) -> Any:
    """Train (and eval) preference sets of ``cfg``, read from its preference store (built first when
    missing): over-long units already dropped and counted, split by unit."""
    from axr.data.preference_store import read_preference_store, report_dropped
    from axr.data.preprocess import preprocess
    from axr.train.loop import TrainingData

    result = preprocess(cfg, progress=False)
    verb = "reused" if result.reused else "built"
    print(f"axr: preference data read from the store {result.root} ({verb})", file=sys.stderr)
    report_dropped(result)
    parts = {split: read_preference_store(store) for split, store in result.stores.items()}
    if cfg.sample_packing:
        for part in parts.values():
            part.row_len = int(cfg.sequence_len)
    return TrainingData(train=parts["train"], eval=parts.get("eval"))


# ---- batches -----------------------------------------------------------------------------------


def collate_units(
    data: PreferenceSet, bins: list[list[int]], *, packing: bool, pad_token_id: int, kl: bool = False
) -> dict[str, Any]:
    """Collate the units of ``bins`` (packed: one row per bin, or one row per sequence for a bin
    longer than ``data.row_len``; padded: one row per sequence).

    Adds ``sequence_index`` (``[rows, length]``, the batch-local number of each token's sequence,
    -1 on padding), ``sequences`` (their global numbers, chosen before rejected per pair) and, for
    KTO, ``desirable``. With ``kl``, the sequences are the KTO mismatched pairs instead.
    """
    import torch

    from axr.data.collate import collate_packed, collate_padded

    read = data.kl_sample if kl else data.sample
    grouped = [[sequence for unit in members for sequence in data.sequences_of(unit)] for members in bins]
    sequences = [sequence for group in grouped for sequence in group]
    if packing:
        samples = [[read(s) for s in group] for group in grouped]
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for group_samples in samples:
            if data.row_len is not None and sum(len(ids) for ids, _ in group_samples) > data.row_len:
                # A pair too long for one row (each sequence fits): a row per sequence, as unpacked.
                rows.extend([sample] for sample in group_samples)
            else:
                rows.append(group_samples)
        batch = collate_packed(rows, pad_token_id=pad_token_id)
        index = torch.full(batch["input_ids"].shape, -1, dtype=torch.long)
        slot = 0
        for row, row_samples in enumerate(rows):
            start = 0
            for ids, _ in row_samples:
                index[row, start : start + len(ids)] = slot
                start, slot = start + len(ids), slot + 1
    else:
        batch = collate_padded([read(s) for s in sequences], pad_token_id=pad_token_id)
        index = torch.where(batch["attention_mask"].bool(), torch.arange(len(sequences))[:, None], -1)
    batch["sequence_index"] = index
    batch["sequences"] = torch.tensor(sequences, dtype=torch.long)
    if data.desirable is not None:
        batch["desirable"] = torch.from_numpy(data.desirable[sequences].copy())
    return batch


def sequence_logps(model: Any, batch: dict[str, Any], attention: str, device: Any) -> tuple[Any, Any]:
    """Per-sequence sums of the completion tokens' log-probs, and their token counts."""
    import torch
    import torch.nn.functional as functional

    from axr.models.attention import forward_kwargs, labels_for

    labels = labels_for(batch, attention, device)
    index = batch["sequence_index"].reshape(labels.shape).to(device)
    logits = model(**forward_kwargs(batch, attention, device)).logits
    targets = labels[:, 1:]
    token_logps = -functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    keep = (targets != IGNORE_INDEX).reshape(-1)
    slots = index[:, 1:].reshape(-1)[keep]
    count = len(batch["sequences"])
    sums = torch.zeros(count, device=device, dtype=token_logps.dtype).index_add(0, slots, token_logps[keep])
    tokens = torch.bincount(slots, minlength=count).to(sums.dtype)
    return sums, tokens


# ---- the method --------------------------------------------------------------------------------


@dataclass
class Method:
    """The loss settings of ``cfg.rl`` (Axolotl's keys, TRL's defaults)."""

    name: str
    beta: float
    loss_types: tuple[str, ...] = ("sigmoid",)
    loss_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    gamma: float = 0.5
    cpo_alpha: float = 1.0
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    @property
    def needs_reference(self) -> bool:
        return self.name not in NO_REFERENCE


def method_of(cfg: Any) -> Method:
    """The method of ``cfg.rl``; settings that would have no effect are errors, never ignored."""
    name = cfg.rl
    if name == "kto_pair":
        raise ConfigError("rl: kto_pair is not supported (TRL removed it); use rl: kto or dpo_loss_type")
    beta = cfg.rl_beta if cfg.rl_beta is not None else (2.0 if name == "simpo" else 0.1)
    smoothing = float(cfg.dpo_label_smoothing or 0.0)
    loss_types = tuple(cfg.dpo_loss_type or (["ipo"] if name == "ipo" else ["sigmoid"]))
    weights = cfg.dpo_loss_weights
    if (cfg.dpo_loss_type or weights) and name not in ("dpo", "ipo"):
        raise ConfigError(f"dpo_loss_type: applies to rl: dpo and ipo, not rl: {name}")
    if cfg.rpo_alpha is not None:
        if name not in ("dpo", "ipo"):
            raise ConfigError(f"rpo_alpha: applies to rl: dpo and ipo, not rl: {name}")
        weights = [*(weights or [1.0] * len(loss_types)), float(cfg.rpo_alpha)]
        loss_types = (*loss_types, "sft")
    if smoothing and "robust" not in loss_types:
        raise ConfigError(
            "dpo_label_smoothing: has no effect on the sigmoid, hinge and ipo losses (as in TRL); "
            'use dpo_loss_type: ["robust"] or remove it'
        )
    if weights is not None and len(weights) != len(loss_types):
        raise ConfigError("dpo_loss_weights: needs one weight per dpo_loss_type")
    for key, methods in _METHOD_KEYS.items():
        if getattr(cfg, key) is not None and name not in methods:
            raise ConfigError(f"{key}: applies to rl: {' and '.join(methods)}, not rl: {name}")
    if cfg.precompute_ref_log_probs and name in NO_REFERENCE:
        raise ConfigError(f"precompute_ref_log_probs: rl: {name} has no reference model")
    unknown = [loss for loss in loss_types if loss not in losses.DPO_LOSS_TYPES]
    if unknown:
        supported = ", ".join(losses.DPO_LOSS_TYPES)
        raise ConfigError(f"dpo_loss_type: {unknown[0]!r} is not supported yet; supported: {supported}")
    return Method(
        name=name,
        beta=float(cfg.orpo_alpha if name == "orpo" and cfg.orpo_alpha is not None else beta),
        loss_types=loss_types,
        loss_weights=tuple(float(w) for w in weights) if weights is not None else None,
        label_smoothing=smoothing,
        gamma=float(cfg.simpo_gamma if cfg.simpo_gamma is not None else 0.5),
        cpo_alpha=float(cfg.cpo_alpha if cfg.cpo_alpha is not None else 1.0),
        desirable_weight=float(cfg.kto_desirable_weight if cfg.kto_desirable_weight is not None else 1.0),
        undesirable_weight=float(
            cfg.kto_undesirable_weight if cfg.kto_undesirable_weight is not None else 1.0
        ),
    )


def batch_loss(
    method: Method, logps: Any, tokens: Any, ref: Any, kl: Any, desirable: Any
) -> tuple[Any, dict[str, Any]]:
    """The method's loss of one micro-batch from its sequences' log-prob sums (pairs interleaved)."""
    if method.name == "kto":
        return losses.kto_loss(
            logps,
            ref,
            desirable,
            kl,
            beta=method.beta,
            desirable_weight=method.desirable_weight,
            undesirable_weight=method.undesirable_weight,
        )
    policy = losses.PairLogps(logps[0::2], logps[1::2], tokens[0::2], tokens[1::2])
    if method.name == "orpo":
        return losses.orpo_loss(policy, alpha=method.beta)
    if method.name == "simpo":
        return losses.simpo_loss(policy, beta=method.beta, gamma=method.gamma, cpo_alpha=method.cpo_alpha)
    return losses.dpo_loss(
        policy,
        ref[0::2],
        ref[1::2],
        beta=method.beta,
        loss_types=method.loss_types,
        loss_weights=method.loss_weights,
        label_smoothing=method.label_smoothing,
    )


# ---- the reference model -----------------------------------------------------------------------


class Reference:
    """Reference log-probs: the adapter disabled, a frozen base copy, or precomputed arrays."""

    def __init__(self, run: Any, method: Method) -> None:
        self.run = run
        self.frozen: Any = None
        self.adapter = bool(run.cfg.adapter)
        if method.needs_reference and not self.adapter:
            from axr.models.load import load_model

            # The base weights, not the policy's: a resumed policy already moved away from them.
            self.frozen = load_model(run.cfg, run.tokenizer, precision=run.precision, attention=run.attention)
            self.frozen.requires_grad_(False)
            self.frozen.eval()
            self.frozen.to(run.accelerator.device)

    def logps(self, batch: dict[str, Any]) -> Any:
        import torch

        run = self.run
        with torch.no_grad(), run.accelerator.autocast():
            if self.frozen is not None:
                return sequence_logps(self.frozen, batch, run.attention, run.accelerator.device)[0]
            unwrapped = run.accelerator.unwrap_model(run.model)
            with unwrapped.disable_adapter():
                return sequence_logps(run.model, batch, run.attention, run.accelerator.device)[0]

    def precompute(self, data: PreferenceSet, *, kl: bool) -> None:
        """Reference log-prob sums of every sequence of ``data``, once; the frozen copy is then freed."""
        run = self.run
        total = len(data.offsets) - 1
        ref_logps = data.ref_logps = np.zeros(total)
        ref_kl_logps = data.ref_kl_logps = np.zeros(total) if kl else None
        units = list(range(len(data)))
        for start in range(0, len(units), 8):
            bins = [[unit] for unit in units[start : start + 8]]
            batch = collate_units(data, bins, packing=run.packing, pad_token_id=run.pad_id)
            ref_logps[batch["sequences"].numpy()] = self.logps(batch).double().cpu().numpy()
            if ref_kl_logps is not None:
                kl_batch = collate_units(data, bins, packing=run.packing, pad_token_id=run.pad_id, kl=True)
                ref_kl_logps[kl_batch["sequences"].numpy()] = self.logps(kl_batch).double().cpu().numpy()

    def release(self) -> None:
        self.frozen = None


# ---- training ----------------------------------------------------------------------------------


def _reference_of(batch: dict[str, Any], data: PreferenceSet, name: str, reference: Reference) -> Any:
    import torch

    stored = data.ref_logps if name == "ref_logps" else data.ref_kl_logps
    if stored is not None:
        device = reference.run.accelerator.device
        return torch.from_numpy(stored[batch["sequences"].numpy()]).to(device)
    return reference.logps(batch)


def micro_batch_loss(
    run: Any, method: Method, reference: Reference, data: PreferenceSet, bins: list[list[int]]
) -> tuple[Any, dict[str, Any], tuple[int, int]]:
    """Loss and metrics of one micro-batch, and its (completion, all) token counts."""
    import torch

    device = run.accelerator.device
    batch = collate_units(data, bins, packing=run.packing, pad_token_id=run.pad_id)
    with run.accelerator.autocast():
        logps, tokens = sequence_logps(run.model, batch, run.attention, device)
    ref = _reference_of(batch, data, "ref_logps", reference) if method.needs_reference else None
    kl = desirable = None
    if method.name == "kto":
        desirable = batch["desirable"].to(device)
        kl_batch = collate_units(data, bins, packing=run.packing, pad_token_id=run.pad_id, kl=True)
        with torch.no_grad(), run.accelerator.autocast():
            kl_logps, _ = sequence_logps(run.model, kl_batch, run.attention, device)
        kl = losses.kto_kl_estimate(kl_logps, _reference_of(kl_batch, data, "ref_kl_logps", reference))
    loss, metrics = batch_loss(method, logps.double(), tokens, ref, kl, desirable)
    return loss, metrics, (int(tokens.sum()), int(batch["num_tokens"]))


def _mean_metrics(collected: dict[str, list[Any]], accelerator: Any = None) -> dict[str, float]:
    """Each metric's mean over every value of the step, on all ranks together (as one process would
    average them): a KTO rank may hold no desirable row, so sums and counts travel, not means."""
    import torch

    totals: dict[str, tuple[float, int]] = {}
    for name, parts in collected.items():
        values = torch.cat([part.reshape(-1).double().cpu() for part in parts])
        totals[name] = (float(values.sum()), len(values))
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        merged: dict[str, tuple[float, int]] = {}
        for part in gather_object([totals]):
            for name, (total, count) in part.items():
                before = merged.get(name, (0.0, 0))
                merged[name] = (before[0] + total, before[1] + count)
        totals = merged
    means = {name: total / count for name, (total, count) in totals.items() if count}
    if "rewards/chosen" in means and "rewards/rejected" in means and "rewards/margins" not in means:
        means["rewards/margins"] = means["rewards/chosen"] - means["rewards/rejected"]
    return means


def preference_step(
    run: Any, method: Method, reference: Reference, micro_batches: list[list[list[int]]]
) -> Any:
    """One optimizer step: the mean of the micro-batches' losses, as TRL's trainers average them."""
    import torch

    from axr.train.loop import StepOutcome

    accelerator, model = run.accelerator, run.model
    # accelerate divides by the configured accumulation; a short last step has fewer micro-batches.
    scale = accelerator.gradient_accumulation_steps / len(micro_batches)
    total, trained, tokens = 0.0, 0, 0
    collected: dict[str, list[Any]] = {}
    for position, bins in enumerate(micro_batches):
        last = position == len(micro_batches) - 1
        accelerator.sync_gradients = last
        with nullcontext() if last else accelerator.no_sync(model):
            loss, metrics, (completion_tokens, count) = micro_batch_loss(
                run, method, reference, run.data.train, bins
            )
            accelerator.backward(loss.float() * scale)
        total += float(loss.detach()) / len(micro_batches)
        trained, tokens = trained + completion_tokens, tokens + count
        for name, value in metrics.items():
            collected.setdefault(name, []).append(value)
    grad_norm = None
    if run.cfg.max_grad_norm:
        norm = accelerator.clip_grad_norm_(model.parameters(), run.cfg.max_grad_norm)
        grad_norm = None if norm is None else float(norm)
    learning_rate = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    # The ranks' losses are averaged as the engines average their gradients: with micro-batches of
    # equal unit counts (padded plans) that is the mean a single process reports for the same step.
    summary = torch.tensor([total, trained, tokens], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        summary = accelerator.reduce(summary, reduction="sum")
        summary[0] /= accelerator.num_processes
    return StepOutcome(
        float(summary[0]),
        grad_norm,
        learning_rate,
        float(summary[1]),
        float(summary[2]),
        _mean_metrics(collected, accelerator),
    )


def evaluate_preference(run: Any, method: Method, reference: Reference) -> dict[str, float]:
    """Mean loss and metrics over the eval units (no gradients)."""
    import torch

    data = run.data.eval
    run.model.eval()
    collected: dict[str, list[Any]] = {"loss": []}
    size = run.cfg.eval_batch_size or run.cfg.micro_batch_size
    with torch.no_grad():
        for start in range(0, len(data), size):
            bins = [[unit] for unit in range(start, min(start + size, len(data)))]
            loss, metrics, _ = micro_batch_loss(run, method, reference, data, bins)
            collected["loss"].append(loss.detach().reshape(1))
            for name, value in metrics.items():
                collected.setdefault(name, []).append(value)
    run.model.train()
    return _mean_metrics(collected)


def _units_stream(plan: Any, epoch: int, skip: int) -> Iterator[tuple[int, int, list[list[int]]]]:
    while True:
        plan.set_epoch(epoch)
        for index in range(skip, len(plan)):
            yield epoch, index, plan.micro_batch(index)
        skip = 0
        epoch += 1


def train_preference(cfg: Any, *, data: Any = None) -> Any:
    """``axr train`` with ``rl`` set: SFT's setup, checkpoints and logging around preference steps."""
    from axr.train.loop import TrainResult, after_step, check_watchdog, log_step, save_final, setup

    method = method_of(cfg)
    if data is None:
        data = open_preference_data(cfg)
    if method.name == "kto" and len(data.train) < 2:
        raise ConfigError("rl: kto needs at least 2 training rows (the KL estimate pairs mismatched rows)")
    run = setup(cfg, data=data)
    eval_data, eval_plan = run.data.eval, run.eval_plan
    run.eval_plan = None  # SFT's token-loss evaluation does not apply; the preference metrics do
    reference = Reference(run, method)
    if cfg.precompute_ref_log_probs and method.needs_reference:
        for part in (run.data.train, eval_data):
            if part is not None:
                reference.precompute(part, kl=method.name == "kto")
        reference.release()
    result = TrainResult(output_dir=run.output_dir, steps=run.state.step)
    stream = _units_stream(run.plan, run.state.epoch, run.state.micro_batch_in_epoch)
    strikes = 0
    while run.state.step < run.schedule.total_steps:
        started = time.perf_counter(), time.process_time()
        micro_batches: list[list[list[int]]] = []
        for _ in range(cfg.gradient_accumulation_steps):
            epoch, index, bins = next(stream)
            if micro_batches and epoch != run.state.epoch:
                stream = _units_stream(run.plan, epoch, index)
                break
            micro_batches.append(bins)
            run.state.epoch, run.state.micro_batch_in_epoch = epoch, index + 1
        outcome = preference_step(run, method, reference, micro_batches)
        run.state.step += 1
        result.losses.append(outcome.loss)
        result.grad_norms.append(outcome.grad_norm)
        log_step(run, outcome, started=started, data_seconds=0.0)
        strikes = check_watchdog(run, outcome.loss, strikes)
        schedule = run.schedule
        last = run.state.step == schedule.total_steps
        if (
            eval_plan is not None
            and schedule.eval_every
            and (run.state.step % schedule.eval_every == 0 or last)
        ):
            metrics = evaluate_preference(run, method, reference)
            result.eval_losses.append(metrics["loss"])
            run.progress.write({"step": run.state.step, **{f"eval_{k}": v for k, v in metrics.items()}})
        if after_step(run, result):
            break
    result.steps, result.model = run.state.step, run.model
    run.progress.close()
    save_final(run)
    if run.trackers:
        run.accelerator.end_training()
    return result
