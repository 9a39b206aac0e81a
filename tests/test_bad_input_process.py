"""Hostile conditions around the process itself: closed standard streams, a reader that goes away,
signals in the first second and while the data is prepared, a budget that counts from launch, a
loss that becomes NaN and a model too large for memory. Each ends with one line (or, for a
broken pipe, silently with status 141), never a traceback, and leaves a run directory usable."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MATRIX_PAIRS, MATRIX_TINY, QUIET, ROOT, budget, digest, small_config

from jumok.app.cli import main
from jumok.training import setup as training_setup
from jumok.training import train as train_module
from jumok.training.train import train

JUMOK = [sys.executable, "-m", "jumok"]


def jumok(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*JUMOK, *argv], capture_output=True, timeout=120, cwd=ROOT, **kwargs)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("process") / "run"
    train(small_config("train.epochs=1"), run, **QUIET)
    return run


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """An input whose output as JSON lines (about 1 MB: each holds its attention matrix) is far
    more than a pipe holds."""
    path = tmp_path_factory.mktemp("inputs") / "many.txt"
    path.write_text("Jan 2, 2003\n" * 200, encoding="utf-8")
    return path


def test_closed_stdin_is_one_line(run):
    done = jumok("translate", str(run), stdin=subprocess.DEVNULL, pass_fds=())
    assert done.returncode == 0  # an empty stdin: nothing to translate, said once
    closed = subprocess.run(
        [*JUMOK, "translate", str(run)],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        preexec_fn=lambda: os.close(0),
    )
    err = closed.stderr.decode()
    assert closed.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("jumok: error: standard input is closed")


def test_closed_stdout_is_one_line(run, tmp_path):
    (tmp_path / "in.txt").write_text("Jan 2, 2003\n")
    done = subprocess.run(
        [*JUMOK, "translate", str(run), "--input", str(tmp_path / "in.txt")],
        stdout=None,
        stderr=subprocess.PIPE,
        timeout=120,
        cwd=ROOT,
        preexec_fn=lambda: os.close(1),
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert "standard output is closed" in err


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_reader_that_goes_away_ends_quietly_with_141(run, many, unbuffered):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"} if unbuffered else None
    jumok_proc = subprocess.Popen(
        [*JUMOK, "translate", str(run), "--input", str(many), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert jumok_proc.stdout.readline().strip()  # like `| head -1`: one line, then go away
    jumok_proc.stdout.close()
    err = jumok_proc.stderr.read().decode()
    assert jumok_proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_unbuffered_output_to_a_slow_reader_is_complete(run, many):
    """Python's unbuffered text output drops the tail of a partial write; jumok's does not."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*JUMOK, "translate", str(run), "--input", str(many), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    time.sleep(1)  # let the writer fill the pipe before anything is read
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert len(out.splitlines()) == 200


def test_ctrl_c_in_the_first_second_is_one_line(tmp_path):
    """SIGINT while the modules load (before any command runs): no traceback, status 130."""
    (tmp_path / "tiny.yaml").write_text(MATRIX_TINY)
    (tmp_path / "pairs.tsv").write_text(MATRIX_PAIRS)
    for delay in (0.2, 0.6, 1.0):
        proc = subprocess.Popen(
            [
                *JUMOK,
                "train",
                str(tmp_path / "tiny.yaml"),
                "--run-dir",
                str(tmp_path / f"r{delay}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        text = err.decode()
        if proc.returncode == -signal.SIGINT:
            continue  # the signal came before Python itself had started: nothing of jumok ran
        assert "Traceback" not in text, (delay, text)
        if proc.returncode != 0:  # it may have finished the tiny run before the signal
            assert proc.returncode == 130, (delay, proc.returncode, text)
            assert text.strip().splitlines()[-1].startswith("jumok: "), text


def test_sigterm_while_the_data_is_generated_stops_at_once(tmp_path):
    """Generating a million additions takes about half a minute here; SIGTERM stops it at once,
    says there is nothing to resume, and leaves the run directory free for the same command."""
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            *JUMOK,
            "train",
            str(ROOT / "examples" / "date.yaml"),
            "--run-dir",
            str(run_dir),
            "--set",
            "data.generate.task=addition",
            "--set",
            "data.generate.size=1000000",
            "--no-progress",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the generation
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    text = err.decode()
    assert proc.returncode == 143, text
    assert "while preparing the run" in text and "nothing was saved" in text
    assert "--resume" not in text and "Traceback" not in text
    assert took < budget(5), f"stopped {took:.1f} s after the signal"
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_the_time_budget_counts_from_launch(tmp_path):
    """train.max_seconds covers preparing the data: a budget already spent when training would
    begin stops the run after its first update."""
    started = time.perf_counter()
    result = train(
        small_config("data.generate.size=60000", "train.max_seconds=0.01", "train.epochs=5"),
        tmp_path / "r",
        **QUIET,
    )
    assert result.stopped_by_budget
    assert len(result.history) == 1 and time.perf_counter() - started < budget(60)


def test_a_non_finite_loss_stops_training_with_one_line(tmp_path, monkeypatch, capsys):
    real = train_module.accumulated_update
    calls = []

    def diverging(*args, **kwargs):
        loss, tokens = real(*args, **kwargs)
        calls.append(loss)
        return (math.nan if len(calls) >= 3 else loss), tokens

    monkeypatch.setattr(train_module, "accumulated_update", diverging)
    (tmp_path / "tiny.yaml").write_text(MATRIX_TINY)
    (tmp_path / "pairs.tsv").write_text(MATRIX_PAIRS)
    code = main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(tmp_path / "r"),
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "jumok: error: the training loss is nan at update 3" in err
    metrics = tmp_path / "r" / "metrics.jsonl"
    assert not metrics.exists() or "NaN" not in metrics.read_text()


def test_a_model_too_large_for_memory_is_one_line_and_frees_the_run_dir(
    tmp_path, monkeypatch, capsys
):
    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 400000000000 bytes."
        )

    monkeypatch.setattr(training_setup, "build_model", no_memory)
    (tmp_path / "tiny.yaml").write_text(MATRIX_TINY)
    (tmp_path / "pairs.tsv").write_text(MATRIX_PAIRS)
    argv = ["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(tmp_path / "r")]
    before = digest(tmp_path)
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "do not fit in memory" in err and "model.encoder" in err and "Traceback" not in err
    assert digest(tmp_path) == before  # the run dir holds nothing: the same command can run
    monkeypatch.undo()
    assert main([*argv, "--no-progress"]) == 0
