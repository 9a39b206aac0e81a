"""Resumable training: what a run saves so that it continues exactly where it stopped.

``RUN_DIR/resume.state`` holds everything the training loop needs besides the config and the
data: the model, the optimizer, the learning-rate schedule, early stopping, every random number
generator (Python, NumPy, PyTorch on CPU and CUDA), where the loop is (:class:`Progress`) and the
validations so far. Training saves it before the first update, after every validation, at the end
of every epoch, every ``train.resume_every`` updates and on SIGINT/SIGTERM; every save replaces
the previous one atomically (:func:`jumok.checkpoint.atomic_write_bytes`).

The data position is kept as the state of the generator that orders batches *when the epoch
began*, plus the number of updates done in that epoch: the epoch's batches depend on nothing else,
so resuming rebuilds them and skips the ones already trained on. A streaming run replays its
stream to the same point (reading and encoding, no training), which takes the time of one read of
the data up to there.

There is no gradient scaler to save: ``train.precision: bf16`` needs none.

File format: a first line ``JUMOK-RESUME``, a JSON line with the format version, the payload's
size and its SHA-256, then the payload (``torch.save`` of a dict, read back with
``weights_only=True`` so that loading runs no code from the file).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from jumok.checkpoint import atomic_write, atomic_write_text, read_file
from jumok.config import Config, config_from_yaml, config_to_yaml
from jumok.errors import RunDirError
from jumok.training.schedules import EarlyStopping, Schedule

STATE_FILE = "resume.state"
MAGIC = b"JUMOK-RESUME\n"
FORMAT_VERSION = 1
# Fields a resumed run may change: they change neither what is trained nor in which order.
MAY_CHANGE = ("train.threads", "train.examples", "train.device", "train.resume_every")
# The budgets a finished run may be given more of, to train further (see extend_finished).
BUDGETS = ("train.epochs", "train.max_steps", "train.max_seconds")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resume_command(run_dir: Path) -> str:
    return f"jumok train --resume {run_dir}"


@dataclass
class Progress:
    """Where the training loop is; saved in ``resume.state``.

    ``epoch`` is the epoch in progress (from 1) and ``updates_in_epoch`` the updates already done
    in it; ``epoch_data_rng`` is the state of the batch-ordering generator when that epoch began.
    The ``since_*`` fields cover the training since the last validation (its train loss).
    ``spent`` names what ended a finished run: any of :data:`BUDGETS` and
    ``train.early_stopping`` (empty in states written before it was kept).
    """

    epoch_data_rng: torch.Tensor
    step: int = 0
    epoch: int = 1
    updates_in_epoch: int = 0
    validated_at: int = -1
    since_loss: float = 0.0
    since_tokens: int = 0
    since_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics.jsonl row each
    finished: bool = False
    spent: list[str] = field(default_factory=list)

    def begin_epoch(self, epoch: int, data_rng: torch.Tensor) -> None:
        self.epoch, self.updates_in_epoch, self.epoch_data_rng = epoch, 0, data_rng


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a resumable state was saved."""

    def __init__(self, signum: int, run_dir: Path, step: int):
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after update {step}; the resumable state "
            f"is saved in {run_dir / STATE_FILE}. Continue with: {resume_command(run_dir)}"
        )


class SetupInterrupted(TrainingInterrupted):
    """SIGINT or SIGTERM arrived while the run was being prepared (data, vocabularies, model)."""

    def __init__(self, signum: int, run_dir: Path, resumable: bool):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if resumable:
            then = f"the saved state is unchanged; continue with: {resume_command(run_dir)}"
        else:
            then = "nothing was saved; start it again with the same command"
        Exception.__init__(
            self, f"stopped by {name} while preparing the run, before training: {then}"
        )


