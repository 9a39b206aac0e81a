"""Training target tokens/s of one run, read from what the toolkit itself logged.

Each toolkit counts non-pad target tokens, end-of-sentence included, and leaves its start-up
(imports, data loading, OpenNMT-py's bucket fill) out as described below, so the three figures
measure the same thing: training updates.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

# JoeyNMT 2.3.0, training.py: one line per completed epoch (validation excluded from [sec]) ...
_JOEY_EPOCH = re.compile(r"num\. of tokens: (\d+), ([\d.]+)\[sec\]")
# ... and one per logging_freq updates, over those updates only
_JOEY_STEP = re.compile(r"Step:\s+(\d+), .*Tokens per Sec:\s+([\d.]+)")
_JOEY_INTERRUPT = re.compile(r"Interrupt at epoch \d+, step (\d+)\.")
# OpenNMT-py 3.5.1, utils/statistics.py: "Step 50/1000000; ...; 2345/2001 tok/s; 45 sec;", the
# second number is target tokens/s over the report_every updates since the previous report
_ONMT_STEP = re.compile(r"Step\s+(\d+)(?:/\s*\d+)?;.* ([\d.]+)/([\d.]+) tok/s;")


@dataclass(frozen=True)
class Throughput:
    """Target tokens per second of training, and how it was obtained."""

    tokens_per_second: float
    updates: int  # the last update the log names
    how: str


class LogError(RuntimeError):
    """The log holds no throughput figure (the run failed or stopped before its first report)."""


def joeynmt(log: Path) -> Throughput:
    """Completed epochs: their tokens over their seconds. Otherwise (stopped by the time budget
    inside the first epoch) the mean of the per-interval "Tokens per Sec" lines."""
    text = log.read_text(encoding="utf-8", errors="replace")
    steps = [(int(step), float(speed)) for step, speed in _JOEY_STEP.findall(text)]
    interrupts = [int(step) for step in _JOEY_INTERRUPT.findall(text)]
    updates = max([step for step, _ in steps] + interrupts, default=0)
    epochs = [(int(tokens), float(seconds)) for tokens, seconds in _JOEY_EPOCH.findall(text)]
    if epochs:
        tokens, seconds = (sum(column) for column in zip(*epochs, strict=True))
        how = f"JoeyNMT log: {len(epochs)} epoch line(s), tokens / [sec]"
        return Throughput(tokens / seconds, updates, how)
    if steps:
        how = f"JoeyNMT log: mean of {len(steps)} 'Tokens per Sec' interval(s)"
        return Throughput(statistics.fmean(speed for _, speed in steps), updates, how)
    raise LogError(f"{log}: no JoeyNMT training report")


def onmt(log: Path) -> Throughput:
    """Mean of the target tok/s reports, the first one excluded (it holds the bucket fill)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    reports = [(int(step), float(tgt)) for step, _, tgt in _ONMT_STEP.findall(text)]
    if not reports:
        raise LogError(f"{log}: no OpenNMT-py training report")
    used = reports[1:] or reports
    how = f"OpenNMT-py log: mean of {len(used)} 'tok/s' report(s)"
    how += ", the first excluded" if len(reports) > 1 else " (only one, start-up included)"
    return Throughput(statistics.fmean(tgt for _, tgt in used), reports[-1][0], how)


def jumok(run_dir: Path) -> Throughput:
    """All records of ``metrics.jsonl``: their tokens over their seconds (validation excluded)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise LogError(f"{path} is missing")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise LogError(f"{path} is empty")
    seconds = sum(r["epoch_seconds"] for r in records)
    tokens = sum(r["train_tokens_per_second"] * r["epoch_seconds"] for r in records)
    how = f"jumok metrics.jsonl: {len(records)} record(s), tokens / seconds"
    return Throughput(tokens / seconds, records[-1]["step"], how)
