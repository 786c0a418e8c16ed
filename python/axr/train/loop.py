"""``train(cfg)``: setup, the loop, save. Reads top to bottom.

One optimizer step:

1. take the next ``gradient_accumulation_steps`` micro-batches of this rank (collated on the host);
2. count their trainable tokens and sum that count over ranks (the step's normaliser);
3. for each micro-batch: forward, summed token loss, backward of ``loss_sum * world_size / count``
   (DDP averages gradients over ranks; the factor turns that average back into a sum), with
   gradient sync only on the last micro-batch;
4. clip, optimizer step, schedule step;
5. log, maybe evaluate, maybe save a checkpoint.

So the gradient of a step is exactly that of one big batch of all its tokens,
whatever the split into micro-batches and ranks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axr.config.precision import apply_tf32
from axr.errors import AxrError, ConfigError
from axr.models.adapters import apply_adapter, check_adapter_supported
from axr.models.attention import select_attention
from axr.models.load import check_sequence_len, load_model, load_tokenizer, resolve_precision
from axr.models.quantization import quantized_layer_summary
from axr.train.batches import MicroBatchPlan, build_plan, collate_micro_batch
from axr.train.checkpoint import load_checkpoint, newest_verified_checkpoint, save_checkpoint
from axr.train.health import check_step, check_weights
from axr.train.loss import forward_summed_loss, supports_position_selection
from axr.train.optim import build_optimizer, build_scheduler, check_names
from axr.train.packing_guard import guard_packing
from axr.train.progress import Progress, project_name_of, tracker_init_kwargs, trackers_of


@dataclass
class TrainingData:
    """Prepared datasets: each has ``len()``, ``[i] -> (input_ids, labels)`` and ``.lengths``."""

    train: Any
    eval: Any | None = None


@dataclass
class TrainResult:
    """What a finished run reports."""

    output_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    stopped_early: bool = False


def open_training_data(cfg: Any) -> TrainingData:
    """The prepared stores of the config: reused when their fingerprint matches, else built first."""
    from axr.data import PreparedDataset, preprocess

    stores = preprocess(cfg).stores
    evaluation = PreparedDataset(stores["eval"]) if "eval" in stores else None
    return TrainingData(train=PreparedDataset(stores["train"]), eval=evaluation)


def _every(value: float | None, total_steps: int) -> int | None:
    """``eval_steps``/``save_steps``: an integer count, or a fraction (< 1) of the total steps."""
    if value is None:
        return None
    return max(1, round(value * total_steps)) if value < 1 else int(value)


def _per_epoch(count: int | None, steps_per_epoch: int) -> int | None:
    if not count:
        return None
    return max(1, steps_per_epoch // count)


def _micro_batches(plan: MicroBatchPlan, epoch: int, skip: int) -> Iterator[tuple[int, int, list[list[int]]]]:
    """(epoch, index in epoch, bins) from micro-batch ``skip`` of ``epoch`` on, across epochs."""
    while True:
        plan.set_epoch(epoch)
        for index in range(skip, len(plan)):
            yield epoch, index, plan.micro_batch(index)
        skip = 0
        epoch += 1


def _add_neftune(model: Any, alpha: float) -> None:
    """NEFTune: uniform noise on input embeddings while training, scaled by alpha / sqrt(length * dim)."""
    import torch

    def hook(module: Any, inputs: Any, output: Any) -> Any:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.zeros_like(output).uniform_(-scale, scale)

    model.get_input_embeddings().register_forward_hook(hook)


def _resolved_config(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "model_dump"):
        dumped: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True)
        return dumped
    return dict(vars(cfg))


def evaluation_sums(
    model: Any,
    accelerator: Any,
    dataset: Any,
    plan: MicroBatchPlan,
    *,
    packing: bool,
    attention: str,
    pad: int,
    select: bool,
) -> Any:
    """This rank's ``[summed eval loss, trained tokens]`` (float64 tensor), every sample counted once."""
    import torch

    model.eval()
    sums = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    plan.set_epoch(0)
    with torch.no_grad():
        for index in range(len(plan)):
            bins = plan.micro_batch(index)
            repeats = getattr(plan, "repeats", None)
            if repeats is not None:
                # Without drop_last the sampler repeats bins so every rank has a last step; count each once.
                flags = repeats(index)
                bins = [members for members, repeated in zip(bins, flags, strict=True) if not repeated]
            if not bins:
                continue
            batch = collate_micro_batch(dataset, bins, packing=packing, pad_token_id=pad, pad_to=None)
            with accelerator.autocast():
                summed = forward_summed_loss(model, batch, attention, accelerator.device, select=select)
            sums[0] += summed.double()
            sums[1] += batch["num_trainable"]
    model.train()
    return sums


