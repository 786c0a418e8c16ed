"""`axr preprocess` then `axr train` with `rl = "dpo"`: training reads the pairs from the store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from axr.cli import main

WORDS = ["sky", "fruit", "cat", "dog", "tree", "car", "sun", "moon"]


def _config(tmp_path: Path, model: Path, rows: list[dict[str, Any]], top: str, kind: str) -> Path:
    """A two-step LoRA preference run on ``rows`` (packed, no checkpoints), with ``top`` keys added."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_model = "{model}"\noutput_dir = "{tmp_path / "out"}"\n'
        f'dataset_prepared_path = "{tmp_path / "prepared"}"\n{top}\nsequence_len = 128\n'
        'micro_batch_size = 2\nmax_steps = 2\nlearning_rate = 1e-3\nadapter = "lora"\nlora_r = 4\n'
        'lora_alpha = 8\nlora_target_modules = ["q_proj", "v_proj"]\nsample_packing = true\n'
        'save_strategy = "no"\n'
        f'[[datasets]]\npath = "{data}"\ntype = "{kind}"\n'
    )
    return config


def test_preprocess_then_train_reads_the_store_without_rendering(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"question": f"Is the {w} good?", "chosen": f"Yes, the {w} is good.", "rejected": f"No no {w} bad."}
        for w in WORDS
    ]
    config = _config(tmp_path, tiny_llama_dir, rows, 'rl = "dpo"\nval_set_size = 0.25', "chatml.intel")
    assert main(["preprocess", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prepared ")
    assert "train  6 pairs (12 sequences)" in out
    assert "eval   2 pairs (4 sequences)" in out
    stores = list((tmp_path / "prepared").iterdir())
    assert len(stores) == 1

    import axr._native

    def no_render(*args: Any) -> Any:
        raise AssertionError("axr train rendered the pairs again")

    monkeypatch.setattr(axr._native, "encode_preference", no_render)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", str(config)]) == 0
    err = capsys.readouterr().err
    assert f"axr: preference data read from the store {stores[0]} (reused)" in err
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if "rewards/accuracies" in record]
    assert len(steps) == 2
    assert all(math.isfinite(record["loss"]) for record in steps)
    assert any("eval_rewards/accuracies" in record for record in records)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_orpo_argilla_config_preprocesses_and_trains(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Axolotl ORPO config (rl: orpo, type: chat_template.argilla) runs end to end: preprocess
    writes the pairs, train reads them and takes ORPO steps."""

    def conversation(question: str, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

    rows = [
        {
            "prompt": f"Is the {w} good?",
            "chosen": conversation(f"Is the {w} good?", f"Yes, the {w} is good."),
            "rejected": conversation(f"Is the {w} good?", f"No no {w} bad."),
        }
        for w in WORDS
    ]
    config = _config(
        tmp_path,
        tiny_llama_dir,
        rows,
        'rl = "orpo"\norpo_alpha = 0.1\nchat_template = "chatml"',
        "chat_template.argilla",
    )
    assert main(["preprocess", str(config), "--no-progress"]) == 0
    assert "train  8 pairs (16 sequences)" in capsys.readouterr().out
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", str(config)]) == 0
    assert "(reused)" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if "log_odds_ratio" in record]
    assert len(steps) == 2
    assert all(math.isfinite(record["loss"]) and math.isfinite(record["nll_loss"]) for record in steps)