class SignalGuard:
    """While training: the first SIGINT/SIGTERM is noted (the loop saves and stops after the
    current update); a second one exits at once.

    While ``preparing`` (reading or generating the data, building the vocabularies and the
    model, before the run's first saved state), the first signal stops at once with
    :class:`SetupInterrupted`: there is no update to finish, and preparing may take long.

    Exiting at once cannot damage the run directory, because every file in it is replaced by a
    rename: a write cut short leaves only a temporary file, which resuming deletes.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.received: int | None = None
        self.preparing = False
        self.resumable = False  # preparing a resumed run: its saved state stays valid
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        # Python delivers signals to the main thread only; elsewhere (a server's worker) the
        # handlers cannot be installed and signals keep their usual meaning.
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.received is None and self.preparing:
            raise SetupInterrupted(signum, self.run_dir, self.resumable)
        if self.received is None:
            self.received = signum
            _say(
                f"\njumok: {name}: finishing the current update, then saving a resumable state "
                "(send it again to exit at once)\n"
            )
            return
        _say(
            f"\njumok: {name} again: exiting at once. Every file in {self.run_dir} is complete; "
            f"continue from the last saved state with: {resume_command(self.run_dir)}\n"
        )
        os._exit(128 + signum)


def _say(text: str) -> None:
    # os.write, not print: a handler may interrupt a print to the same stream.
    try:
        os.write(sys.stderr.fileno(), text.encode("utf-8", "replace"))
    except (OSError, ValueError):  # no usable stderr (closed, or replaced by a test)
        pass


# ----------------------------------------------------------------------------- what is saved
def collect(
    progress: Progress,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    stopper: EarlyStopping,
    cfg: Config,
    vocab_tokens: dict[str, list[str]],
) -> dict[str, Any]:
    """Everything :func:`restore` needs, as a dict that ``torch.save`` can write."""
    return {
        "progress": asdict(progress),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "early_stopping": stopper.state_dict(),
        "rng": _capture_rng(),
        "config": config_to_yaml(cfg),
        "vocab": vocab_tokens,
    }


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    stopper: EarlyStopping,
) -> Progress:
    """Load a saved state into freshly built objects; returns where the loop was.

    Call it after everything that draws random numbers while setting up (building the model), so
    that the generators continue from the saved states.
    """
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stopper.load_state_dict(state["early_stopping"])
        _restore_rng(state["rng"])
        return Progress(**state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        # The checksum matched, so the file is what was written, yet not what jumok writes.
        message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise RunDirError(
            f"{STATE_FILE}: its content does not fit this run ({message}); it was not written "
            "by jumok train for this config. Start a new run"
        ) from None


def _capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# ------------------------------------------------------------------------------- the file
def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, with its size and SHA-256 in a header.

    The payload is streamed to the file and hashed on the way; the header line, reserved as
    :data:`HEADER_WIDTH` spaces, is filled in afterwards (JSON ignores the padding). Building
    the ~150 MB payload in memory first made every save a peak of the run's memory.
    """

    def write(f: BinaryIO) -> None:
        f.write(MAGIC)
        header_at = f.tell()
        f.write(b" " * HEADER_WIDTH + b"\n")
        hashing = _Hashing(f)
        torch.save(state, hashing)
        header = {
            "format_version": FORMAT_VERSION,
            "bytes": hashing.size,
            "sha256": hashing.sha256.hexdigest(),
        }
        line = json.dumps(header).encode("ascii")
        f.seek(header_at)
        f.write(line.ljust(HEADER_WIDTH))
        f.seek(0, os.SEEK_END)

    atomic_write(path, write)


# Bytes reserved for the header line of a resumable state (it takes ~110).
HEADER_WIDTH = 256