def evaluate(model: Any, accelerator: Any, dataset: Any, plan: MicroBatchPlan, **options: Any) -> float:
    """Token-weighted mean eval loss over every eval row of every rank."""
    totals = accelerator.reduce(
        evaluation_sums(model, accelerator, dataset, plan, **options), reduction="sum"
    )
    return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")


def train(cfg: Any, *, data: TrainingData | None = None) -> TrainResult:
    """Fine-tune the model of ``cfg`` on its prepared data; write checkpoints and the result to output_dir."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    # ---- setup ---------------------------------------------------------------------------------
    check_adapter_supported(cfg)
    check_names(cfg)
    check_sequence_len(cfg)
    attention = select_attention(cfg)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg, device_type, adapter=bool(cfg.adapter))
    apply_tf32(cfg)
    trackers = trackers_of(cfg)
    output_dir = Path(cfg.output_dir)
    # accelerate keeps one process-wide state: a second train() in the same process (a notebook, the
    # tests) with other precision settings needs a fresh one. The process group (PartialState) stays.
    AcceleratorState._reset_state()
    # cpu=True on a machine without CUDA is what makes accelerate run CPU processes as a gloo group.
    accelerator = Accelerator(
        mixed_precision=precision.mixed,
        log_with=trackers or None,
        project_dir=str(output_dir),
        cpu=device_type == "cpu",
    )
    rank, world_size = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed)

    if data is None:
        # Rank 0 builds the store when it is missing; the others then find it by its fingerprint.
        with accelerator.main_process_first():
            data = open_training_data(cfg)
    # The store's own tokenizer (config tokens already added) is the one its ids belong to.
    tokenizer, tokens_added = load_tokenizer(cfg, store_tokenizer=getattr(data.train, "tokenizer_dir", None))
    model = load_model(cfg, tokenizer, precision=precision, attention=attention)
    quantized_layers = quantized_layer_summary(model)
    model = apply_adapter(cfg, model, tokens_added=tokens_added, precision=precision)
    if cfg.neftune_noise_alpha:
        _add_neftune(model, cfg.neftune_noise_alpha)
    model.train()
    select_positions = supports_position_selection(model)

    packing = bool(cfg.sample_packing)
    eval_packing = packing if cfg.eval_sample_packing is None else bool(cfg.eval_sample_packing)
    pad_to = cfg.sequence_len if cfg.pad_to_sequence_len else None
    pad_id = tokenizer.pad_token_id
    accumulation = cfg.gradient_accumulation_steps
    plan = build_plan(
        cfg,
        data.train.lengths,
        batch_size=cfg.micro_batch_size,
        packing=packing,
        rank=rank,
        world_size=world_size,
        train=True,
    )
    micro_batches_per_epoch = len(plan)
    if micro_batches_per_epoch == 0:
        raise AxrError(
            f"micro_batch_size: {len(data.train)} training samples make no full micro-batch of "
            f"{cfg.micro_batch_size} row(s) on each of {world_size} process(es); lower micro_batch_size"
        )
    steps_per_epoch = math.ceil(micro_batches_per_epoch / accumulation)
    total_steps = cfg.max_steps or math.ceil(cfg.num_epochs * steps_per_epoch)
    eval_plan = None
    if data.eval is not None and len(data.eval) > 0:
        eval_plan = build_plan(
            cfg,
            data.eval.lengths,
            batch_size=cfg.eval_batch_size or cfg.micro_batch_size,
            packing=eval_packing,
            rank=rank,
            world_size=world_size,
            train=False,
        )
    eval_every = _every(cfg.eval_steps, total_steps) or _per_epoch(cfg.evals_per_epoch, steps_per_epoch)
    if eval_plan is not None and eval_every is None and cfg.evals_per_epoch != 0:
        # evals_per_epoch = 0 means no evaluation (Axolotl); unset means once per epoch.
        eval_every = steps_per_epoch
    save_every = None
    if cfg.save_strategy != "no":
        save_every = _every(cfg.save_steps, total_steps) or _per_epoch(cfg.saves_per_epoch, steps_per_epoch)
        if save_every is None and cfg.save_strategy in (None, "epoch", "steps"):
            save_every = steps_per_epoch

    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    guard_packing(cfg, model, attention, accelerator)  # refuses a model whose packed samples leak

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "micro_batch_in_epoch": 0,
        "best_eval_loss": None,
        "evals_without_improvement": 0,
    }
    resume_from = cfg.resume_from_checkpoint
    if resume_from is None and cfg.auto_resume_from_checkpoints:
        found = newest_verified_checkpoint(output_dir, warn=accelerator.is_main_process)
        resume_from = str(found) if found else None
    if resume_from:
        state = load_checkpoint(accelerator, model, optimizer, scheduler, resume_from)
        if state["step"] >= total_steps:
            raise ConfigError(
                f"resume_from_checkpoint: {resume_from} is at step {state['step']}, already at or past "
                f"the {total_steps} steps this config trains for"
            )

    if trackers:
        accelerator.init_trackers(
            project_name_of(cfg), config=_resolved_config(cfg), init_kwargs=tracker_init_kwargs(cfg)
        )
    progress = Progress(
        total_steps=total_steps,
        initial_step=state["step"],
        metrics_path=output_dir / "metrics.jsonl",
        enabled=accelerator.is_main_process,
    )
    progress.message(
        f"axr train: {len(data.train)} samples, {micro_batches_per_epoch} micro-batches/epoch/process, "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps, {world_size} process(es), "
        f"attention {attention}, "
        f"precision {precision.mixed if precision.mixed != 'no' else precision.weights}"
        + (f", base weights: {quantized_layers}" if quantized_layers else "")
        + (f", resuming at step {state['step']}" if resume_from else "")
    )

    # ---- the loop ------------------------------------------------------------------------------
    result = TrainResult(output_dir=output_dir, steps=state["step"])
    stream = _micro_batches(plan, state["epoch"], state["micro_batch_in_epoch"])
    logging_steps = cfg.logging_steps or 1
    watchdog_strikes = 0
    device = accelerator.device
    for step in range(state["step"], total_steps):
        step_start, step_cpu_start = time.perf_counter(), time.process_time()
        # 1. this step's micro-batches: never across an epoch boundary
        batches: list[dict[str, Any]] = []
        for _ in range(accumulation):
            epoch, index, bins = next(stream)
            if batches and epoch != state["epoch"]:
                stream = _micro_batches(plan, epoch, index)  # put it back: it opens the next step
                break
            batches.append(
                collate_micro_batch(data.train, bins, packing=packing, pad_token_id=pad_id, pad_to=pad_to)
            )
            state["epoch"], state["micro_batch_in_epoch"] = epoch, index + 1
        data_seconds = time.perf_counter() - step_start

        # 2. the step's normaliser: trainable tokens over all micro-batches and ranks
        step_counts = [sum(b["num_trainable"] for b in batches), sum(b["num_tokens"] for b in batches)]
        counts = torch.tensor(step_counts, device=device, dtype=torch.float64)
        counts = accelerator.reduce(counts, reduction="sum")
        trainable, tokens = float(counts[0]), float(counts[1])

        # 3. forward/backward, gradients synced on the last micro-batch only
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for position, batch in enumerate(batches):
            last = position == len(batches) - 1
            with accelerator.no_sync(model) if not last else nullcontext():
                with accelerator.autocast():
                    summed = forward_summed_loss(model, batch, attention, device, select=select_positions)
                accelerator.backward(summed * world_size / max(trainable, 1.0))
            loss_sum += summed.detach().double()

        # 4. clip, step, schedule
        grad_norm = None
        if cfg.max_grad_norm:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # 5. log, evaluate, save
        loss = float(accelerator.reduce(loss_sum, reduction="sum")) / max(trainable, 1.0)
        state["step"] = step + 1
        result.losses.append(loss)
        seconds = time.perf_counter() - step_start
        record = {
            "step": step + 1,
            "epoch": round(state["epoch"] + state["micro_batch_in_epoch"] / micro_batches_per_epoch, 4),
            "loss": loss,
            "lr": learning_rate,
            "grad_norm": grad_norm,
            "trainable_tokens": int(trainable),
            "tokens": int(tokens),
            "tokens_per_second": tokens / seconds,
            "step_seconds": seconds,
            # CPU time of this process (all threads): comparable between runs on a shared machine.
            "step_cpu_seconds": time.process_time() - step_cpu_start,
            "data_seconds": data_seconds,
        }
        should_log = (step + 1) % logging_steps == 0 or step + 1 == total_steps
        progress.step(record, log=should_log)
        check_step(record, progress, loss_scaling=accelerator.scaler is not None)
        if should_log and trackers:
            accelerator.log(
                {
                    "train/loss": loss,
                    "train/lr": learning_rate,
                    "train/tokens_per_second": record["tokens_per_second"],
                },
                step=step + 1,
            )

        if cfg.loss_watchdog_threshold is not None:
            watchdog_strikes = watchdog_strikes + 1 if loss > cfg.loss_watchdog_threshold else 0
            if watchdog_strikes >= (cfg.loss_watchdog_patience or 3):
                progress.close()
                raise AxrError(
                    f"loss_watchdog_threshold: loss {loss:.4f} stayed above {cfg.loss_watchdog_threshold} "
                    f"for {watchdog_strikes} steps (step {step + 1}); training stopped. "
                    "Lower the learning rate or raise the threshold"
                )

        stop = False
        if eval_plan is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == total_steps):
            eval_loss = evaluate(
                model,
                accelerator,
                data.eval,
                eval_plan,
                packing=eval_packing,
                attention=attention,
                pad=pad_id,
                select=select_positions,
            )
            result.eval_losses.append(eval_loss)
            progress.write({"step": step + 1, "eval_loss": eval_loss})
            progress.message(f"step {step + 1}: eval loss {eval_loss:.4f}")
            if trackers:
                accelerator.log({"eval/loss": eval_loss}, step=step + 1)
            best = state["best_eval_loss"]
            if best is None or eval_loss < best:
                state["best_eval_loss"], state["evals_without_improvement"] = eval_loss, 0
            else:
                state["evals_without_improvement"] += 1
                patience = cfg.early_stopping_patience
                if patience and state["evals_without_improvement"] >= patience:
                    progress.message(f"early stop: eval loss did not improve for {patience} evaluations")
                    stop = result.stopped_early = True

        if save_every and ((step + 1) % save_every == 0) and step + 1 < total_steps and not stop:
            save_checkpoint(
                accelerator, model, optimizer, scheduler, state, output_dir, total_limit=cfg.save_total_limit
            )
            progress.plot()
        if stop:
            break

    # ---- save ----------------------------------------------------------------------------------
    result.steps = state["step"]
    progress.close()
    check_weights(accelerator, model, step=state["step"], what="final model")
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # every rank: a collective under FSDP/DeepSpeed
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(str(output_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir))
        (output_dir / "axr_config.json").write_text(json.dumps(_resolved_config(cfg), indent=2) + "\n")
        what = "adapter" if cfg.adapter else "model"
        progress.message(f"axr train: {what} saved to {output_dir} after {state['step']} steps")
        progress.plot()
    accelerator.wait_for_everyone()
    if trackers:
        accelerator.end_training()
    return result
