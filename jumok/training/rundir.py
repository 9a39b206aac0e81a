"""The run directory: what a training run writes, and the guard that keeps one run per folder.

A run directory holds everything about one run::

    config.yaml        the resolved config (after --set overrides)
    vocab.json         source and target vocabularies
    data/              the splits used: dev and test as .tsv, .src and .tgt (train too when
                       generated), splits.json: where each came from, what was dropped
    metrics.jsonl      one JSON object per validation (every epoch, or every train.valid_every
                       updates); metrics.csv holds the same table. dev_bleu and dev_chrf are
                       null on generated data unless early stopping reads them
    learning_curve.png loss and dev scores so far, redrawn at validations at most every
                       CURVE_EVERY_SECONDS, and at the end
    best.safetensors   weights + config + vocabularies with the best dev score
                       (train.early_stopping.metric)
    last.safetensors   the same, after the latest validation (and as they are, on SIGINT/SIGTERM)
    checkpoints/       the k best (train.keep_best > 1)
    resume.state       everything needed to continue the run exactly (see jumok.training.resume)
    tensorboard/       the same metrics as TensorBoard events, when tensorboard is installed

Every file is written atomically (a temporary file, then a rename; see jumok.checkpoint), so an
interruption at any moment leaves each file either as it was or complete. A directory that
already holds a run is never reused: :func:`prepare_run_dir` refuses it; ``train(...,
resume=True)`` (``jumok train --resume RUN_DIR``) continues an unfinished one, or a finished one
given a larger budget.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jumok.checkpoint import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    remove_temporary_files,
)
from jumok.config import Config, DataConfig, config_to_yaml
from jumok.data.splits import Splits, pairs_text
from jumok.errors import RunDirError
from jumok.training.resume import STATE_FILE, keep_first_rows, resume_command

RUN_MARKERS = (
    "config.yaml",
    "metrics.jsonl",
    "best.safetensors",
    "last.safetensors",
    STATE_FILE,
)

# learning_curve.png is redrawn at a validation only if the last drawing is at least this old
# (drawing takes ~0.3 s, more than a validation of the date task), and always at the end.
CURVE_EVERY_SECONDS = 20.0


# ------------------------------------------------------------------------ one run per folder
def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir``, refusing one that already holds a run."""
    refuse_taken_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{run_dir}: cannot create the run directory ({err.strerror})") from None


def refuse_taken_run_dir(run_dir: Path) -> None:
    """The one guard of a run directory (``jumok train``, ``jumok vocab``): refuse a file, or a
    folder that already holds a run (any of :data:`RUN_MARKERS`), before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken:
        raise RunDirError(
            f"{run_dir}: already holds a run ({', '.join(taken)}); nothing was changed. "
            "Choose a new --run-dir (or delete this one yourself)"
            + (f"; if it is unfinished: {resume_command(run_dir)}" if STATE_FILE in taken else "")
        )


def refuse_nonempty_dir(out: Path, flag: str = "--out") -> None:
    """The one guard of every output folder (``jumok demo``, ``jumok ladder``, ``jumok eval``):
    refuse a file, or a folder that is not empty, before any work, so nothing in it is
    overwritten."""
    if out.exists() and not out.is_dir():
        raise RunDirError(
            f"{flag} {out}: is a file; expected a folder. Nothing was changed; choose a new {flag}"
        )
    if out.exists() and any(out.iterdir()):
        raise RunDirError(
            f"{out}: exists and is not empty; nothing was changed. Choose a new {flag}"
        )


def clear(run_dir: Path) -> None:
    """Empty a run folder this process created and wrote nothing lasting to."""
    for item in sorted(run_dir.rglob("*"), reverse=True):
        item.rmdir() if item.is_dir() else item.unlink()


# ------------------------------------------------------------------ what a run writes first
def write_run_files(
    run_dir: Path,
    cfg: Config,
    vocab_tokens: dict[str, list[str]],
    splits: Splits,
    train_dropped: int = 0,
) -> None:
    """A new run's config.yaml, vocab.json and data/ (:func:`write_splits`)."""
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    atomic_write_text(run_dir / "vocab.json", json.dumps(vocab_tokens, ensure_ascii=False))
    write_splits(run_dir / "data", cfg.data, splits, train_dropped)


