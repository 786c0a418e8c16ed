"""Training curves from ``metrics.jsonl``: ``loss.png`` (matplotlib, optional) and a text chart.

``loss.png`` has two panels sharing the step axis: train and eval loss above, the learning rate
below. Training redraws it at each checkpoint and at the end; ``axr plot OUTPUT_DIR`` draws it at
any time, and ``axr plot OUTPUT_DIR --text`` prints the loss as a small chart in the terminal
(no matplotlib needed).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from axr.errors import AxrError

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
MATPLOTLIB_MISSING = 'drawing loss.png needs matplotlib: pip install "axr[plot]" (or pip install matplotlib)'

# Eighths of a block, from empty to full, for the text chart.
_BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass
class Curves:
    """``(step, value)`` points of each logged series, in step order."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)


def read_curves(metrics: str | Path) -> Curves:
    """The series of a ``metrics.jsonl`` (a file, or the output folder holding it).

    A resumed run appends to the same file and logs again the steps after its checkpoint: the
    last value logged for a step wins, which is what the final model followed.
    """
    path = Path(metrics)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise AxrError(f"{path}: no such file (training writes it to output_dir)")
    series: dict[str, dict[int, float]] = {"loss": {}, "eval_loss": {}, "lr": {}}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError) as error:
            raise AxrError(f"{path}:{number}: not a metrics record ({error})") from None
        for name, values in series.items():
            value = record.get(name)
            if isinstance(value, int | float):
                values[step] = float(value)
    return Curves(**{name: sorted(values.items()) for name, values in series.items()})


def matplotlib_available() -> bool:
    """Whether ``loss.png`` can be drawn here."""
    return importlib.util.find_spec("matplotlib") is not None


def write_plot(output_dir: str | Path, destination: str | Path | None = None) -> Path:
    """Draw ``loss.png`` from ``output_dir/metrics.jsonl``; returns the file written."""
    curves = read_curves(output_dir)
    if not curves.loss and not curves.eval_loss:
        raise AxrError(f"{Path(output_dir) / METRICS_FILE}: no loss logged yet")
    if not matplotlib_available():
        raise AxrError(MATPLOTLIB_MISSING)
    # The Agg canvas directly: no pyplot, so no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, lr_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    if curves.loss:
        loss_axes.plot(*zip(*curves.loss, strict=True), label="train loss")
    if curves.eval_loss:
        loss_axes.plot(*zip(*curves.eval_loss, strict=True), marker="o", label="eval loss")
    loss_axes.set_ylabel("loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    if curves.lr:
        lr_axes.plot(*zip(*curves.lr, strict=True), color="tab:green")
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("step")
    lr_axes.grid(alpha=0.3)
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    target = Path(destination) if destination is not None else Path(output_dir) / PLOT_FILE
    figure.savefig(target, dpi=100)
    return target


def loss_summary(points: list[tuple[int, float]]) -> list[str]:
    """The first and last loss, and, over 10 steps or more (one step's loss is noisy), the mean of
    the first and of the last fifth of the steps."""
    if not points:
        return []
    (first_step, first), (last_step, last) = points[0], points[-1]
    lines = [f"training loss {first:.3f} at step {first_step} -> {last:.3f} at step {last_step}"]
    if len(points) >= 10:
        fifth = len(points) // 5
        head = sum(value for _, value in points[:fifth]) / fifth
        tail = sum(value for _, value in points[-fifth:]) / fifth
        lines.append(
            f"mean of steps {points[0][0]}-{points[fifth - 1][0]}: {head:.3f} -> "
            f"mean of steps {points[-fifth][0]}-{last_step}: {tail:.3f}"
        )
    return lines


def text_chart(points: list[tuple[int, float]], *, width: int = 60, height: int = 8) -> list[str]:
    """A block chart of ``points`` (step, value): one column per step, or per group of steps when
    there are more steps than ``width`` (each column the mean of its group)."""
    if not points:
        return []
    groups = max(1, -(-len(points) // width))  # ceil: steps per column
    columns = [
        sum(value for _, value in points[start : start + groups]) / len(points[start : start + groups])
        for start in range(0, len(points), groups)
    ]
    low, high = min(columns), max(columns)
    span = high - low or 1.0
    # Every column shows at least one eighth, so the lowest value is still visible.
    eighths = [max(1, round((value - low) / span * (height * 8 - 1)) + 1) for value in columns]
    label_width = max(len(f"{high:.3f}"), len(f"{low:.3f}"))
    lines = []
    for row in range(height - 1, -1, -1):
        cells = "".join(_BLOCKS[min(8, max(0, level - row * 8))] for level in eighths)
        label = f"{high:.3f}" if row == height - 1 else f"{low:.3f}" if row == 0 else ""
        lines.append(f"{label:>{label_width}} ┤{cells}")
    first, last = points[0][0], points[-1][0]
    lines.append(f"{'':>{label_width}} └{'─' * len(columns)}")
    lines.append(
        f"{'':>{label_width}}  step {first} … {last}" + (f" ({groups} per column)" if groups > 1 else "")
    )
    return lines
