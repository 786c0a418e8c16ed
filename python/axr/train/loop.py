"""``train(cfg)``: set up, then repeat one optimizer step and the periodic work, then save.

One optimizer step (``optimizer_step``):

1. take the next ``gradient_accumulation_steps`` micro-batches of this rank (collated on the host);
2. count their trainable tokens and sum that count over ranks (the step's normaliser);
3. for each micro-batch: forward, summed token loss, backward of
   ``loss_sum * world_size * accumulation / count``, with gradient sync only on the last
   micro-batch. Every engine (DDP, FSDP, DeepSpeed) averages gradients over ranks and
   accelerate (or DeepSpeed) divides the loss by the configured accumulation: the two
   factors undo that, so the gradient is a sum over tokens divided once;
4. clip, optimizer step, schedule step (under DeepSpeed the engine clips and steps at the
   accumulation boundary, inside the last backward).

So the gradient of a step is exactly that of one big batch of all its tokens,
whatever the split into micro-batches, ranks and engine.

The periodic work after a step (``after_step``): log, stop on the loss watchdog, evaluate
(early stopping), save a checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from axr.config import AxrConfig
from axr.config.precision import apply_tf32
from axr.errors import AxrError, ConfigError
from axr.models.adapters import apply_adapter, check_adapter_supported
from axr.models.attention import select_attention
from axr.models.load import Precision, check_sequence_len, load_model, load_tokenizer, resolve_precision
from axr.models.quantization import quantized_layer_summary
from axr.train.batches import MicroBatchPlan, build_plan, collate_micro_batch
from axr.train.checkpoint import (
    load_checkpoint,
    load_checkpoint_weights,
    newest_verified_checkpoint,
    save_checkpoint,
)
from axr.train.engine import Engine, build_accelerator
from axr.train.evaluation import evaluate
from axr.train.health import check_step, check_weights
from axr.train.loss import forward_summed_loss, supports_position_selection
from axr.train.optim import build_optimizer, build_scheduler, check_names
from axr.train.packing_guard import guard_packing
from axr.train.progress import Progress, project_name_of, tracker_init_kwargs, trackers_of
from axr.train.push import HubPush
from axr.train.relora import ReLoRA, build_relora
from axr.train.resume_plan import check_plan, plan_of


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
    grad_norms: list[float | None] = field(default_factory=list)
    stopped_early: bool = False
    model: Any = None
    """The trained model as the engine holds it (DDP/FSDP-wrapped, a DeepSpeed engine), on every rank."""


@dataclass
class TrainerState:
    """Where the run is: saved in checkpoints (``trainer_state.json``) and restored on resume."""

    step: int = 0
    epoch: int = 0
    micro_batch_in_epoch: int = 0
    best_eval_loss: float | None = None
    evals_without_improvement: int = 0


@dataclass
class Schedule:
    """How many steps, and when to evaluate and save."""

    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int | None
    save_every: int | None


@dataclass
class Run:
    """Everything ``setup`` builds; the step and the periodic work read it."""

    cfg: AxrConfig
    accelerator: Any
    engine: Engine
    precision: Precision
    data: TrainingData
    tokenizer: Any
    model: Any
    optimizer: Any
    scheduler: Any
    plan: MicroBatchPlan
    eval_plan: MicroBatchPlan | None
    schedule: Schedule
    attention: str
    select_positions: bool
    packing: bool
    eval_packing: bool
    joined: bool
    """Packed rows are one sequence each (``pretrain_multipack_attn = false`` with pretraining data)."""
    pad_to: int | None
    pad_id: int
    trackers: list[str]
    output_dir: Path
    progress: Progress
    state: TrainerState
    data_plan: dict[str, Any]
    """How the data is dealt (``resume_plan.plan_of``): recorded in checkpoints, checked on resume."""
    resumed_from: str | None = None
    push: HubPush | None = None
    """Uploads to ``hub_model_id`` (main process only), when set."""
    relora: ReLoRA | None = None
    """ReLoRA's merges and restarts (``axr.train.relora``), when on."""


@dataclass
class StepOutcome:
    """What one optimizer step measured."""

    loss: float
    grad_norm: float | None
    learning_rate: float
    trainable_tokens: float
    tokens: float
    metrics: dict[str, float] = field(default_factory=dict)
    """Method metrics logged with the step (preference training: rewards/chosen, ...)."""


