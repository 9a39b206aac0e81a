"""``jumok runs [DIR]``: the runs in a folder, one line each.

A run directory is a folder with a ``config.yaml`` that ``jumok train`` wrote; the folders of
``jumok demo`` and ``jumok ladder`` hold theirs one or two levels down. Each line comes from
:func:`jumok.training.card.run_status`; ``jumok info RUN`` gives one run in full.
"""

from __future__ import annotations

import os
from pathlib import Path

from jumok.errors import RunDirError
from jumok.training.card import RunStatus, format_seconds, run_status
from jumok.training.resume import resume_command

DEPTH = 3  # DIR/run, DIR/demo/run, DIR/ladder/rung/... : how deep a run is looked for


def find_runs(folder: Path, depth: int = DEPTH) -> list[Path]:
    """The run directories in ``folder`` (``folder`` itself included), not looking inside a run
    or more than ``depth`` levels down, in name order."""
    found = []
    for here, dirs, files in os.walk(folder):
        level = len(Path(here).relative_to(folder).parts)
        if "config.yaml" in files:
            found.append(Path(here))
            dirs.clear()  # a run's own folders (data/, checkpoints/) hold no runs
        elif level >= depth:
            dirs.clear()
        dirs.sort()
    return sorted(found)


def list_runs(folder: str | Path) -> str:
    """The table ``jumok runs`` prints: one line per run, oldest first, with the command that
    resumes each unfinished one under the table.

    Raises:
        RunDirError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        where = "no such folder" if not folder.exists() else "not a folder"
        raise RunDirError(
            f"{folder}: {where}; jumok train writes its runs under runs/ (give the folder that "
            "holds yours: jumok runs DIR)"
        )
    statuses = sorted(
        (run_status(path) for path in find_runs(folder)),
        key=lambda s: (s.started is None, s.started, str(s.run_dir)),
    )
    if not statuses:
        return f"{folder}: no runs (a run is a folder with the config.yaml jumok train writes)\n"
    table = [("run", "status", "best dev", "updates", "time", "started")]
    table += [_row(s) for s in statuses]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    lines += _notes(statuses)
    return "\n".join(lines) + "\n"


def _row(s: RunStatus) -> tuple[str, ...]:
    return (
        str(s.run_dir),
        s.status,
        s.best_text(),
        f"{s.step:,}",
        format_seconds(s.seconds),
        s.started.strftime("%Y-%m-%d %H:%M") if s.started else "-",
    )


def _notes(statuses: list[RunStatus]) -> list[str]:
    """What to do about the runs that did not finish."""
    notes = [
        f"  {s.run_dir}: continue with {resume_command(s.run_dir)}"
        for s in statuses
        if s.status == "unfinished"
    ]
    notes += [f"  {s.run_dir}: {s.reason}" for s in statuses if s.status == "failed"]
    return ["", *notes] if notes else []
