"""Which checkpoint file a path names, and what to say when it names none.

Every command that reads a trained model (``translate``, ``eval``, ``average``, ``serve``, the
MMI reranker's runs) goes through :func:`resolve_checkpoint`. A path that is not a run points the
user to the one they meant: a config is trained first, a ``jumok demo`` folder holds its run in
``run/``, a run stopped before its first validation has no best checkpoint yet and is resumed.
"""

from __future__ import annotations

from pathlib import Path

from jumok.errors import RunDirError

CONFIG_SUFFIXES = (".yaml", ".yml")
# A run directory has its resolved config; the state a stopped run resumes from (the name that
# jumok.training.resume.STATE_FILE gives; decoding cannot import training).
RUN_CONFIG, RESUME_STATE = "config.yaml", "resume.state"
SHOWN_RUNS = 3  # the runs a folder of runs names in its error


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory (or the file itself when given one).

    Args:
        run_dir: a run directory or a ``.safetensors`` file.
        which: ``best`` or ``last``.

    Raises:
        RunDirError: ``run_dir`` is missing, a config, or a folder without that checkpoint; the
            message says what it is and the command that helps (train, resume, ``--checkpoint
            last``, the run inside a demo folder).
    """
    path = Path(run_dir)
    if path.is_file():
        if path.suffix.lower() in CONFIG_SUFFIXES:
            raise RunDirError(
                f"{path}: a config, not a trained run; train it first: jumok train {path} "
                "(then give the run directory it prints)"
            )
        return path
    if not path.exists():
        raise RunDirError(f"{path}: no such run directory")
    candidate = path / f"{which}.safetensors"
    if candidate.is_file():
        return candidate
    raise RunDirError(missing_checkpoint(path, which))


def missing_checkpoint(path: Path, which: str) -> str:
    """Why the folder ``path`` has no ``WHICH.safetensors``, and what to do about it."""
    if (path / RUN_CONFIG).is_file():
        return _unfinished(path, which)
    runs = sorted(d for d in path.iterdir() if d.is_dir() and (d / RUN_CONFIG).is_file())
    if [d.name for d in runs] == ["run"]:  # what jumok demo writes: report.md, pictures, run/
        return f"{path}: no {which}.safetensors here; the run is in {path / 'run'}: use that path"
    if runs:
        shown = ", ".join(str(d) for d in runs[:SHOWN_RUNS]) + (
            ", ..." if len(runs) > SHOWN_RUNS else ""
        )
        return (
            f"{path}: no {which}.safetensors here; it holds {len(runs)} runs ({shown}): give "
            f"one of them (jumok runs {path} lists them)"
        )
    return (
        f"{path}: no {which}.safetensors; not a jumok run directory (jumok train writes "
        f"{RUN_CONFIG} and the checkpoints there)"
    )


def _unfinished(path: Path, which: str) -> str:
    """The message for a run directory without ``WHICH.safetensors``."""
    other = "last" if which == "best" else "best"
    resume = f"jumok train --resume {path}"
    if which == "best" and (path / "last.safetensors").is_file():
        return (
            f"{path}: an unfinished run with no best.safetensors yet (it stopped before its "
            "first validation). last.safetensors holds its weights when it stopped: add "
            f"--checkpoint last to use them, or continue training: {resume}"
        )
    if (path / f"{other}.safetensors").is_file():
        return f"{path}: no {which}.safetensors; use --checkpoint {other}"
    if (path / RESUME_STATE).is_file():
        return (
            f"{path}: an unfinished run with no checkpoint yet (it stopped before its first "
            f"validation); continue training: {resume}"
        )
    return (
        f"{path}: a run that stopped before its first save (no checkpoint, no {RESUME_STATE}); "
        f"nothing to decode or resume: start it again with jumok train CONFIG"
    )
