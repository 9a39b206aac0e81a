"""A run's status and its model card, read from what the run directory holds.

:func:`run_status` says where a run stands (finished, unfinished, failed) with its best dev
score, updates and time; ``jumok runs`` prints one line of it per run. :func:`model_card` is the
Markdown card ``jumok info`` prints and :func:`write_card` saves as ``RUN_DIR/README.md``: the
data, the model, the training settings, the dev scores, the time, the versions and the commands
that use the run. Both read only the run's own files (config.yaml, metrics.jsonl, resume.state,
vocab.json, the checkpoints); nothing is recomputed.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from jumok.checkpoint import atomic_write_text
from jumok.config import Config, load_config
from jumok.errors import JumokError, RunDirError
from jumok.training.resume import STATE_FILE, load_state, resume_command

CARD_FILE = "README.md"
SCORE_ROWS = 10  # the validations a card shows (the last ones)


@dataclass
class RunStatus:
    """Where a run stands, from its files.

    ``status`` is ``finished`` (its resume.state says so), ``unfinished`` (it can be resumed) or
    ``failed`` (no resume.state: it stopped before its first save; or an unreadable one), with
    ``reason`` saying why when failed.
    """

    run_dir: Path
    status: str
    reason: str = ""
    config: Config | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    step: int = 0
    seconds: float | None = None
    parameters: int | None = None
    started: dt.datetime | None = None

    @property
    def metric(self) -> str:
        return self.config.train.early_stopping.metric if self.config else "exact_match"

    def best(self) -> dict[str, Any] | None:
        """The metrics row of the best validation by train.early_stopping.metric, or None."""
        key = f"dev_{self.metric}"
        scored = [row for row in self.rows if row.get(key) is not None]
        if not scored:
            return None
        pick = min if self.metric == "loss" else max
        return pick(scored, key=lambda row: row[key])

    def best_text(self) -> str:
        """'exact match 98.20%' (or 'bleu 31.04', 'loss 0.1234'); '-' before any validation."""
        row = self.best()
        return "-" if row is None else format_score(self.metric, row[f"dev_{self.metric}"])


def format_score(metric: str, value: float) -> str:
    """A dev score as the logs print it."""
    if metric == "exact_match":
        return f"exact match {100 * value:.2f}%"
    return f"{metric} {value:.4f}" if metric == "loss" else f"{metric} {value:.2f}"


def run_status(run_dir: str | Path) -> RunStatus:
    """Read the run in ``run_dir``.

    Raises:
        RunDirError: ``run_dir`` holds no run (no config.yaml).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunDirError(f"{run_dir}: not a jumok run directory (no config.yaml)")
    status = RunStatus(run_dir, "failed", started=_mtime(config_path))
    try:
        status.config = load_config(config_path)
        status.rows = _metric_rows(run_dir / "metrics.jsonl")
    except JumokError as err:
        status.reason = str(err)
        return status
    if status.rows:
        status.step = status.rows[-1].get("step", 0)
        status.seconds = status.rows[-1].get("elapsed_seconds")
    _read_state(status)
    return status


def _read_state(status: RunStatus) -> None:
    """Status, updates, time and parameters from resume.state (which holds the whole state)."""
    path = status.run_dir / STATE_FILE
    if not path.is_file():
        status.reason = f"no {STATE_FILE}: it stopped before its first save"
        return
    try:
        state = load_state(path)
        progress = state["progress"]
        status.step, status.seconds = progress["step"], progress["elapsed_seconds"]
        status.parameters = sum(t.numel() for t in state["model"].values())
        status.status = "finished" if progress["finished"] else "unfinished"
    except (JumokError, KeyError, TypeError, AttributeError) as err:
        status.reason = f"{STATE_FILE} unreadable: {err}"


def _metric_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a damaged line (a crash mid-write) ends the table."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            break
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime).replace(microsecond=0)


