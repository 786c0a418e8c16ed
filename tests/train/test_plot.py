"""Training curves: loss.png written by training (at checkpoints and the end) and by `axr plot`,
the text chart, and the messages when matplotlib is missing."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from helpers import instruction_rows, write_config

import axr.train.plot as plot_module
from axr.cli import main
from axr.train.plot import loss_summary, read_curves, text_chart
from axr.train.progress import Progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def write_metrics(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {"step": 1, "loss": 3.0, "lr": 1e-4},
        {"step": 2, "loss": 2.5, "lr": 2e-4},
        {"step": 3, "loss": 2.0, "lr": 2e-4},
        {"step": 3, "eval_loss": 2.2},
        # a run resumed from the checkpoint at step 2 logs step 3 again: the later value counts
        {"step": 3, "loss": 1.9, "lr": 2e-4},
        {"step": 4, "loss": 1.5, "lr": 1e-4},
        {"step": 4, "eval_loss": 1.7},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def test_read_curves_keeps_the_last_value_of_each_step(tmp_path):
    curves = read_curves(write_metrics(tmp_path / "out"))
    assert curves.loss == [(1, 3.0), (2, 2.5), (3, 1.9), (4, 1.5)]
    assert curves.eval_loss == [(3, 2.2), (4, 1.7)]
    assert curves.lr == [(1, 1e-4), (2, 2e-4), (3, 2e-4), (4, 1e-4)]


def test_axr_plot_draws_loss_png(tmp_path, capsys):
    out = write_metrics(tmp_path / "out")
    assert main(["plot", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'loss.png'}"
    assert png_size(out / "loss.png") == (800, 600)
    elsewhere = tmp_path / "curves.png"
    assert main(["plot", str(out / "metrics.jsonl"), "--output", str(elsewhere)]) == 0
    assert png_size(elsewhere) == (800, 600)


def test_axr_plot_text_prints_the_curve(tmp_path, capsys):
    assert main(["plot", str(write_metrics(tmp_path / "out")), "--text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training loss 3.000 at step 1 -> 1.500 at step 4"
    chart = [line.split("┤", 1)[1] for line in lines if "┤" in line]
    assert len(chart) == 8
    assert all(len(row) == 4 for row in chart)
    assert chart[0] == "█   "  # only the first (highest) step reaches the top row
    assert chart[-1] == "███▁"  # the lowest step shows one eighth
    assert lines[-1] == "eval loss: 2.200 (step 3), 1.700 (step 4)"


def test_loss_summary_averages_the_first_and_last_fifth_of_ten_steps_or_more():
    assert loss_summary([(1, 2.0), (2, 1.0)]) == ["training loss 2.000 at step 1 -> 1.000 at step 2"]
    points = [(step, 3.0 - 0.2 * step) for step in range(1, 11)]
    assert loss_summary(points) == [
        "training loss 2.800 at step 1 -> 1.000 at step 10",
        "mean of steps 1-2: 2.700 -> mean of steps 9-10: 1.100",
    ]


def test_text_chart_averages_groups_of_steps():
    points = [(step, float(100 - step)) for step in range(1, 101)]
    lines = text_chart(points, width=25, height=4)
    bars = [line.split("┤", 1)[1] for line in lines if "┤" in line]
    assert all(len(row) == 25 for row in bars)
    assert lines[-1].strip() == "step 1 … 100 (4 per column)"
    assert lines[0].lstrip().startswith("97.500")  # mean of steps 1-4: 99, 98, 97, 96


def test_axr_plot_errors_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl: no such file" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    assert main(["plot", str(tmp_path), "--text"]) == 2
    assert "metrics.jsonl:2: not a metrics record" in capsys.readouterr().err
    out = write_metrics(tmp_path / "out")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(out)]) == 2
    assert 'pip install "axr[plot]"' in capsys.readouterr().err
    assert not (out / "loss.png").exists()
    assert main(["plot", str(out), "--text"]) == 0  # the text chart needs no matplotlib


def test_progress_without_matplotlib_skips_the_plot_with_one_line(tmp_path, capsys, monkeypatch):
    out = write_metrics(tmp_path / "out")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    progress = Progress(total_steps=4, initial_step=4, metrics_path=out / "metrics.jsonl", enabled=True)
    progress.plot()
    progress.plot()
    progress.close()
    skipped = [line for line in capsys.readouterr().err.splitlines() if "loss.png skipped" in line]
    assert skipped == ['loss.png skipped: drawing loss.png needs matplotlib: pip install "axr[plot]" '
                       "(or pip install matplotlib)"]  # fmt: skip
    assert not (out / "loss.png").exists()


def test_training_draws_loss_png_at_each_checkpoint_and_the_end(
    tmp_path, tiny_llama_dir, mistral_tokenizer_dir, monkeypatch
):
    from axr.config import load_config
    from axr.testing import InMemoryDataset
    from axr.train.loop import TrainingData, train

    drawn_at: list[int] = []
    original = plot_module.write_plot

    def recording(output_dir: Path, destination: Path | None = None) -> Path:
        drawn_at.append(read_curves(output_dir).loss[-1][0])
        return original(output_dir, destination)

    monkeypatch.setattr(plot_module, "write_plot", recording)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "train.toml",
        tiny_llama_dir,
        out,
        adapter="lora",
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        micro_batch_size=2,
        max_steps=5,
        save_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        sample_packing=False,
    )
    data = TrainingData(train=InMemoryDataset(instruction_rows(mistral_tokenizer_dir)))
    train(load_config(config), data=data)
    assert drawn_at == [2, 4, 5]
    assert png_size(out / "loss.png") == (800, 600)
