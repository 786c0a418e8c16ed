"""The data path without the `train` extra (slow: builds a venv): in a fresh virtualenv holding only
axr's core dependencies, `import axr.packing`, `axr validate`, `axr preprocess` and `axr inspect` work,
and `axr train` says which extra to install."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
CORE = ["numpy", "pydantic", "pyyaml", "rich", "tokenizers"]
CHAT_SAMPLE = REPOSITORY / "examples" / "data" / "chat_sample.jsonl"


@pytest.mark.slow
def test_validate_preprocess_inspect_and_packing_run_without_torch(tmp_path, mistral_tokenizer_dir):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # The versions of this environment, so pip takes them from its cache when it can.
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in CORE]
    subprocess.run([python, "-m", "pip", "install", "-q", *pins], check=True, timeout=600)
    # axr from the source tree (the native module is built there by `make install`), no packages beyond.
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY / "python")}

    def axr(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "axr.cli", *argv], env=env, capture_output=True, text=True, timeout=300
        )

    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"
    assert (
        subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "[]"
    )

    packing = (
        "from axr.packing import plan_summary; "
        "print(plan_summary([100, 60, 40, 200, 30], 256, 1, strategy='bfd')['num_bins'])"
    )
    done = subprocess.run([python, "-c", packing], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"

    config = tmp_path / "chat.toml"
    config.write_text(
        f'base_model = "{mistral_tokenizer_dir}"\nchat_template = "chatml"\nsequence_len = 256\n'
        f'dataset_prepared_path = "{tmp_path / "prepared"}"\noutput_dir = "{tmp_path / "out"}"\n'
        f'[[datasets]]\npath = "{CHAT_SAMPLE}"\ntype = "chat_template"\n'
    )
    validated = axr("validate", str(config))
    assert validated.returncode == 0, validated.stderr
    assert (
        'mixed precision on this machine: not known: torch is not installed (pip install "axr[train]")'
        in (validated.stdout)
    )
    prepared = axr("preprocess", str(config), "--no-progress")
    assert prepared.returncode == 0, prepared.stderr
    assert re.search(r"^train +[\d,]+ samples", prepared.stdout, re.MULTILINE), prepared.stdout
    # The data doctor is native: its template check runs without transformers.
    assert re.search(r"generation prompt checked on 32 conversations", prepared.stdout), prepared.stdout
    inspected = axr("inspect", str(config), "-n", "1")
    assert inspected.returncode == 0, inspected.stderr
    assert re.search(r": [\d,]+ samples, [\d,]+ tokens", inspected.stdout), inspected.stdout
    trained = axr("train", str(config))
    assert trained.returncode == 2
    assert trained.stderr.strip().endswith('is not installed: pip install "axr[train]"'), trained.stderr