def format_seconds(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '12.3 s'; '-' when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


# ------------------------------------------------------------------------------ the model card
def write_card(run_dir: str | Path) -> Path:
    """Write the run's model card to ``RUN_DIR/README.md`` (atomically); returns its path."""
    path = Path(run_dir) / CARD_FILE
    atomic_write_text(path, model_card(run_dir))
    return path


def model_card(run_dir: str | Path) -> str:
    """The run's model card in Markdown (see the module docstring).

    Raises:
        RunDirError: ``run_dir`` holds no run; ConfigError: its config.yaml is unreadable.
    """
    status = run_status(run_dir)
    if status.config is None:
        raise RunDirError(f"{status.run_dir}: {status.reason}")
    cfg = status.config
    lines = [f"# {status.run_dir.name}", "", *_summary(status), ""]
    lines += ["## Data", "", *_data(cfg, status.run_dir), ""]
    lines += ["## Model", "", *_model(cfg, status), ""]
    lines += ["## Training", "", *_training(cfg), ""]
    lines += ["## Dev scores", "", *_scores(status), ""]
    lines += ["## Use", "", *_use(status), ""]
    lines += ["## Versions", "", _versions(), ""]
    return "\n".join(lines)


def _summary(s: RunStatus) -> list[str]:
    best = s.best()
    state = s.status + (f" ({s.reason})" if s.reason else "")
    where = "" if best is None else f" at update {best.get('step', '?'):,}, epoch {best['epoch']}"
    return [
        "A jumok sequence-to-sequence model with attention."
        if s.config.model.type == "seq2seq"
        else f"A jumok model of type {s.config.model.type}.",
        "",
        "| | |",
        "|---|---|",
        f"| status | {state} |",
        f"| best dev score | {s.best_text()}{where} (best.safetensors) |",
        f"| updates | {s.step:,} |",
        f"| training time | {format_seconds(s.seconds)} |",
        f"| started | {s.started.isoformat(sep=' ') if s.started else '-'} |",
    ]


def _data(cfg: Config, run_dir: Path) -> list[str]:
    d = cfg.data
    if d.generate is not None:
        g = d.generate
        lines = [
            f"- generated: the {g.task} task, {g.size:,} pairs (dev {g.dev_size:,}, test "
            f"{g.test_size:,}), seed {g.seed}"
        ]
    else:
        lines = [f"- {split}: {_paths(getattr(d, split))}" for split in ("train", "dev", "test")]
        lines.append(f"- format: {d.format}")
    for split in ("train", "dev", "test"):
        saved = run_dir / "data" / f"{split}.tsv"
        if saved.is_file():
            with saved.open("rb") as f:
                pairs = sum(1 for _ in f)
            lines.append(f"- {split} split used: `data/{split}.tsv`, {pairs:,} pairs")
    tok = d.tokenizer
    lines.append(
        f"- tokenizer: {tok.kind}"
        + (f" ({tok.model_type}, {tok.vocab_size:,} pieces)" if tok.kind == "sentencepiece" else "")
        + f"; source reversed: {'yes' if d.reverse_source else 'no'}"
    )
    vocab = _vocab_sizes(run_dir / "vocab.json")
    if vocab:
        lines.append(f"- vocabularies: {vocab[0]:,} source, {vocab[1]:,} target tokens")
    return lines


def _paths(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return " + ".join(f"`{p}`" for p in value)
    return f"`{value}`"


def _vocab_sizes(path: Path) -> tuple[int, int] | None:
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        return len(vocab["source"]), len(vocab["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _model(cfg: Config, s: RunStatus) -> list[str]:
    m, e, dec = cfg.model, cfg.model.encoder, cfg.model.decoder
    return [
        f"- type: {m.type}; attention: {m.attention}",
        f"- encoder: {e.rnn}, {e.num_layers} layer(s), hidden {e.hidden_size}, embedding "
        f"{e.embedding_size}{', bidirectional' if e.bidirectional else ''}",
        f"- decoder: {dec.rnn}, {dec.num_layers} layer(s), hidden {dec.hidden_size}, embedding "
        f"{dec.embedding_size}",
        f"- parameters: {s.parameters:,}" if s.parameters else "- parameters: -",
        "- the whole resolved config: `config.yaml` (also inside every checkpoint)",
    ]


def _training(cfg: Config) -> list[str]:
    t = cfg.train
    budget = [
        f"{t.epochs} epoch(s)",
        *([f"at most {t.max_steps:,} updates"] if t.max_steps else []),
        *([f"at most {t.max_seconds:,} s"] if t.max_seconds else []),
    ]
    return [
        f"- {', '.join(budget)}; batches of {t.batch_size:,} {t.batch_type}",
        f"- learning rate {t.lr:g} ({t.schedule.kind} schedule), label smoothing "
        f"{t.label_smoothing:g}, seed {t.seed}",
        f"- best checkpoint chosen by dev {t.early_stopping.metric}; device {t.device}",
    ]


def _scores(s: RunStatus) -> list[str]:
    if not s.rows:
        return ["No validation yet."]
    header = "| epoch | update | train loss | dev loss | exact match | BLEU | chrF | time |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in s.rows[-SCORE_ROWS:]:
        cells = [
            str(row.get("epoch", "-")),
            f"{row.get('step', 0):,}",
            _number(row.get("train_loss"), "{:.4f}"),
            _number(row.get("dev_loss"), "{:.4f}"),
            _number(row.get("dev_exact_match"), "{:.2%}"),
            _number(row.get("dev_bleu"), "{:.2f}"),
            _number(row.get("dev_chrf"), "{:.2f}"),
            format_seconds(row.get("elapsed_seconds")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(s.rows) > SCORE_ROWS:
        lines += ["", f"The last {SCORE_ROWS} of {len(s.rows)} validations; all in metrics.jsonl."]
    return lines


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def _use(s: RunStatus) -> list[str]:
    run = s.run_dir
    lines = ["```sh"]
    if s.status == "unfinished":
        lines.append(f"{resume_command(run)}    # continue training")
    lines += [
        f"jumok translate {run} --input sources.txt",
        f"jumok eval {run} --src test.src --ref test.ref",
        f"jumok serve {run}",
        "```",
    ]
    return lines


def _versions() -> str:
    found = []
    for package in ("jumok", "torch", "sacrebleu", "sentencepiece"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return (
        f"Card written {dt.datetime.now().replace(microsecond=0).isoformat(sep=' ')} by "
        f"{', '.join(found)}, Python {platform.python_version()}."
    )