def open_training_data(cfg: AxrConfig, accelerator: Any = None) -> TrainingData:
    """The prepared stores of the config: reused when their fingerprint matches, else built first.
    With several processes only rank 0 builds or finds them (see ``store_handoff``)."""
    from axr.data import PreparedDataset, preprocess

    if accelerator is not None and accelerator.num_processes > 1:
        from axr.train.store_handoff import stores_from_rank_zero

        stores = stores_from_rank_zero(cfg, accelerator)
    else:
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


def _resolved_config(cfg: AxrConfig) -> dict[str, Any]:
    dumped: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True)
    return dumped


# ---- setup -------------------------------------------------------------------------------------


def _schedule(cfg: AxrConfig, micro_batches_per_epoch: int, has_eval: bool) -> Schedule:
    steps_per_epoch = math.ceil(micro_batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps or math.ceil(cfg.num_epochs * steps_per_epoch)
    eval_every = _every(cfg.eval_steps, total_steps) or _per_epoch(cfg.evals_per_epoch, steps_per_epoch)
    if has_eval and eval_every is None and cfg.evals_per_epoch != 0:
        # evals_per_epoch = 0 means no evaluation (Axolotl); unset means once per epoch.
        eval_every = steps_per_epoch
    save_every = None
    if cfg.save_strategy != "no":
        save_every = _every(cfg.save_steps, total_steps) or _per_epoch(cfg.saves_per_epoch, steps_per_epoch)
        if save_every is None and cfg.save_strategy in (None, "epoch", "steps"):
            save_every = steps_per_epoch
    return Schedule(micro_batches_per_epoch, steps_per_epoch, total_steps, eval_every, save_every)


def setup(cfg: AxrConfig, *, data: TrainingData | None = None) -> Run:
    """Accelerator and engine, data, model, optimizer, schedule, and the resumed state if any."""
    import torch
    from accelerate.utils import set_seed

    check_adapter_supported(cfg)
    check_names(cfg)
    check_sequence_len(cfg)
    attention = select_attention(cfg)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg, device_type, adapter=bool(cfg.adapter))
    apply_tf32(cfg)
    trackers = trackers_of(cfg)
    output_dir = Path(cfg.output_dir)
    accelerator, engine = build_accelerator(
        cfg, precision=precision, trackers=trackers, output_dir=output_dir, device_type=device_type
    )
    rank, world_size = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed)

    if data is None:
        data = open_training_data(cfg, accelerator)
    # The store's own tokenizer (config tokens already added) is the one its ids belong to.
    tokenizer, tokens_added = load_tokenizer(cfg, store_tokenizer=getattr(data.train, "tokenizer_dir", None))
    model = load_model(cfg, tokenizer, precision=precision, attention=attention)
    quantized_layers = quantized_layer_summary(model)
    model = apply_adapter(cfg, model, tokens_added=tokens_added, precision=precision)
    if cfg.neftune_noise_alpha:
        _add_neftune(model, cfg.neftune_noise_alpha)
    relora = build_relora(cfg, model, engine.kind)
    model.train()
    select_positions = supports_position_selection(model)

    packing = bool(cfg.sample_packing)
    eval_packing = packing if cfg.eval_sample_packing is None else bool(cfg.eval_sample_packing)
    plan = build_plan(
        cfg,
        data.train.lengths,
        batch_size=cfg.micro_batch_size,
        packing=packing,
        rank=rank,
        world_size=world_size,
        train=True,
    )
    if len(plan) == 0:
        raise AxrError(
            f"micro_batch_size: {len(data.train)} training samples make no full micro-batch of "
            f"{cfg.micro_batch_size} row(s) on each of {world_size} process(es); lower micro_batch_size"
        )
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
    schedule = _schedule(cfg, len(plan), eval_plan is not None)
    resume_from = cfg.resume_from_checkpoint
    if resume_from is None and cfg.auto_resume_from_checkpoints:
        found = newest_verified_checkpoint(output_dir, warn=accelerator.is_main_process)
        resume_from = str(found) if found else None
    if resume_from:
        # Before prepare: the engine may shard the parameters, and the checkpoint holds them whole.
        load_checkpoint_weights(model, resume_from)
        if relora is not None:
            relora.load(model, Path(resume_from))

    # Before the first step: a wrong repo id or a missing token costs no training time.
    push = HubPush.for_config(cfg, main_process=accelerator.is_main_process)
    model, optimizer = accelerator.prepare(model, build_optimizer(cfg, model))
    # On the prepared optimizer: ZeRO-3 regroups the parameters, and the schedule must drive those groups.
    scheduler = build_scheduler(cfg, optimizer, schedule.total_steps)
    guard_packing(cfg, model, attention, accelerator)  # refuses a model whose packed samples leak

    state = TrainerState()
    data_plan = plan_of(cfg, data.train, world_size)
    if resume_from:
        saved = load_checkpoint(accelerator, model, optimizer, scheduler, resume_from)
        check_plan(saved.pop("plan", None), data_plan, resume_from)
        state = TrainerState(**saved)
        if state.step >= schedule.total_steps:
            raise ConfigError(
                f"resume_from_checkpoint: {resume_from} is at step {state.step}, already at or past "
                f"the {schedule.total_steps} steps this config trains for"
            )

    if trackers:
        accelerator.init_trackers(
            project_name_of(cfg), config=_resolved_config(cfg), init_kwargs=tracker_init_kwargs(cfg)
        )
    progress = Progress(
        total_steps=schedule.total_steps,
        initial_step=state.step,
        metrics_path=output_dir / "metrics.jsonl",
        enabled=accelerator.is_main_process,
    )
    engine_name = {
        "ddp": "ddp" if world_size > 1 else "no engine",
        "deepspeed": f"deepspeed zero{engine.zero_stage}",
        "fsdp": f"fsdp{engine.fsdp_version}",
    }[engine.kind]
    progress.message(
        f"axr train: {len(data.train)} samples, {schedule.micro_batches_per_epoch} micro-batches/epoch/"
        f"process, {schedule.steps_per_epoch} steps/epoch, {schedule.total_steps} steps, {world_size} "
        f"process(es) ({engine_name}), attention {attention}, "
        f"precision {precision.mixed if precision.mixed != 'no' else precision.weights}"
        + (f", base weights: {quantized_layers}" if quantized_layers else "")
        + (f", resuming at step {state.step}" if resume_from else "")
    )
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        engine=engine,
        precision=precision,
        data=data,
        tokenizer=tokenizer,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        plan=plan,
        eval_plan=eval_plan,
        schedule=schedule,
        attention=attention,
        select_positions=select_positions,
        packing=packing,
        eval_packing=eval_packing,
        joined=bool(cfg.pretraining_dataset) and cfg.pretrain_multipack_attn is False,
        pad_to=cfg.sequence_len if cfg.pad_to_sequence_len else None,
        pad_id=tokenizer.pad_token_id,
        trackers=trackers,
        output_dir=output_dir,
        progress=progress,
        state=state,
        data_plan=data_plan,
        resumed_from=resume_from,
        push=push,
        relora=relora,
    )


