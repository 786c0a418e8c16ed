"""What people see while training: a progress bar, metrics.jsonl, and trackers through accelerate."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from axr.errors import ConfigError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def trackers_of(cfg: Any) -> list[str]:
    """accelerate ``log_with`` names the config asks for; a missing package is a ConfigError."""
    wanted: list[tuple[str, str]] = []
    if getattr(cfg, "use_tensorboard", False):
        wanted.append(("tensorboard", "use_tensorboard"))
    if getattr(cfg, "wandb_project", None) and getattr(cfg, "wandb_mode", None) != "disabled":
        wanted.append(("wandb", "wandb_project"))
    if getattr(cfg, "mlflow_tracking_uri", None) or getattr(cfg, "mlflow_experiment_name", None):
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
    if getattr(cfg, "wandb_project", None):
        wandb: dict[str, Any] = {}
        for key, option in (("wandb_entity", "entity"), ("wandb_name", "name"), ("wandb_run_id", "id")):
            if getattr(cfg, key, None):
                wandb[option] = getattr(cfg, key)
        if getattr(cfg, "wandb_mode", None):
            wandb["mode"] = cfg.wandb_mode
        kwargs["wandb"] = wandb
    if getattr(cfg, "mlflow_tracking_uri", None) or getattr(cfg, "mlflow_experiment_name", None):
        kwargs["mlflow"] = {"experiment_name": getattr(cfg, "mlflow_experiment_name", None) or "axr"}
    return kwargs


def project_name_of(cfg: Any) -> str:
    """The run's project name for trackers."""
    return getattr(cfg, "wandb_project", None) or getattr(cfg, "mlflow_experiment_name", None) or "axr"


class Progress:
    """Progress bar (step/total, loss, lr, tokens/s, ETA) on the main process, and metrics.jsonl.

    metrics.jsonl gets one JSON object per logged step and per evaluation; it is
    appended to, so a resumed run continues the same file.
    """

    def __init__(self, *, total_steps: int, initial_step: int, metrics_path: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.metrics_path = metrics_path
        self.bar: Any = None
        self._plot_skipped = False
        if enabled:
            from tqdm.auto import tqdm

            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            self.bar = tqdm(
                total=total_steps,
                initial=initial_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                disable=None,  # no bar when stderr is not a terminal; metrics.jsonl still gets every line
            )

    def step(self, record: dict[str, Any], *, log: bool) -> None:
        """Advance the bar by one step; write ``record`` to metrics.jsonl when ``log``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                lr=f"{record['lr']:.2e}",
                tok_s=f"{record['tokens_per_second']:.0f}",
                refresh=False,
            )
        if log:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (main process only)."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def message(self, text: str) -> None:
        """A line of text that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
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
            self.bar.close()
