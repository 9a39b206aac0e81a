"""Faults: kill -9 at random moments, a second signal, a full disk.

After each fault the run directory must hold only complete files (every checkpoint and the
resumable state load), and resuming must end where an uninterrupted run ends.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import QUIET, ROOT, TINY, assert_same_run, budget, tiny_config

import jumok.checkpoint
from jumok.app.cli import main
from jumok.checkpoint import load_checkpoint
from jumok.config import load_config
from jumok.errors import WriteError
from jumok.training.resume import STATE_FILE, load_resumable, load_state
from jumok.training.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jumok", "train", *args, "--no-progress"]


def overrides(*extra: str) -> list[str]:
    return [x for item in (*TINY, *extra) for x in ("--set", item)]


def assert_complete(run: Path) -> int:
    """Every file a run keeps can be read in full; returns the saved state's update."""
    for checkpoint in run.rglob("*.safetensors"):
        load_checkpoint(checkpoint)
    for name in ("metrics.jsonl",):
        if (run / name).exists():
            for line in (run / name).read_text(encoding="utf-8").splitlines():
                json.loads(line)
    return load_state(run / STATE_FILE)["progress"]["step"]


def wait_for_new_state(run: Path, alive: Callable[[], bool], after_ns: int, limit: float = 60):
    """Until the process has saved a resumable state newer than ``after_ns`` (or ended)."""
    deadline = time.monotonic() + budget(limit)
    while time.monotonic() < deadline and alive():
        try:
            if (run / STATE_FILE).stat().st_mtime_ns > after_ns:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def start_training(argv: list[str]) -> multiprocessing.Process:
    """``jumok train ARGV`` in a child process forked from this one (torch already imported,
    so it starts at once), its output discarded."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(argv,))
    child.start()
    return child


def _child(argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os._exit(main(["train", *argv, "--no-progress"]))


@pytest.mark.slow
@pytest.mark.timing
def test_kill_9_at_random_moments_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    extra = ("train.epochs=8", "train.resume_every=2")
    whole = tmp_path / "whole"
    began = time.monotonic()
    train(tiny_config(*extra), whole, **QUIET)
    # Each kill lands at most 1/16 of a whole run after a save, so four kills cannot reach
    # the end of training however fast (or slow) this machine is.
    window = (time.monotonic() - began) / 16

    run = tmp_path / "run"
    start = [str(ROOT / "examples/date.yaml"), *overrides(*extra), "--run-dir", str(run)]
    moments = random.Random(9)
    saved_steps = []
    for attempt in range(4):
        before = (run / STATE_FILE).stat().st_mtime_ns if attempt else 0
        child = start_training(start if attempt == 0 else ["--resume", str(run)])
        wait_for_new_state(run, child.is_alive, before)
        # Anywhere after that: an update, a validation, the learning curve, a save.
        time.sleep(moments.uniform(0.0, window))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL  # killed, not finished
        saved_steps.append(assert_complete(run))  # never a half-written file
    assert saved_steps == sorted(saved_steps), saved_steps

    log: list[str] = []
    train(load_config(run / "config.yaml"), run, log=log.append, progress=False, resume=True)
    assert any(line.startswith("resuming") for line in log)
    assert not list(run.glob(".*.tmp*"))  # what a killed write left is cleared
    assert_same_run(whole, run)


def test_a_second_signal_exits_at_once_and_leaves_every_file_complete(tmp_path):
    run = tmp_path / "run"
    # Slower updates (hidden 64, 200 pairs a batch), so that the second signal lands mid-update.
    extra = ("model.encoder.hidden_size=64", "model.decoder.hidden_size=64", "train.epochs=50")
    cmd = cli(
        str(ROOT / "examples/date.yaml"),
        *overrides(*extra, "train.batch_size=200"),
        "--run-dir",
        str(run),
    )
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_new_state(run, lambda: proc.poll() is None, 0)
    proc.send_signal(signal.SIGTERM)
    first = proc.stderr.readline() + proc.stderr.readline()  # a blank line, then the notice
    assert b"SIGTERM: finishing the current update" in first, first
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=budget(60))
    assert proc.returncode == 143, rest.decode()
    assert f"SIGTERM again: exiting at once. Every file in {run} is complete" in rest.decode()
    assert f"jumok train --resume {run}" in rest.decode()
    step = assert_complete(run)
    # What was saved last is resumable (resuming itself is tested above).
    state = load_resumable(run, load_config(run / "config.yaml"))
    assert state["progress"]["step"] == step and not state["progress"]["finished"]


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = tiny_config("train.valid_every=7")
    whole = tmp_path / "whole"
    train(cfg, whole, **QUIET)

    run = tmp_path / "run"
    real_write = jumok.checkpoint._write_all
    state = {"armed": False, "before": None}

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def disk_fills_during_a_checkpoint(f, payload: bytes) -> None:
        # A safetensors file starts with its header's length, then '{'. The disk fills halfway.
        if state["armed"] and payload[8:9] == b"{":
            state["before"] = {n: sha256(run / n) for n in ("last.safetensors", "best.safetensors")}
            real_write(f, payload[: len(payload) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, payload)

    def log(line: str) -> None:
        if line.startswith("epoch 1/2 step 7 "):
            state["armed"] = True  # the next validation's checkpoint will not fit

    monkeypatch.setattr(jumok.checkpoint, "_write_all", disk_fills_during_a_checkpoint)
    with pytest.raises(WriteError) as failure:
        train(cfg, run, log=log, progress=False)
    message = str(failure.value)
    assert f"{run / 'last.safetensors'}: cannot write (No space left on device)" in message
    assert "the previous last.safetensors, if any, is unchanged" in message
    assert f"continue from the last saved state with: jumok train --resume {run}" in message
    assert {n: sha256(run / n) for n in state["before"]} == state["before"]
    assert not list(run.glob(".*.tmp*"))  # the half-written temporary file is gone
    assert assert_complete(run) == 7

    monkeypatch.undo()  # room again: the run continues and ends as if nothing had happened
    train(cfg, run, resume=True, **QUIET)
    assert_same_run(whole, run)