# ---- one optimizer step ------------------------------------------------------------------------


def next_micro_batches(
    run: Run, stream: Iterator[tuple[int, int, list[list[int]]]]
) -> tuple[list[dict[str, Any]], Iterator[tuple[int, int, list[list[int]]]]]:
    """The collated micro-batches of the next step (never across an epoch boundary), and the stream."""
    batches: list[dict[str, Any]] = []
    for _ in range(run.cfg.gradient_accumulation_steps):
        epoch, index, bins = next(stream)
        if batches and epoch != run.state.epoch:
            stream = _micro_batches(run.plan, epoch, index)  # put it back: it opens the next step
            break
        batches.append(
            collate_micro_batch(
                run.data.train,
                bins,
                packing=run.packing,
                pad_token_id=run.pad_id,
                pad_to=run.pad_to,
                joined=run.joined,
            )
        )
        run.state.epoch, run.state.micro_batch_in_epoch = epoch, index + 1
    return batches, stream


def optimizer_step(run: Run, batches: list[dict[str, Any]]) -> StepOutcome:
    """Forward/backward every micro-batch of the step, then clip, step and schedule once."""
    import torch

    accelerator, model = run.accelerator, run.model
    device = accelerator.device
    counts = torch.tensor(
        [sum(b["num_trainable"] for b in batches), sum(b["num_tokens"] for b in batches)],
        device=device,
        dtype=torch.float64,
    )
    counts = accelerator.reduce(counts, reduction="sum")
    trainable, tokens = float(counts[0]), float(counts[1])
    # Undo the engines' mean over ranks and accelerate's (DeepSpeed's) division by the accumulation.
    scale = accelerator.num_processes * accelerator.gradient_accumulation_steps / max(trainable, 1.0)

    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for position, batch in enumerate(batches):
        last = position == len(batches) - 1
        # sync_gradients: DDP/FSDP reduce, and DeepSpeed reaches its accumulation boundary, on the last only.
        accelerator.sync_gradients = last
        with nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                summed = forward_summed_loss(model, batch, run.attention, device, select=run.select_positions)
            accelerator.backward(summed * scale)
        loss_sum += summed.detach().double()

    grad_norm = None
    if run.cfg.max_grad_norm:
        # Under DeepSpeed the engine clipped inside the last backward; this returns its global norm (or None).
        norm = accelerator.clip_grad_norm_(model.parameters(), run.cfg.max_grad_norm)
        grad_norm = None if norm is None else float(norm)
    learning_rate = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    loss = float(accelerator.reduce(loss_sum, reduction="sum")) / max(trainable, 1.0)
    return StepOutcome(loss, grad_norm, learning_rate, trainable, tokens)


