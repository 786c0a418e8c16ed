"""Hostile and broken inputs to `axr preprocess` (issue 20): endless or exploding chat templates,
Ctrl-C during a long render, a huge row, a symlink loop and a byte-order mark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from axr.cli import main
from axr.config import load_config
from axr.data import preprocess
from axr.errors import AxrError, ConfigError
from preprocess_support import PreprocessWorkspace, alpaca_rows


def _chat_config(workspace: PreprocessWorkspace, rows: int, template: str) -> Path:
    chats = [
        {"messages": [{"role": "user", "content": f"hi {index}"}, {"role": "assistant", "content": "ok"}]}
        for index in range(rows)
    ]
    data = workspace.write_rows("chats.jsonl", chats)
    return workspace.config(
        data,
        type="chat_template",
        dataset=f"chat_template = \"jinja\"\nchat_template_jinja = '''{template}'''",
    )


# The child reports its own peak resident memory (KiB) and wall time next to the CLI's exit code.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big pytest process
# would report the parent's peak.
_MEASURED_CLI = textwrap.dedent(
    """
    import sys, time
    from axr.cli import main
    started = time.monotonic()
    code = main(sys.argv[1:])
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"MEASURED {code} {peak} {time.monotonic() - started:.2f}", file=sys.stderr)
    """
)


def _measured_cli(args: list[str], timeout: float) -> tuple[int, int, float, str]:
    """Runs `axr ARGS` in a child: (exit code, peak RSS KiB, seconds, stderr)."""
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURED_CLI, *args], capture_output=True, text=True, timeout=timeout
    )
    line = next(line for line in completed.stderr.splitlines() if line.startswith("MEASURED "))
    _, code, peak, seconds = line.split()
    return int(code), int(peak), float(seconds), completed.stderr


LOOPING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _doubling(times: int) -> str:
    """A string doubled TIMES times through a namespace before anything is written (issue 20)."""
    return (
        "{% set ns = namespace(s='x') %}{% for i in range(" + str(times) + ") %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}{% for m in messages %}{{ m.content }}{% endfor %}"
    )


# Memory allowed to each run: the interpreter, the tokenizer and two workers, plus, for the
# templates that build huge values, what the renders may hold before the 256 MiB budget per
# render stops them (docs/chat.md, Limits).
@pytest.mark.parametrize(
    ("template", "limit", "peak_mib"),
    [
        (LOOPING, "instructions", 300),
        (_doubling(28), "MiB of memory", 1000),
        (_doubling(34), "MiB of memory", 1000),
        ("{{ 'x' | indent(10**10) }}", "MiB of memory", 300),
    ],
    ids=["looping", "doubling-28", "doubling-34", "indent"],
)
def test_runaway_templates_stop_at_their_budget_naming_template_and_row(
    preprocess_workspace: PreprocessWorkspace, template: str, limit: str, peak_mib: int | None
) -> None:
    config = _chat_config(preprocess_workspace, 3, template)
    code, peak_kib, _, err = _measured_cli(["preprocess", str(config), "--no-progress"], timeout=300)
    assert code == 2, err
    assert "chats.jsonl:1:" in err, err
    assert "chat_template_jinja" in err, err
    assert limit in err, err
    assert peak_kib < peak_mib * 1024, f"peak RSS {peak_kib} KiB"
    assert not list(preprocess_workspace.prepared.glob("*.tmp-*"))


def test_chat_template_limits_are_configurable_per_row(preprocess_workspace: PreprocessWorkspace) -> None:
    # ~6,000 instructions, a 4 MiB value built and dropped, and 2 MiB written: each fits the
    # defaults and passes a limit set lower, which names itself and the row.
    looping = "{% for i in range(3000) %}{% endfor %}"
    growing = (
        "{% set ns = namespace(s='x') %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    )
    writing = "{{ 'x' * (2 * 1024 * 1024) }}"
    messages = "{% for m in messages %}{{ m.content }}{% endfor %}"
    for template, limits, message in [
        (looping, "instructions = 1000", "budget of 1000 instructions"),
        (growing, "memory_mib = 1", "more than 1 MiB of memory"),
        (writing, "output_mib = 1", "passed 1 MiB of output"),
    ]:
        # Only the first row (three messages) runs the costly part: skipped alone under "skip".
        costly = "{% if messages | length == 3 %}" + template + "{% endif %}"
        config = _chat_config(preprocess_workspace, 3, costly + messages)
        rows = [
            json.loads(line) for line in (preprocess_workspace.root / "chats.jsonl").read_text().splitlines()
        ]
        rows[0]["messages"].insert(0, {"role": "system", "content": "be brief"})
        preprocess_workspace.write_rows("chats.jsonl", rows)
        # Under the defaults no row fails (the 2 MiB one is then dropped as longer than sequence_len).
        counts = preprocess(load_config(config), progress=False).metas["train"]["counts"]
        assert counts["rows_read"] == 3, counts
        assert not counts.get("skipped_bad_rows"), counts
        limited = config.read_text().replace(
            "[[datasets]]", f"chat_template_limits = {{ {limits} }}\n[[datasets]]"
        )
        config.write_text(limited)
        with pytest.raises(AxrError, match=r"chats\.jsonl:1: .*" + message) as raised:
            preprocess(load_config(config), progress=False)
        assert "chat_template_limits" in str(raised.value)
        config.write_text(limited.replace("[[datasets]]", 'on_bad_row = "skip"\n[[datasets]]'))
        counts = preprocess(load_config(config), progress=False).metas["train"]["counts"]
        assert counts["skipped_bad_rows"] == 1
    config.write_text(limited.replace("output_mib", "output_megabytes"))
    with pytest.raises(ConfigError, match=r"chat_template_limits\.output_megabytes"):
        load_config(config)


def test_a_value_grown_without_coming_back_to_axr_ends_the_process_at_four_times_the_budget(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    # A recursive macro doubles its argument: no range step, filter or write of axr's runs in
    # between, so the last line of defence (docs/chat.md, Limits) ends the process.
    template = (
        "{% macro grow(s, n) %}{% if n > 0 %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}"
        "{% endmacro %}{{ grow('x', 34) }}"
    )
    config = _chat_config(preprocess_workspace, 3, template)
    child = subprocess.Popen(
        [sys.executable, "-m", "axr.cli", "preprocess", str(config), "--no-progress", "--no-doctor"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert child.stderr is not None
    err = child.stderr.read().decode()
    # wait4 gives this child's own peak (KiB); it can only overstate it (exec keeps the peak).
    # Each of the two workers may reach four times the 256 MiB budget before the stop.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode != 0, err
    assert "chat template `chat_template_jinja`" in err, err
    assert "stopping the process" in err, err
    assert usage.ru_maxrss < 2400 * 1024, f"peak RSS {usage.ru_maxrss} KiB"


def test_ctrl_c_during_a_long_render_stops_promptly_and_leaves_no_temporary_folder(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    # Each row's render stays under the budget but takes a while: the run would last minutes.
    slow = (
        "{% for i in range(1500) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    config = _chat_config(preprocess_workspace, 2000, slow)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "axr.cli", "preprocess", str(config), "--no-progress", "--no-doctor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(preprocess_workspace.prepared.glob("*.tmp-*")):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "preprocessing never started"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the renders now
        child.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = child.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert "interrupted" in err
    assert stopped_after < 20, f"took {stopped_after:.1f} s to stop"
    assert list(preprocess_workspace.prepared.iterdir()) == []


def test_a_huge_row_is_dropped_before_tokenizing_in_bounded_memory(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    data = preprocess_workspace.root / "huge.jsonl"
    with data.open("w") as handle:
        for row in alpaca_rows(4):
            handle.write(json.dumps(row) + "\n")
        handle.write(json.dumps({"instruction": "long", "input": "", "output": "word " * 10_000_000}) + "\n")
    assert data.stat().st_size > 50_000_000
    config = preprocess_workspace.config(data)
    code, peak_kib, _, err = _measured_cli(["preprocess", str(config), "--no-progress", "--no-doctor"], 300)
    assert code == 0, err
    # Tokenizing the row first peaked at 5.0 GB.
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib} KiB"
    meta = preprocess(load_config(config), progress=False).metas["train"]
    assert meta["counts"]["dropped"] == {"longer_than_sequence_len": 1}
    assert meta["samples"] == 4


def test_a_symlink_loop_reads_each_file_once_with_a_warning(
    preprocess_workspace: PreprocessWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = preprocess_workspace.root / "ds"
    folder.mkdir()
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(50)))
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")
    config = preprocess_workspace.config(folder, top="shuffle_merged_datasets = false")
    assert main(["preprocess", str(config), "--no-progress", "--no-doctor"]) == 0
    captured = capsys.readouterr()
    assert "rows read 50, kept 50" in captured.out
    assert "warning: datasets[0].path:" in captured.err
    assert "sub/up is a symlink loop" in captured.err


def test_a_byte_order_mark_starts_a_jsonl_file_without_error(
    preprocess_workspace: PreprocessWorkspace,
) -> None:
    data = preprocess_workspace.root / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(row) + "\n" for row in alpaca_rows(5)).encode())
    result = preprocess(load_config(preprocess_workspace.config(data)), progress=False)
    assert result.metas["train"]["counts"]["rows_read"] == 5
    assert result.metas["train"]["samples"] == 5


def _adversarial_texts(size: int) -> dict[str, str]:
    """Texts where a token ends depends most on what follows: one endless word, no spaces at
    all, mixed scripts and emoji, digits, and plain words."""
    import random

    rng = random.Random(7)
    letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(size))
    return {
        "words": ("word " * size)[:size],
        "one_word": letters,
        "same_letter": "a" * size,
        "mixed": "héllo wörld 世界 🙂 naïve-café\tx\n" * (size // 30),
        "digits": "".join(rng.choice("0123456789 ") for _ in range(size)),
    }


@pytest.mark.parametrize("tokenizer", ["mistral", "tekken"])
def test_truncate_cuts_huge_rows_before_tokenizing_with_the_ids_of_the_whole_row(
    tmp_path: Path, mistral_tokenizer_dir: Path, tokenizer: str
) -> None:
    from tokenizers import Tokenizer

    from axr.data import PreparedDataset
    from axr.testing.tokenizers import build_tekken_tokenizer

    tokenizer_dir = (
        mistral_tokenizer_dir if tokenizer == "mistral" else build_tekken_tokenizer(tmp_path / "tekken")
    )
    workspace = PreprocessWorkspace(tmp_path, tokenizer_dir)
    texts = _adversarial_texts(400_000)
    data = workspace.write_rows("long.jsonl", [{"text": text} for text in texts.values()])
    config = workspace.config(
        data, type="completion", top='excess_length_strategy = "truncate"\nshuffle_merged_datasets = false'
    )
    result = preprocess(load_config(config), progress=False)
    assert result.metas["train"]["counts"]["truncated"] == {"longer_than_sequence_len": len(texts)}
    store = PreparedDataset(result.stores["train"])
    whole = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    for index, (name, text) in enumerate(texts.items()):
        expected = whole.encode(text).ids[:256]
        assert store[index][0].tolist() == expected, name


def test_truncate_keeps_a_huge_row_in_bounded_memory(preprocess_workspace: PreprocessWorkspace) -> None:
    data = preprocess_workspace.root / "huge.jsonl"
    data.write_text(json.dumps({"instruction": "long", "input": "", "output": "word " * 10_000_000}) + "\n")
    assert data.stat().st_size > 50_000_000
    config = preprocess_workspace.config(data, top='excess_length_strategy = "truncate"')
    code, peak_kib, _, err = _measured_cli(["preprocess", str(config), "--no-progress", "--no-doctor"], 300)
    assert code == 0, err
    # Tokenizing the whole row peaked at 5.0 GB.
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib} KiB"
    meta = preprocess(load_config(config), progress=False).metas["train"]
    assert meta["counts"]["truncated"] == {"longer_than_sequence_len": 1}
    assert meta["samples"] == 1


def test_a_damaged_arrow_file_that_panics_the_reader_is_one_clean_error(
    preprocess_workspace: PreprocessWorkspace, capfd: pytest.CaptureFixture[str]
) -> None:
    import io

    import pyarrow as pa

    buffer = io.BytesIO()
    table = pa.table({"text": ["a", "b"]})
    with pa.ipc.new_stream(buffer, table.schema) as writer:
        writer.write_table(table)
    damaged = bytearray(buffer.getvalue())
    # A buffer length flipped: arrow-ipc panics ("the offset of the new Buffer cannot exceed the
    # existing length") instead of returning an error.
    damaged[160] = 1
    data = preprocess_workspace.root / "data.arrow"
    data.write_bytes(bytes(damaged))
    config = preprocess_workspace.config(data, type="completion")
    with pytest.raises(
        AxrError, match=r"data\.arrow:1: -: the file is damaged \(the offset of the new Buffer"
    ):
        preprocess(load_config(config), progress=False)
    err = capfd.readouterr().err
    assert "panicked" not in err, err
    assert "RUST_BACKTRACE" not in err, err
