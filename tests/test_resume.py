"""Resuming: a run stopped by a signal and resumed equals an uninterrupted run, to the bit.

The interruption is a real SIGTERM/SIGINT sent to this process after a chosen update (the test
wraps the update function to send it, so the moment is exact); the training loop's own handler
finishes the update, saves ``resume.state`` and raises. Then ``train(..., resume=True)`` runs
to the end, and every metrics row and every weight must equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from conftest import ROOT, TINY, assert_same_run, digest, rows, tiny_config

from jumok.app.cli import main
from jumok.checkpoint import load_checkpoint
from jumok.config import load_config
from jumok.data.splits import write_pairs
from jumok.data.synthetic import generate
from jumok.decoding.translator import load
from jumok.errors import RunDirError
from jumok.training.resume import STATE_FILE, TrainingInterrupted, load_state, save_state
from jumok.training.train import train

# Everything that draws random numbers or carries state across updates: dropout, token
# batches, accumulation, a warm-up + cosine schedule, validations inside the epoch, keep-best.
BUSY = (
    "model.dropout.embeddings=0.2",
    "model.dropout.layers=0.2",
    "train.batch_type=tokens",
    "train.batch_size=300",
    "train.accumulate=2",
    "train.schedule.kind=cosine",
    "train.schedule.warmup_steps=4",
    "train.valid_every=5",
    "train.keep_best=2",
    "train.early_stopping.metric=loss",
)


class Lines:
    """A log that keeps its lines (and can be muted)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def losses(self) -> list[str]:
        return [line for line in self.lines if "train loss" in line]


