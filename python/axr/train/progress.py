"""What people see while training: a progress bar, metrics.jsonl, and trackers through accelerate."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.train.health import nonfinite_keys

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def trackers_of(cfg: Any) -> list[str]:
    """accelerate ``log_with`` names the config asks for; a missing package is a ConfigError."""
    wanted: list[tuple[str, str]] = []
    if cfg.use_tensorboard:
        wanted.append(("tensorboard", "use_tensorboard"))
    if cfg.wandb_project and cfg.wandb_mode != "disabled":
        wanted.append(("wandb", "wandb_project"))
    if cfg.mlflow_tracking_uri or cfg.mlflow_experiment_name:
        wanted.append(("mlflow", "mlflow_tracking_uri"))
    for tracker, key in wanted:
        package = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{key}: logging to {tracker} needs the {package} package: pip install {package}"
            )
    return [tracker for tracker, _ in wanted]


def tracker_init_kwargs(cfg: Any) -> dict[str, Any]:
    """Per-tracker options (project, run name, entity, mlflow experiment)."""
    kwargs: dict[str, Any] = {}
    if cfg.wandb_project:
        wandb: dict[str, Any] = {}
        for key, option in (("wandb_entity", "entity"), ("wandb_name", "name"), ("wandb_run_id", "id")):
            if getattr(cfg, key):
                wandb[option] = getattr(cfg, key)
        if cfg.wandb_mode:
            wandb["mode"] = cfg.wandb_mode
        kwargs["wandb"] = wandb
    if cfg.mlflow_tracking_uri or cfg.mlflow_experiment_name:
        kwargs["mlflow"] = {"experiment_name": cfg.mlflow_experiment_name or "axr"}
    return kwargs


def project_name_of(cfg: Any) -> str:
    """The run's project name for trackers."""
    return cfg.wandb_project or cfg.mlflow_experiment_name or "axr"


class Progress:
    """Progress bar (step/total, loss, lr, tokens/s, ETA) on the main process, and metrics.jsonl.

    metrics.jsonl gets one JSON object per logged step and per evaluation. A run starting at
    ``initial_step`` first cuts the file back to the records of steps up to that one (a resumed
    run re-runs the steps after its checkpoint, a fresh run starts it empty), so no step is
    listed twice. Every line is strict JSON: a NaN or infinite value is written as ``null`` and
    its key listed under ``"nonfinite"``.
    """

    def __init__(self, *, total_steps: int, initial_step: int, metrics_path: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.metrics_path = metrics_path
        self.bar: Any = None
        self._task: Any = None
        self._plot_skipped = False
        self.last_written_step: int | None = None
        if enabled:
            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            truncate_metrics(metrics_path, initial_step)
            # No bar when stderr is not a terminal; metrics.jsonl still gets every line.
            if sys.stderr.isatty():
                self._start_bar(total_steps, initial_step)

    def _start_bar(self, total_steps: int, initial_step: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self.bar.add_task("train", total=total_steps, completed=initial_step, stats="")
        self.bar.start()

    def step(self, record: dict[str, Any], *, log: bool) -> None:
        """Advance the bar by one step; write ``record`` to metrics.jsonl when ``log``."""
        if not self.enabled:
            return
        if self.bar is not None:
            stats = (
                f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['tokens_per_second']:.0f} tok/s"
            )
            self.bar.update(self._task, advance=1, stats=stats)
        if log:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (main process only)."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as stream:
            stream.write(metrics_line(record))
        self.last_written_step = record.get("step")

    def ensure_logged(self, record: dict[str, Any]) -> None:
        """Write the step ``record`` unless ``step`` already wrote it (a step that stops the run)."""
        if self.last_written_step != record["step"]:
            self.write(record)

    def message(self, text: str) -> None:
        """A line of text that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)

    def plot(self) -> None:
        """Redraw loss.png beside metrics.jsonl; without matplotlib, say once that it is skipped."""
        if not self.enabled or self._plot_skipped or not self.metrics_path.is_file():
            return
        from axr.train.plot import MATPLOTLIB_MISSING, matplotlib_available, write_plot

        if not matplotlib_available():
            self._plot_skipped = True
            self.message(f"loss.png skipped: {MATPLOTLIB_MISSING}")
            return
        write_plot(self.metrics_path.parent)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def metrics_line(record: dict[str, Any]) -> str:
    """One strict-JSON line: non-finite floats become null, their keys listed under ``nonfinite``."""
    nonfinite = nonfinite_keys(record)
    if nonfinite:
        record = {key: None if key in nonfinite else value for key, value in record.items()}
        record["nonfinite"] = nonfinite
    return json.dumps(record, allow_nan=False) + "\n"


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the records of ``path`` with ``step <= last_step`` (and drop a torn last line).

    Rewritten through a temporary file and a rename, so a kill here leaves the old file or the new.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(metrics_line(record))  # also turns an older axr's bare NaN into null
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("".join(kept))
    os.replace(staging, path)
