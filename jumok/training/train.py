"""The training loop: a prepared run, its epochs, validations, and a reason to stop.

:func:`train` is the entry point. It reads like this:

- :func:`~jumok.training.setup.prepare_run`: data, vocabularies, model, optimizer, schedule and
  where the run stands (new, or resumed from its ``resume.state``);
- :func:`run_epoch`: the epoch's updates (:func:`~jumok.training.update.accumulated_update`),
  each followed by the bookkeeping that decides whether to validate, save or stop;
- :class:`~jumok.training.validation.Validator`: dev scores, metrics, checkpoints, early
  stopping;
- :class:`ProgressShown`: the progress between validations (a bar at a terminal, plain lines
  with the time left in a log);
- :func:`stop_reason`: a spent budget or early stopping ends the run; a signal saves a
  resumable state and raises (:func:`stop_if_signalled`).

What a run writes is described in :mod:`jumok.training.rundir`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from jumok.config import Config
from jumok.data.splits import Batch, Pair, iterate_batches, streamed_batches
from jumok.data.vocab import Vocab
from jumok.errors import DivergedError, WriteError
from jumok.fast import runtime
from jumok.training.card import write_card
from jumok.training.distributed import World, current_world
from jumok.training.resume import (
    STATE_FILE,
    SignalGuard,
    TrainingInterrupted,
    load_resumable,
    resume_command,
)
from jumok.training.rundir import RUN_MARKERS, clear, prepare_run_dir
from jumok.training.setup import Run, prepare_run, resolve_device, seed_everything
from jumok.training.update import (
    accumulated_update,
    autocast,
    clip_gradients,
    grouped,
    loss_fn,
    make_optimizer,
)
from jumok.training.validation import (
    DevScores,
    EpochRecord,
    ValidationRecord,
    Validator,
    evaluate,
)

# Names kept importable from here: the entry point's module is where callers look for them.
__all__ = [
    "RUN_MARKERS",
    "DevScores",
    "EpochRecord",
    "TrainResult",
    "ValidationRecord",
    "accumulated_update",
    "autocast",
    "clip_gradients",
    "evaluate",
    "iterate_batches",
    "loss_fn",
    "make_optimizer",
    "prepare_run_dir",
    "resolve_device",
    "seed_everything",
    "train",
]

# Updates between two trims of the C heap while training (see release_free_memory).
TRIM_EVERY = 50
# Seconds between two plain progress lines (a log or CI; a terminal shows a bar instead).
PROGRESS_EVERY_SECONDS = 30.0


@dataclass
class TrainResult:
    """What :func:`train` returns: the run's validations, how it stopped, and what a caller
    needs to translate the test split."""

    run_dir: Path
    history: list[EpochRecord]
    best_exact_match: float
    stopped_by_budget: bool
    stopped_early: bool
    src_vocab: Vocab
    tgt_vocab: Vocab
    test_pairs: list[Pair]


def _print(line: str) -> None:
    """The default log: standard output, flushed at once (a redirected log is block-buffered)."""
    print(line, flush=True)


def train(
    cfg: Config,
    run_dir: str | Path,
    log: Callable[[str], None] = _print,
    progress: bool = True,
    resume: bool = False,
    handle_signals: bool = False,
) -> TrainResult:
    """Train the model described by ``cfg`` and write the run into ``run_dir``.

    Args:
        log: where the run's lines go (validations, and the progress lines of
            :class:`ProgressShown`); by default standard output, flushed line by line.
        progress: a progress bar updated in place when standard error is a terminal; without
            one (a log file, CI) or with ``progress=False``, a plain line on ``log`` every
            :data:`PROGRESS_EVERY_SECONDS` instead.
        resume: continue the unfinished run in ``run_dir`` from its ``resume.state``; ``cfg``
            must be the run's config (see :func:`jumok.training.resume.load_resumable`). The result is
            the one an uninterrupted run gives. A finished run continues when ``cfg`` raises the
            budget that ended it (train.epochs, train.max_steps or train.max_seconds).
        handle_signals: the first SIGINT/SIGTERM finishes the current update, saves a
            resumable state and raises :class:`~jumok.training.resume.TrainingInterrupted`; a second
            exits at once (``jumok train`` sets this).

    Inside a ``torch.distributed`` process group (``torchrun``; see jumok.training.distributed), every
    process calls this with the same arguments; they train one model on the shared global batch
    and only rank 0 writes ``run_dir`` and calls ``log``.

    Raises:
        RunDirError: ``run_dir`` already holds a run (or, with ``resume``, cannot be resumed).
        WriteError: a file could not be written (a full disk); what was on disk is unchanged.
    """
    run_dir = Path(run_dir)
    world = current_world()
    saved, created, made = None, False, []
    if not world.is_main:
        log, progress = _quiet, False
    elif resume:
        # Read onto the CPU: the RNG states must be CPU tensors, and loading the model and
        # optimizer state dicts copies each tensor to its parameter's device.
        saved = load_resumable(run_dir, cfg)
    else:
        made = [f for f in (run_dir, *run_dir.parents) if not f.exists()]  # innermost first
        created = bool(made) or (run_dir.is_dir() and not any(run_dir.iterdir()))
        prepare_run_dir(run_dir)
    if resume:
        saved = world.broadcast(saved)  # the other ranks may not see rank 0's disk
    with SignalGuard(run_dir, enabled=handle_signals) as signals:
        signals.preparing, signals.resumable = True, saved is not None
        try:
            return _train(cfg, run_dir, log, progress, saved, signals, world)
        except BaseException as err:
            if not (run_dir / STATE_FILE).exists():
                # Failed before the run's first saved state (bad data, no memory for the
                # model, a signal while preparing): take back what this call made, so that
                # fixing the cause and re-running just works.
                if created:
                    _take_back(run_dir, made)
                raise
            if isinstance(err, WriteError):
                raise WriteError(
                    f"{err}. Once there is room, continue from the last saved state with: "
                    f"{resume_command(run_dir)}"
                ) from None
            raise


def _take_back(run_dir: Path, made: list[Path]) -> None:
    """Empty ``run_dir`` and remove the folders of ``made`` (those this call created)."""
    clear(run_dir)
    for folder in made:
        with contextlib.suppress(OSError):  # not empty (another process wrote there): keep it
            folder.rmdir()


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


def _train(
    cfg: Config,
    run_dir: Path,
    log: Callable[[str], None],
    progress: bool,
    saved: dict | None,
    signals: SignalGuard,
    world: World,
) -> TrainResult:
    """Prepare the run (new, or ``saved``), then train epoch after epoch until a reason to stop."""
    launched = time.perf_counter()  # train.max_seconds counts from here, preparation included
    run = prepare_run(cfg, run_dir, log, saved, world, launched)
    validator = Validator(run, log)
    p, last_epoch = run.progress, cfg.train.epochs
    if saved is None or "extended" in saved:
        run.save_state()  # resumable from the very start (an extended run: with its new budget)
    signals.preparing = False  # from here a signal finishes the update and saves the state
    budget = reason = None
    shown = ProgressShown(run, log, progress)
    try:
        stop_if_signalled(run, signals)
        for epoch in range(p.epoch, last_epoch + 1):
            budget = run_epoch(run, epoch, validator, signals, shown)
            if p.validated_at != p.step and (not cfg.train.valid_every or epoch == last_epoch):
                validator.validate(epoch)  # the epoch's last updates (valid_every: the run's)
            reason = stop_reason(run, validator, budget)
            if reason:
                log(reason)
                break
            if epoch < last_epoch:
                p.begin_epoch(epoch + 1, run.generator.get_state())
                run.save_state()
                stop_if_signalled(run, signals)
        p.finished, p.spent = True, spent_budgets(run, validator, budget, reason)
        run.save_state()  # a finished run is resumed only with a larger budget (resume.py)
        if run.files is not None:
            run.files.draw_curve_if_behind(p.history)
            write_card(run_dir)  # RUN/README.md: the model card `jumok info` prints
    finally:
        if run.files is not None:
            run.files.close()
    history = [EpochRecord(**row) for row in p.history]
    return TrainResult(
        run_dir=run_dir,
        history=history,
        best_exact_match=max((r.dev_exact_match or 0.0 for r in history), default=0.0),
        stopped_by_budget=budget is not None,
        stopped_early=validator.stopped_early,
        src_vocab=run.vocabs.src_vocab,
        tgt_vocab=run.vocabs.tgt_vocab,
        test_pairs=run.splits.test,
    )


# ------------------------------------------------------------------------------ one epoch
def run_epoch(
    run: Run, epoch: int, validator: Validator, signals: SignalGuard, shown: ProgressShown
) -> str | None:
    """Train ``epoch`` from where it stands (a resumed run skips the updates already done).

    After each update: show the progress (``shown``), validate every ``train.valid_every``
    updates, save the resumable state after a validation and every ``train.resume_every``
    updates, and stop at a spent budget or when a validation ends the run
    (``validator.stopped_early``).

    Returns:
        The budget that ran out (see :func:`budget_spent`), or None.
    """
    t, p = run.cfg.train, run.progress
    run.model.train()
    bar = tqdm(
        itertools.islice(
            grouped(epoch_batches(run, epoch), t.accumulate), p.updates_in_epoch, None
        ),
        total=run.updates_per_epoch,
        initial=p.updates_in_epoch,
        desc=f"epoch {epoch}/{t.epochs}",
        disable=not shown.bar,
        leave=False,
        file=sys.stderr,
        mininterval=0.5,
    )
    with contextlib.closing(bar):
        for group in bar:
            _update(run, group)
            shown.after_update(bar, epoch)
            budget = budget_spent(run)
            validated = bool(budget or (t.valid_every and p.step % t.valid_every == 0))
            if validated:
                validator.validate(epoch)
            if budget or validator.stopped_early:
                return budget
            if validated or (t.resume_every and p.step % t.resume_every == 0):
                run.save_state()
            stop_if_signalled(run, signals)
    return None


def epoch_batches(run: Run, epoch: int) -> Iterator[Batch]:
    """The batches of ``epoch``, from its start.

    They depend only on the generator's state when the epoch began: resuming mid-epoch rebuilds
    them and skips the updates already done (see jumok.training.resume).
    """
    d, t = run.cfg.data, run.cfg.train
    by_tokens = t.batch_type == "tokens"
    run.generator.set_state(run.progress.epoch_data_rng)
    if d.streaming:
        return streamed_batches(
            d,
            run.vocabs.held_out,
            run.encode,
            t.batch_size,
            t.bucketing,
            by_tokens,
            run.generator,
            t.seed + epoch,
            run.streamed_dropped,
        )
    return iterate_batches(
        run.train_data, t.batch_size, True, t.bucketing, run.generator, by_tokens
    )


def _update(run: Run, group: list[Batch]) -> None:
    """One optimizer update from ``group`` (train.accumulate batches), and its bookkeeping."""
    p = run.progress
    loss_sum, n_tokens = accumulated_update(
        run.model, run.optimizer, group, run.cfg.train, run.device, run.world
    )
    if not math.isfinite(loss_sum):
        raise DivergedError(
            f"the training loss is {loss_sum} at update {p.step + 1}: the weights diverged, so "
            f"the run stops here (lower train.lr, now {run.schedule.lr:g}, or set "
            "train.clip_grad_norm); every file saved before it is kept as it was"
        )
    run.schedule.after_update()
    p.step += 1
    p.updates_in_epoch += 1
    p.since_loss += loss_sum
    p.since_tokens += n_tokens
    if p.step % TRIM_EVERY == 0:
        runtime.release_free_memory()


class ProgressShown:
    """The progress between validations: train loss, speed, learning rate, time left.

    At a terminal (standard error is one, and ``progress`` is on) a tqdm bar updated in place;
    anywhere else (a log file, CI), or with ``progress`` off, one plain line on ``log`` every
    :data:`PROGRESS_EVERY_SECONDS`, with the time left for the whole run (see :meth:`eta`).
    """

    def __init__(self, run: Run, log: Callable[[str], None], progress: bool):
        self.run, self.log = run, log
        self.bar = progress and _is_terminal(sys.stderr)
        self.began, self.first_step = time.perf_counter(), run.progress.step
        self.shown_at = self.began

    def after_update(self, bar: tqdm, epoch: int) -> None:
        """Refresh the bar, or log a line when the last one is PROGRESS_EVERY_SECONDS old."""
        if self.bar:
            bar.set_postfix(**self.figures(), refresh=False)
            return
        now = time.perf_counter()
        if now - self.shown_at < PROGRESS_EVERY_SECONDS:
            return
        self.shown_at = now
        run, p = self.run, self.run.progress
        figures = "  ".join(f"{k.replace('_', '/')} {v}" for k, v in self.figures().items())
        self.log(
            f"epoch {epoch}/{run.cfg.train.epochs}  update {p.updates_in_epoch:,}/"
            f"{run.updates_per_epoch:,} (step {p.step:,})  {figures}  "
            f"elapsed {_clock(now - run.start)}  left {self.eta(now)}"
        )

    def figures(self) -> dict[str, str]:
        """Train loss, target tokens/s and learning rate since the last validation."""
        p = self.run.progress
        elapsed = time.perf_counter() - self.run.since
        return {
            "loss": f"{p.since_loss / max(p.since_tokens, 1):.4f}",
            "tok_s": f"{p.since_tokens / max(elapsed, 1e-9):,.0f}",
            "lr": f"{self.run.schedule.lr:.2e}",
        }

    def eta(self, now: float) -> str:
        """Time to the end of the run: the updates left (train.epochs or train.max_steps,
        whichever ends first) at this process's pace so far, validations included, or the rest
        of train.max_seconds if that ends sooner. Early stopping may end it before."""
        run, t, p = self.run, self.run.cfg.train, self.run.progress
        total = t.epochs * run.updates_per_epoch
        if t.max_steps:
            total = min(total, t.max_steps)
        done = p.step - self.first_step
        left = (total - p.step) * (now - self.began) / done if done > 0 else math.inf
        if t.max_seconds:
            left = min(left, max(t.max_seconds - (now - run.start), 0.0))
        return _clock(left) if math.isfinite(left) else "?"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --------------------------------------------------------------------------- why it stops
def budget_spent(run: Run) -> str | None:
    """The budget the last update used up: ``"train.max_steps"``, ``"the wall-clock budget"``
    (train.max_seconds), or None.

    Every rank asks about the clock (a collective call) so that all stop after the same update.
    """
    t = run.cfg.train
    out_of_time = bool(t.max_seconds) and run.world.any(
        time.perf_counter() - run.start >= t.max_seconds
    )
    if t.max_steps and run.progress.step >= t.max_steps:
        return "train.max_steps"
    return "the wall-clock budget" if out_of_time else None


def stop_reason(run: Run, validator: Validator, budget: str | None) -> str | None:
    """Why training ends after this epoch, as the line to log; None to go on.

    A spent ``budget`` (:func:`budget_spent`) first; then early stopping, when a validation
    reached ``train.early_stopping.target`` or ran out of its ``patience``.
    """
    es, step, best = run.cfg.train.early_stopping, run.progress.step, run.stopper.best
    if budget:
        return f"stopped at {budget} (step {step})"
    if not validator.stopped_early:
        return None
    if run.stopper.reached_target:
        return (
            f"stopped: dev {es.metric} {best:.4f} reached "
            f"train.early_stopping.target {es.target} (step {step})"
        )
    return (
        f"stopped early: dev {es.metric} did not improve for "
        f"{es.patience} validations (best {best:.4f})"
    )


def spent_budgets(
    run: Run, validator: Validator, budget: str | None, reason: str | None
) -> list[str]:
    """What ended a finished run, as ``Progress.spent`` keeps it (see resume.extend_finished)."""
    t, p = run.cfg.train, run.progress
    spent = []
    if reason is None or (p.epoch >= t.epochs and p.updates_in_epoch >= run.updates_per_epoch):
        spent.append("train.epochs")  # the loop ran out of epochs
    if t.max_steps and p.step >= t.max_steps:
        spent.append("train.max_steps")
    if budget == "the wall-clock budget":
        spent.append("train.max_seconds")
    if validator.stopped_early:
        spent.append("train.early_stopping")
    return spent


def stop_if_signalled(run: Run, signals: SignalGuard) -> None:
    """After a SIGINT/SIGTERM: save the resumable state and the weights as they are
    (last.safetensors, so that a run stopped before its first validation can translate), and
    raise TrainingInterrupted.

    torchrun passes a signal to every rank, not always between the same two updates: every rank
    asks whether any was signalled (a collective call).
    """
    if run.world.any(signals.received is not None):
        run.save_state()
        if run.world.is_main:
            p = run.progress
            info = {"epoch": p.epoch, "step": p.step, "interrupted": True}
            run.save_checkpoint(run.run_dir / "last.safetensors", info)
        raise TrainingInterrupted(
            signals.received or signal.SIGTERM, run.run_dir, run.progress.step
        )
