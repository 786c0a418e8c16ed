"""``axr plot OUTPUT_DIR``: draw the training curves of a run from its metrics.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw loss.png (train/eval loss, learning rate by step) from a run's metrics.jsonl",
        description="Read OUTPUT_DIR/metrics.jsonl (written while training, also mid-run) and draw "
        "OUTPUT_DIR/loss.png: train and eval loss, and the learning rate, by step. It needs matplotlib "
        '(pip install "axr[plot]"). --text prints the loss as a chart in the terminal instead.',
    )
    parser.add_argument(
        "output_dir", metavar="OUTPUT_DIR", help="a training output_dir (or its metrics.jsonl)"
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the image (default OUTPUT_DIR/loss.png)"
    )
    parser.add_argument("--text", action="store_true", help="print a text chart of the loss; no image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from axr.train.plot import loss_summary, read_curves, text_chart, write_plot

    source = Path(args.output_dir)
    if args.text:
        curves = read_curves(source)
        if not curves.loss:
            from axr.errors import AxrError

            raise AxrError(f"{source}: no training loss logged yet")
        for line in [*loss_summary(curves.loss), *text_chart(curves.loss)]:
            print(line)
        if curves.eval_loss:
            eval_text = ", ".join(f"{value:.3f} (step {step})" for step, value in curves.eval_loss)
            print(f"eval loss: {eval_text}")
        return 0
    folder = source.parent if source.is_file() else source
    written = write_plot(source, args.output if args.output else folder / "loss.png")
    print(f"wrote {written}")
    return 0
