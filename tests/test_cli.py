from __future__ import annotations

import subprocess
import sys

from axr.cli import main


def test_version_lists_core_and_libraries(capsys):
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    for name in ("axr", "axr native core", "torch", "transformers", "peft", "accelerate"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: axr" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "axr.cli", "version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "axr native core" in result.stdout