def write_splits(folder: Path, d: DataConfig, splits: Splits, train_dropped: int) -> None:
    """The splits a run used, so that it can be evaluated on exactly its dev and test pairs.

    ``dev`` and ``test`` (when there is one) as ``NAME.tsv`` (``source<TAB>target``) and as
    ``NAME.src`` and ``NAME.tgt``, one text a line, for ``jumok eval --src --ref``; the train
    split itself (``train.tsv``) only when it was generated (a user's train file may be large:
    it stays where it is); and ``splits.json``: where each split came from and what was dropped
    on the way (``splits.notes``, and ``train_dropped`` pairs over the data.max_*_length
    limits). A tab or line break inside a text (a quoted CSV field) is written as a space, so
    that every line stays one pair.
    """
    folder.mkdir(exist_ok=True)
    written = {"dev": splits.dev, "test": splits.test}
    if d.generate is not None:
        written = {"train": splits.train, **written}
    report: dict[str, Any] = {}
    for name, pairs in written.items():
        if not pairs and name == "test":
            continue
        flat = [(_one_line(s), _one_line(t)) for s, t in pairs]
        atomic_write_text(folder / f"{name}.tsv", pairs_text(flat))
        report[name] = {"pairs": len(pairs), "files": [f"{name}.tsv"]}
        if name != "train":
            atomic_write_text(folder / f"{name}.src", "".join(f"{s}\n" for s, _ in flat))
            atomic_write_text(folder / f"{name}.tgt", "".join(f"{t}\n" for _, t in flat))
            report[name]["files"] += [f"{name}.src", f"{name}.tgt"]
    report.setdefault("train", {"files": []})
    report["train"]["pairs"] = None if d.streaming else len(splits.train) - train_dropped
    report["train"]["dropped_over_length"] = None if d.streaming else train_dropped
    for name in ("train", "dev", "test"):
        report.setdefault(name, {"pairs": 0, "files": []})["from"] = _origin(d, name)
    report["notes"] = splits.notes
    atomic_write_text(folder / "splits.json", json.dumps(report, ensure_ascii=False, indent=2))


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").translate(_LINE_BREAKS)


# Characters that would split a pair across lines or columns of the files above.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def _origin(d: DataConfig, name: str) -> str:
    """Where split ``name`` came from, for splits.json."""
    if d.generate is not None:
        return f"data.generate ({d.generate.task}, {d.generate.size} pairs, seed {d.generate.seed})"
    path = getattr(d, name)
    if path is not None:
        return " + ".join(str(p) for p in path) if isinstance(path, tuple) else str(path)
    if name == "dev":
        return (
            f"held out of data.train: {d.dev_size} distinct pairs (data.dev_size), "
            f"data.split_seed {d.split_seed}"
        )
    return "none"


def tidy_for_resume(run_dir: Path, rows: int, log: Callable[[str], None]) -> None:
    """Before resuming: drop what the lost part of the run wrote after its saved state.

    That is the metrics rows past the saved ``rows`` (the resumed run writes them again) and
    the temporary files of writes cut short.
    """
    dropped = keep_first_rows(run_dir / "metrics.jsonl", rows, header=False)
    keep_first_rows(run_dir / "metrics.csv", rows, header=True)
    if dropped:
        log(f"metrics: dropped {dropped} row(s) written after the saved state; redoing them")
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            remove_temporary_files(folder)