# ---- periodic work: log, watchdog, ReLoRA restarts, evaluate, save -----------------------------


def restart_relora(run: Run) -> None:
    """Merge the adapter into the base, start it again and prune its optimizer state."""
    assert run.relora is not None
    report = run.relora.restart(run.accelerator.unwrap_model(run.model), run.optimizer, run.state.step)
    run.progress.write(report)
    run.progress.message(
        f"step {run.state.step}: ReLoRA restart {report['relora_restart']}: merged {report['merged_layers']} "
        f"layers, {report['optimizer_state_pruned']:.0%} of the adapter's optimizer state zeroed"
    )


def log_step(run: Run, outcome: StepOutcome, *, started: tuple[float, float], data_seconds: float) -> None:
    cfg, state = run.cfg, run.state
    seconds = time.perf_counter() - started[0]
    record = {
        "step": state.step,
        "epoch": round(state.epoch + state.micro_batch_in_epoch / run.schedule.micro_batches_per_epoch, 4),
        "loss": outcome.loss,
        "lr": outcome.learning_rate,
        "grad_norm": outcome.grad_norm,
        "trainable_tokens": int(outcome.trainable_tokens),
        "tokens": int(outcome.tokens),
        "tokens_per_second": outcome.tokens / seconds,
        "step_seconds": seconds,
        # CPU time of this process (all threads): comparable between runs on a shared machine.
        "step_cpu_seconds": time.process_time() - started[1],
        "data_seconds": data_seconds,
        **outcome.metrics,
    }
    should_log = state.step % (cfg.logging_steps or 1) == 0 or state.step == run.schedule.total_steps
    run.progress.step(record, log=should_log)
    check_step(record, run.progress, loss_scaling=run.accelerator.scaler is not None)
    if should_log and run.trackers:
        run.accelerator.log(
            {
                "train/loss": outcome.loss,
                "train/lr": outcome.learning_rate,
                "train/tokens_per_second": record["tokens_per_second"],
            },
            step=state.step,
        )


def check_watchdog(run: Run, loss: float, strikes: int) -> int:
    """The loss watchdog's new strike count; raises when the loss stayed too high for too long."""
    threshold = run.cfg.loss_watchdog_threshold
    if threshold is None:
        return 0
    strikes = strikes + 1 if loss > threshold else 0
    if strikes >= (run.cfg.loss_watchdog_patience or 3):
        run.progress.close()
        raise AxrError(
            f"loss_watchdog_threshold: loss {loss:.4f} stayed above {threshold} "
            f"for {strikes} steps (step {run.state.step}); training stopped. "
            "Lower the learning rate or raise the threshold"
        )
    return strikes