def interrupt_after(monkeypatch, update: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process during update number ``update`` (from 1)."""
    import jumok.training.train as train_module

    real = train_module.accumulated_update
    calls = [0]

    def update_then_signal(*args, **kwargs):
        calls[0] += 1
        if calls[0] == update:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "accumulated_update", update_then_signal)


@pytest.mark.parametrize(
    ("extra", "update", "epoch", "signum"),
    [
        ((), 9, 1, signal.SIGTERM),  # mid-epoch, between validations (one per epoch)
        (BUSY, 17, 2, signal.SIGINT),  # 12 updates an epoch: the second, between validations
    ],
    ids=["plain", "dropout-tokens-accumulate-cosine"],
)
def test_signal_then_resume_equals_an_uninterrupted_run(
    tmp_path, monkeypatch, extra, update, epoch, signum
):
    cfg = tiny_config(*extra)
    whole, whole_log = tmp_path / "whole", Lines()
    train(cfg, whole, log=whole_log, progress=False)

    run, log = tmp_path / "run", Lines()
    interrupt_after(monkeypatch, update, signum)
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, run, log=log, progress=False, handle_signals=True)
    monkeypatch.undo()
    assert stop.value.exit_code == 128 + signum
    assert f"after update {update};" in str(stop.value)
    assert f"jumok train --resume {run}" in str(stop.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    saved = load_state(run / STATE_FILE)["progress"]
    assert (saved["step"], saved["epoch"]) == (update, epoch)

    result = train(cfg, run, log=log, progress=False, resume=True)
    assert any(line.startswith(f"resuming {run} at epoch") for line in log.lines)
    # The printed losses, digit for digit, and every row and weight, bit for bit.
    assert log.losses() and [_no_timing(x) for x in log.losses()] == [
        _no_timing(x) for x in whole_log.losses()
    ]
    assert_same_run(whole, run)
    assert [r.train_loss for r in result.history] == [r["train_loss"] for r in rows(whole)]
    if "train.keep_best=2" in extra:
        index = json.loads((run / "checkpoints/index.json").read_text())
        assert index == json.loads((whole / "checkpoints/index.json").read_text())


def _no_timing(line: str) -> str:
    return line.split("  (")[0]  # drop "(1.2 s, 3,456 target tok/s)"


def test_a_streaming_run_resumes_exactly(tmp_path, monkeypatch):
    pairs = generate("date", 400, seed=5)
    write_pairs(tmp_path / "train.tsv", pairs[:340])
    write_pairs(tmp_path / "dev.tsv", pairs[340:])
    cfg = tiny_config(
        f"data.train={tmp_path / 'train.tsv'}",
        f"data.dev={tmp_path / 'dev.tsv'}",
        "data.generate=null",
        "data.streaming=true",
        "data.shuffle_buffer=100",
    )
    quiet = {"log": lambda _: None, "progress": False}
    train(cfg, tmp_path / "whole", **quiet)
    # 14 updates an epoch, 4 per chunk of 100 pairs: update 20 is in the second epoch's second
    # chunk, so resuming replays a chunk and a half of the stream.
    interrupt_after(monkeypatch, 20)
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "run", handle_signals=True, **quiet)
    monkeypatch.undo()
    saved = load_state(tmp_path / "run" / STATE_FILE)["progress"]
    assert (saved["epoch"], saved["updates_in_epoch"]) == (2, 6)
    train(cfg, tmp_path / "run", resume=True, **quiet)
    assert_same_run(tmp_path / "whole", tmp_path / "run")


def test_resumed_logs_are_appended_and_rows_of_a_lost_stretch_dropped(tmp_path, monkeypatch):
    cfg = tiny_config("train.valid_every=4")
    run = tmp_path / "run"
    interrupt_after(monkeypatch, 10)
    with pytest.raises(TrainingInterrupted):
        train(cfg, run, log=lambda _: None, progress=False, handle_signals=True)
    monkeypatch.undo()
    first = (run / "metrics.jsonl").read_text()
    assert [r["step"] for r in rows(run)] == [4, 8]
    # A row written after the saved state (as when the process was killed just after it).
    with open(run / "metrics.jsonl", "a") as out:
        out.write(first.splitlines()[-1].replace('"step": 8', '"step": 12') + "\n")
    log = Lines()
    train(cfg, run, log=log, progress=False, resume=True)
    assert (run / "metrics.jsonl").read_text().startswith(first)
    assert [r["step"] for r in rows(run)] == [*range(4, 38, 4), 38]
    assert any("dropped 1 row(s) written after the saved state" in line for line in log.lines)
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step") and len(csv_lines) == 1 + 10


def test_a_finished_run_a_missing_state_and_a_conflicting_config_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_config("train.epochs=1")
    train(cfg, run, log=lambda _: None, progress=False)
    before = digest(run)
    with pytest.raises(
        RunDirError, match=r"run already finished \(update 19, epoch 1; it ended"
    ) as err:
        train(cfg, run, log=lambda _: None, progress=False, resume=True)
    assert f"jumok train --resume {run} --set train.epochs=2" in str(err.value)  # how to extend

    # The same through the command line, for an unfinished state with a conflicting --set.
    state = load_state(run / STATE_FILE)
    state["progress"]["finished"] = False
    save_state(run / STATE_FILE, state)
    before = digest(run)
    assert main(["train", "--resume", str(run), "--set", "train.lr=0.5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "conflicts with the run's: train.lr: run 0.001, given 0.5" in err
    assert "train.threads" in err  # says what may change
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory to resume" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "no run to resume (resume.state not found)" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give a CONFIG to start a run, or --resume RUN_DIR" in capsys.readouterr().err
    assert digest(run) == before


def test_a_run_without_state_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config("train.epochs=1"), run, log=lambda _: None, progress=False)
    (run / STATE_FILE).unlink()
    assert main(["train", "--resume", str(run)]) == 2
    assert "holds a run but no resumable state (resume.state)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: b[: len(b) // 2], r"truncated or extended: \d+ bytes of state, the header says"),
        (lambda b: b[:-10] + bytes(10), r"damaged: the checksum \(SHA-256\) does not match"),
        (lambda b: b"PK\x03\x04" + b[4:], r"not a jumok resumable state \(expected a file"),
        (
            lambda b: b.replace(b'"format_version": 1', b'"format_version": 99', 1),
            r"resumable state format version 99; this jumok reads version 1",
        ),
    ],
    ids=["truncated", "bit-rot", "foreign", "other-version"],
)
def test_a_damaged_state_gives_a_clear_error(tmp_path, damage, expected):
    path = tmp_path / STATE_FILE
    save_state(path, {"progress": {"step": 3}, "w": torch.arange(1000.0)})
    assert load_state(path)["progress"] == {"step": 3}
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RunDirError, match=expected) as err:
        load_state(path)
    assert str(path) in str(err.value)


def test_resume_from_the_command_line_continues_in_the_same_directory(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text((ROOT / "examples/date.yaml").read_text())
    overrides = [x for item in TINY for x in ("--set", item)]
    run = tmp_path / "run"
    # SIGINT during update 20 (the second epoch's first) of a command-line run.
    import jumok.training.train as train_module

    real = train_module.accumulated_update
    calls = [0]

    def update_then_signal(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    train_module.accumulated_update = update_then_signal
    try:
        code = main(["train", str(config), *overrides, "--run-dir", str(run), "--no-progress"])
    finally:
        train_module.accumulated_update = real
    out = capsys.readouterr()
    assert code == 130
    assert f"Continue with: jumok train --resume {run}" in out.err
    # Resuming with the same CONFIG and --set is allowed; so is changing train.threads.
    code = main(
        ["train", str(config), *overrides, "--set", "train.threads=2", "--resume", str(run)]
        + ["--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    assert f"run directory: {run}" in capsys.readouterr().out
    assert [r["step"] for r in rows(run)] == [19, 38]


# ------------------------------------------------------------- a signal before any validation
def test_a_signal_before_the_first_validation_leaves_weights_that_translate(tmp_path, monkeypatch):
    cfg = tiny_config()
    run = tmp_path / "run"
    interrupt_after(monkeypatch, 3, signal.SIGINT)  # validations come at update 19
    with pytest.raises(TrainingInterrupted):
        train(cfg, run, log=lambda _: None, progress=False, handle_signals=True)
    monkeypatch.undo()
    assert not (run / "metrics.jsonl").exists() and not (run / "best.safetensors").exists()
    # last.safetensors holds the weights as they were saved in resume.state, after update 3.
    checkpoint = load_checkpoint(run / "last.safetensors")
    assert checkpoint.info == {"epoch": 1, "step": 3, "interrupted": True}
    state = load_state(run / STATE_FILE)["model"]
    assert all(torch.equal(state[k], v) for k, v in checkpoint.state_dict.items())
    assert load(run, which="last").translate(["september 27, 1994"])[0].tokens
    # Resuming still ends exactly where an uninterrupted run does.
    train(cfg, run, log=lambda _: None, progress=False, resume=True)
    train(cfg, tmp_path / "whole", log=lambda _: None, progress=False)
    assert_same_run(tmp_path / "whole", run)


# ------------------------------------------------------------------ a finished run, extended
def test_a_finished_run_trains_further_when_its_epochs_are_raised(tmp_path, capsys):
    run, whole = tmp_path / "run", tmp_path / "whole"
    train(tiny_config("train.epochs=1"), run, log=lambda _: None, progress=False)
    train(tiny_config(), whole, log=lambda _: None, progress=False)  # 2 epochs in one go
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        f"extending the finished run {run} (train.epochs 1 -> 2): continuing after update 19, "
        "the end of epoch 1/2"
    ) in out
    # The extra epoch is trained and its row appended; with a constant learning rate the
    # extended run is the two-epoch run, to the bit.
    assert [r["step"] for r in rows(run)] == [19, 38]
    assert_same_run(whole, run)
    assert load_config(run / "config.yaml").train.epochs == 2  # the run's config says so now
    assert load_state(run / STATE_FILE)["progress"]["finished"] is True
    # Once more without a larger budget: refused, saying how to extend it.
    before = digest(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the run already finished (update 38, epoch 2; it ended at train.epochs: 2)" in err
    assert f"jumok train --resume {run} --set train.epochs=3" in err
    assert digest(run) == before


def test_a_run_that_stopped_at_max_steps_continues_with_more_steps(tmp_path):
    run, log = tmp_path / "run", Lines()
    train(tiny_config("train.max_steps=10"), run, log=log, progress=False)
    # Raising the epochs does not help: the run ended at its 10 updates.
    with pytest.raises(RunDirError, match=r"it ended at train.max_steps: 10\).*max_steps=20"):
        train(tiny_config("train.max_steps=10", "train.epochs=3"), run, log=log, resume=True)
    train(tiny_config("train.max_steps=25"), run, log=log, progress=False, resume=True)
    assert any(
        "(train.max_steps 10 -> 25): continuing at epoch 1/2, update 10" in x for x in log.lines
    )
    assert [r["step"] for r in rows(run)] == [10, 19, 25]
    # Validating at update 10 changed nothing that is trained: the weights of a 25-update run.
    train(tiny_config("train.max_steps=25"), tmp_path / "whole", log=log, progress=False)
    a, b = (load_checkpoint(r / "last.safetensors").state_dict for r in (run, tmp_path / "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_early_stopped_run_or_other_changes_are_not_extended(tmp_path):
    quiet = {"log": lambda _: None, "progress": False}
    stopped = ("train.early_stopping.target=0.0", "train.epochs=1")  # stops at validation 1
    train(tiny_config(*stopped), tmp_path / "early", **quiet)
    with pytest.raises(RunDirError, match=r"stopped early \(train.early_stopping\)"):
        train(tiny_config(*stopped[:1], "train.epochs=3"), tmp_path / "early", resume=True, **quiet)
    train(tiny_config("train.epochs=1"), tmp_path / "run", **quiet)
    with pytest.raises(RunDirError, match=r"conflicts with the run's: train.lr: run 0.001, given"):
        train(
            tiny_config("train.epochs=2", "train.lr=0.01"), tmp_path / "run", resume=True, **quiet
        )