class _Hashing:
    """A write-only file that passes what it is given to ``f``, counting and hashing it."""

    def __init__(self, f: BinaryIO):
        self.f, self.size, self.sha256 = f, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state written by :func:`save_state`, checking its format, version and checksum.

    Raises:
        RunDirError: missing, truncated, damaged, foreign or of another version; the message
            names the file and what was expected.
    """
    raw = read_file(path, "resumable state")
    if not raw.startswith(MAGIC):
        raise RunDirError(
            f"{path}: not a jumok resumable state (expected a file starting with "
            f"{MAGIC.strip().decode()!r}, as jumok train writes)"
        )
    header_line, _, payload = raw[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
        version, size, digest = header["format_version"], header["bytes"], header["sha256"]
    except (ValueError, KeyError, TypeError):
        raise RunDirError(f"{path}: the header of the resumable state is damaged") from None
    if version != FORMAT_VERSION:
        raise RunDirError(
            f"{path}: resumable state format version {version!r}; this jumok reads version "
            f"{FORMAT_VERSION}. Resume it with the jumok that wrote it"
        )
    if len(payload) != size:
        raise RunDirError(
            f"{path}: truncated or extended: {len(payload)} bytes of state, the header says {size}"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise RunDirError(f"{path}: damaged: the checksum (SHA-256) does not match its content")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # the checksum matched, so this is a state jumok cannot read
        raise RunDirError(f"{path}: cannot read the resumable state: {err}") from None


# ---------------------------------------------------------------------------- resuming a run
def require_resumable(run_dir: Path) -> Path:
    """The path of ``run_dir``'s state; a clear error when there is none."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory to resume")
    path = run_dir / STATE_FILE
    if not path.is_file():
        if (run_dir / "config.yaml").is_file():
            raise RunDirError(
                f"{run_dir}: holds a run but no resumable state ({STATE_FILE}): it stopped "
                "before its first save, or an older jumok wrote it. Start a new run instead"
            )
        raise RunDirError(f"{run_dir}: no run to resume ({STATE_FILE} not found)")
    return path