# ---------------------------------------------------------------------------- metric files
class MetricFiles:
    """Rank 0's metrics: metrics.jsonl, metrics.csv, TensorBoard and learning_curve.png.

    ``drawn_at`` and ``drawn_rows`` say when the learning curve was last drawn and of how many
    validations (first: CURVE_EVERY_SECONDS into the run, so that a short run draws it once, at
    the end).
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        """Open the TensorBoard writer (``purge_step``: see :func:`_tensorboard`)."""
        self.run_dir = run_dir
        self.board = _tensorboard(run_dir, purge_step)
        self.drawn_at, self.drawn_rows = time.perf_counter(), 0

    def append(self, row: dict[str, Any]) -> None:
        """Append one validation's row to metrics.jsonl and metrics.csv (and TensorBoard).

        Each file is rewritten whole, atomically, with the new row at its end: an interruption
        leaves it with or without that row, never with half of it. metrics.csv keeps the columns
        of its header (a run resumed by a newer jumok that writes more columns); a None (e.g.
        BLEU on generated data) is an empty cell there and no TensorBoard point.
        """
        jsonl, csv_path = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        atomic_write_bytes(jsonl, _read_or_empty(jsonl) + (json.dumps(row) + "\n").encode("utf-8"))
        old = _read_or_empty(csv_path)
        header = next(csv.reader(io.StringIO(old.decode("utf-8"))), None) if old else None
        text = io.StringIO()
        writer = csv.DictWriter(
            text, fieldnames=header or list(row), lineterminator="\n", extrasaction="ignore"
        )
        if header is None:
            writer.writeheader()
        writer.writerow(row)
        atomic_write_bytes(csv_path, old + text.getvalue().encode("utf-8"))
        if self.board is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and value is not None:
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()

    def draw_curve(self, history: list[dict]) -> None:
        """Draw learning_curve.png from the validations so far."""
        from jumok import plot

        with atomic_path(self.run_dir / "learning_curve.png") as tmp:
            plot.learning_curve(tmp, history)
        self.drawn_at, self.drawn_rows = time.perf_counter(), len(history)

    def draw_curve_if_due(self, history: list[dict]) -> None:
        """Redraw the curve when the last drawing is CURVE_EVERY_SECONDS old."""
        if time.perf_counter() - self.drawn_at >= CURVE_EVERY_SECONDS:
            self.draw_curve(history)

    def draw_curve_if_behind(self, history: list[dict]) -> None:
        """At the end: draw the last validations, when the curve was drawn less often."""
        if history and self.drawn_rows != len(history):
            self.draw_curve(history)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.board is not None:
            self.board.close()


def _read_or_empty(path: Path) -> bytes:
    """The bytes of ``path``, or none when it does not exist yet."""
    return path.read_bytes() if path.exists() else b""


def _tensorboard(run_dir: Path, purge_step: int | None = None):
    """A TensorBoard writer in run_dir/tensorboard when the tensorboard package is installed.

    ``purge_step`` (on resume) hides events a lost part of the run logged at that step or later.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


# ------------------------------------------------------------------------------ k best
def keep_best(
    folder: Path,
    k: int,
    step: int,
    value: float,
    higher_is_better: bool,
    save: Callable[[Path], None],
) -> None:
    """Keep the k best validations as ``folder``/step-N.safetensors; delete the rest.

    ``save(path)`` writes this validation's checkpoint, called only when it is among the k best.
    """
    folder.mkdir(exist_ok=True)
    index_path = folder / "index.json"
    kept = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else []
    # A resumed run may validate a step again that a lost part of the run already recorded.
    kept = [e for e in kept if e["step"] != step]
    kept.append({"step": step, "value": value})
    kept.sort(
        key=lambda e: e["value"] if not math.isnan(e["value"]) else -math.inf,
        reverse=higher_is_better,
    )
    keep, drop = kept[:k], kept[k:]
    if any(e["step"] == step for e in keep):
        save(folder / f"step-{step}.safetensors")
    atomic_write_text(index_path, json.dumps(keep))
    for e in drop:
        (folder / f"step-{e['step']}.safetensors").unlink(missing_ok=True)