def evaluate_now(run: Run, result: TrainResult) -> bool:
    """Evaluate, log, track the best loss; True when early stopping says stop."""
    assert run.eval_plan is not None
    assert run.data.eval is not None
    step, state = run.state.step, run.state
    eval_loss = evaluate(
        run.model,
        run.accelerator,
        run.data.eval,
        run.eval_plan,
        packing=run.eval_packing,
        joined=run.joined,
        attention=run.attention,
        pad=run.pad_id,
        select=run.select_positions,
    )
    result.eval_losses.append(eval_loss)
    run.progress.write({"step": step, "eval_loss": eval_loss})
    run.progress.message(f"step {step}: eval loss {eval_loss:.4f}")
    if run.trackers:
        run.accelerator.log({"eval/loss": eval_loss}, step=step)
    if state.best_eval_loss is None or eval_loss < state.best_eval_loss:
        state.best_eval_loss, state.evals_without_improvement = eval_loss, 0
        return False
    state.evals_without_improvement += 1
    patience = run.cfg.early_stopping_patience
    if patience and state.evals_without_improvement >= patience:
        run.progress.message(f"early stop: eval loss did not improve for {patience} evaluations")
        return True
    return False


def after_step(run: Run, result: TrainResult) -> bool:
    """Evaluate and save when due; True when the run should stop."""
    step, schedule = run.state.step, run.schedule
    stop = False
    last = step == schedule.total_steps
    if run.eval_plan is not None and schedule.eval_every and (step % schedule.eval_every == 0 or last):
        stop = result.stopped_early = evaluate_now(run, result)
    if schedule.save_every and step % schedule.save_every == 0 and not last and not stop:
        unwrapped = run.accelerator.unwrap_model(run.model)
        checkpoint = save_checkpoint(
            run.accelerator,
            run.model,
            run.optimizer,
            run.scheduler,
            {**vars(run.state), "plan": run.data_plan},
            run.output_dir,
            total_limit=run.cfg.save_total_limit,
            extra=None if run.relora is None else partial(run.relora.save, unwrapped),
            sharded=run.engine.sharded_checkpoints,
        )
        run.progress.plot()
        if run.push is not None:
            run.push.saved_checkpoint(checkpoint, step)
    return stop


# ---- the recipe --------------------------------------------------------------------------------


def save_final(run: Run) -> None:
    """The trained model (or adapter) whole, as safetensors, with tokenizer and resolved config."""
    accelerator = run.accelerator
    check_weights(accelerator, run.model, step=run.state.step, what="final model")
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run.model)  # every rank: a collective under FSDP/DeepSpeed
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(run.model)
        if run.relora is not None:
            # The adapter alone would miss the cycles merged before: save the whole merged model.
            run.relora.save_merged(unwrapped, run.output_dir)
        else:
            unwrapped.save_pretrained(str(run.output_dir), state_dict=state_dict, safe_serialization=True)
        run.tokenizer.save_pretrained(str(run.output_dir))
        resolved = json.dumps(_resolved_config(run.cfg), indent=2)
        (run.output_dir / "axr_config.json").write_text(resolved + "\n")
        what = "adapter" if run.cfg.adapter else "model"
        run.progress.message(f"axr train: {what} saved to {run.output_dir} after {run.state.step} steps")
        if run.push is not None:
            run.push.finished(run.output_dir, run.state.step)
            run.progress.message(f"axr train: pushed to the hub repo {run.push.repo_id}")
        run.progress.plot()
    accelerator.wait_for_everyone()


def train(cfg: AxrConfig, *, data: TrainingData | None = None) -> TrainResult:
    """Fine-tune the model of ``cfg`` on its prepared data; write checkpoints and the result to output_dir."""
    if cfg.rl is not None:
        from axr.train.preference import train_preference

        return train_preference(cfg, data=data)
    run = setup(cfg, data=data)
    result = TrainResult(output_dir=run.output_dir, steps=run.state.step)
    stream = _micro_batches(run.plan, run.state.epoch, run.state.micro_batch_in_epoch)
    strikes = 0
    while run.state.step < run.schedule.total_steps:
        started = time.perf_counter(), time.process_time()
        batches, stream = next_micro_batches(run, stream)
        data_seconds = time.perf_counter() - started[0]
        outcome = optimizer_step(run, batches)
        run.state.step += 1
        result.losses.append(outcome.loss)
        result.grad_norms.append(outcome.grad_norm)
        log_step(run, outcome, started=started, data_seconds=data_seconds)
        strikes = check_watchdog(run, outcome.loss, strikes)
        if run.relora is not None and run.relora.due(run.state.step, run.schedule.total_steps):
            restart_relora(run)
        if after_step(run, result):
            break
    result.steps, result.model = run.state.step, run.model
    run.progress.close()
    save_final(run)
    if run.trackers:
        run.accelerator.end_training()
    return result