def load_resumable(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """The saved state of an unfinished run whose config agrees with ``cfg``.

    A finished run is continued when ``cfg`` raises the budget that ended it
    (:func:`extend_finished`): the state comes back unfinished, with ``state["extended"]``
    saying what was raised.

    Raises:
        RunDirError: no state, a damaged one, a finished run without a larger budget, or a
            conflicting config.
    """
    path = require_resumable(run_dir)
    state = load_state(path)  # on the CPU; restore() copies tensors to their devices
    _require_fields(state, path)
    saved = config_from_yaml(state["config"], source=f"{path} (embedded config)")
    raised: list[str] = []
    if state["progress"]["finished"]:
        raised = extend_finished(run_dir, state, saved, cfg)
    conflicts = config_conflicts(saved, cfg, also_allowed=raised)
    if conflicts:
        raise RunDirError(
            f"{run_dir}: the config given conflicts with the run's: {'; '.join(conflicts)}. A "
            f"resumed run trains as it started (only {', '.join(MAY_CHANGE)} may change, and "
            f"a finished run's {', '.join(BUDGETS)} may be raised); resume without CONFIG "
            "and --set, or start a new run"
        )
    if raised:
        state["progress"].update(finished=False, spent=[])
        state["extended"] = ", ".join(
            f"{name} {_shown(saved, name)} -> {_shown(cfg, name)}" for name in raised
        )
    return state


def extend_finished(
    run_dir: Path, state: dict[str, Any], saved: Config, given: Config
) -> list[str]:
    """The budgets (:data:`BUDGETS`) that ``given`` raises above a finished run's config.

    The run trains further only when every budget that ended it is raised: a run that ran out
    of epochs needs more ``train.epochs``, whatever else is raised. ``train.max_seconds``
    counts the whole run, the time already spent included.

    Raises:
        RunDirError: the run stopped early (train.early_stopping), or the budget that ended it
            is not raised; the message says how to give it more.
    """
    p = state["progress"]
    spent = p.get("spent") if isinstance(p.get("spent"), list) else []
    spent = [name for name in spent if name in (*BUDGETS, "train.early_stopping")]
    where = f"update {p.get('step')}, epoch {p.get('epoch')}"
    if "train.early_stopping" in spent:
        raise RunDirError(
            f"{run_dir}: the run already finished ({where}): it stopped early "
            "(train.early_stopping), which a larger budget does not change; nothing to resume. "
            "Its weights are in best.safetensors and last.safetensors"
        )
    raised = [name for name in BUDGETS if _budget(given, name) > _budget(saved, name)]
    needed = [name for name in spent if name not in raised] or ([] if raised else list(BUDGETS))
    if needed:
        ended = ", ".join(f"{name}: {_shown(saved, name)}" for name in spent) or "its budget"
        more = " --set ".join(_more(saved, name) for name in needed if _more(saved, name))
        raise RunDirError(
            f"{run_dir}: the run already finished ({where}; it ended at {ended}); nothing to "
            "resume. Its weights are in best.safetensors and last.safetensors. To train it "
            f"further, raise its budget, e.g.: {resume_command(run_dir)} --set {more}"
        )
    return raised


def _budget(cfg: Config, name: str) -> float:
    """The value of budget ``name`` in ``cfg`` (null: no limit, infinity)."""
    value = getattr(cfg.train, name.removeprefix("train."))
    return math.inf if value is None else value


def _shown(cfg: Config, name: str) -> str:
    return _number(getattr(cfg.train, name.removeprefix("train.")))


def _more(saved: Config, name: str) -> str:
    """``name=VALUE`` with a larger value, for the message; empty when it has no limit."""
    value = getattr(saved.train, name.removeprefix("train."))
    if value is None:
        return ""
    return f"{name}={_number(value + 1 if name == 'train.epochs' else 2 * value)}"


def _number(value: float | None) -> str:
    """``null``, ``1800`` or ``1800.5``, as a --set takes it back."""
    if value is None:
        return "null"
    return str(int(value)) if float(value).is_integer() else str(value)


def _require_fields(state: Any, path: Path) -> None:
    """Refuse a state whose checksum matches but whose content jumok did not write (forged)."""
    fields = {"progress": dict, "model": dict, "optimizer": dict, "schedule": dict,
              "early_stopping": dict, "rng": dict, "config": str, "vocab": dict}  # fmt: skip
    wrong = (
        [name for name, kind in fields.items() if not isinstance(state.get(name), kind)]
        if isinstance(state, dict)
        else ["the whole state"]
    )
    if not wrong and not isinstance(state["progress"].get("finished"), bool):
        wrong = ["progress.finished"]
    if wrong:
        raise RunDirError(
            f"{path}: not a state jumok train wrote: {', '.join(wrong)} missing or of the wrong "
            "type (the checksum matches, so the file was written this way). Start a new run"
        )


def config_conflicts(
    saved: Config, given: Config, also_allowed: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """``field: run X, given Y`` for each field that differs, except those in MAY_CHANGE and
    ``also_allowed``."""
    a, b = _flatten(saved.model_dump(mode="json")), _flatten(given.model_dump(mode="json"))
    allowed = {*MAY_CHANGE, *also_allowed}
    return [
        f"{key}: run {a.get(key)!r}, given {b.get(key)!r}"
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key) and key not in allowed
    ]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def check_vocabularies(state: dict[str, Any], vocab_tokens: dict[str, list[str]], run_dir: Path):
    """Refuse to resume when the data no longer gives the vocabularies the run started with."""
    if state["vocab"] != vocab_tokens:
        raise RunDirError(
            f"{run_dir}: the training data changed since the run started: the vocabularies "
            "built from it differ from the run's (vocab.json). Resuming needs the same data"
        )


def keep_first_rows(path: Path, rows: int, header: bool) -> int:
    """Drop the rows of a log written after the saved state (they will be written again).

    Returns:
        How many rows were dropped.
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = lines[: rows + int(header)]
    if len(keep) == len(lines):
        return 0
    atomic_write_text(path, "".join(keep))
    return len(lines) - len(keep)
