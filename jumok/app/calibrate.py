"""Calibrated abstain: the confidence threshold that reaches a target precision on held-out data.

``jumok calibrate RUN --src F --ref F --target-precision P`` decodes ``F`` with the run's decode
settings (or the flags given), marks each line good (exact match, or sentence chrF >= a value),
and finds the smallest confidence threshold whose precision, the share of good lines among
those kept (confidence >= threshold), reaches P. It reports the coverage there (the share kept)
and the expected calibration error (ECE: 10 equal-width confidence bins, the sum over bins of
``n_bin / N * |accuracy - mean confidence|``), draws a reliability diagram and writes
``calibration.json`` into the run. ``--abstain-below auto`` (translate, eval) and
``jumok serve --calibrated-abstain`` then read its threshold (:func:`resolve_abstain`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jumok.errors import ConfigError, DataError, RunDirError

CALIBRATION_FILE = "calibration.json"
DIAGRAM_FILE = "calibration.png"
BINS = 10


@dataclass
class Bin:
    """One equal-width confidence bin: [low, high), the last one closed."""

    low: float
    high: float
    count: int
    confidence: float  # mean confidence of its lines (0 when empty)
    accuracy: float  # share of good lines (0 when empty)


@dataclass
class Calibration:
    """What ``jumok calibrate`` found (``calibration.json`` holds these fields and more).

    Attributes:
        threshold: the smallest confidence whose kept lines reach ``target_precision``, or None
            when no threshold does.
        precision: good among kept at ``threshold`` (None without one).
        coverage: kept among all at ``threshold`` (0 without one).
        ece: expected calibration error over :data:`BINS` equal-width bins.
        bins: the bins of the reliability diagram.
    """

    target_precision: float
    threshold: float | None
    precision: float | None
    coverage: float
    ece: float
    lines: int
    good: int
    bins: list[Bin]


def reliability_bins(
    confidences: Sequence[float], good: Sequence[bool], n: int = BINS
) -> list[Bin]:
    """``n`` equal-width bins of [0, 1]; a confidence of exactly 1 falls in the last."""
    members: list[list[int]] = [[] for _ in range(n)]
    for i, c in enumerate(confidences):
        members[min(int(c * n), n - 1)].append(i)
    bins = []
    for k, rows in enumerate(members):
        count = len(rows)
        bins.append(
            Bin(
                low=k / n,
                high=(k + 1) / n,
                count=count,
                confidence=sum(confidences[i] for i in rows) / count if count else 0.0,
                accuracy=sum(bool(good[i]) for i in rows) / count if count else 0.0,
            )
        )
    return bins


def expected_calibration_error(bins: Sequence[Bin]) -> float:
    """sum over bins of (lines in the bin / all lines) * |accuracy - mean confidence|."""
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins)


def calibrate(confidences: Sequence[float], good: Sequence[bool], target: float) -> Calibration:
    """The smallest threshold t (one of the confidences) at which the lines with confidence >= t
    have precision >= ``target``, with its coverage, and the ECE.

    Lowering t keeps more lines, so the smallest t that reaches the target keeps the most.
    Precision need not fall monotonically as t falls; every candidate is checked.
    """
    if len(confidences) != len(good):
        raise ValueError(f"{len(confidences)} confidences for {len(good)} marks")
    if not confidences:
        raise DataError("calibration needs at least one line")
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"--target-precision: expected a share in (0, 1], got {target}")
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    threshold = precision = None
    coverage, kept_good = 0.0, 0
    for rank, i in enumerate(order, start=1):
        kept_good += bool(good[i])
        next_same = rank < len(order) and confidences[order[rank]] == confidences[i]
        if next_same:  # a threshold keeps every line of equal confidence: decide after the last
            continue
        if kept_good / rank >= target:
            threshold, precision, coverage = confidences[i], kept_good / rank, rank / len(order)
    bins = reliability_bins(confidences, good)
    return Calibration(
        target_precision=target,
        threshold=threshold,
        precision=precision,
        coverage=coverage,
        ece=expected_calibration_error(bins),
        lines=len(confidences),
        good=sum(bool(g) for g in good),
        bins=bins,
    )


def mark_good(
    outputs: Sequence[str], refs: Sequence[str], kind: str, min_chrf: float | None
) -> list[bool]:
    """Each output good or not: identical to its reference (``exact``), or sentence chrF
    (sacrebleu, 0-100) >= ``min_chrf`` (``chrf``)."""
    if kind == "exact":
        return [o == r for o, r in zip(outputs, refs, strict=True)]
    if min_chrf is None:
        raise ConfigError("--good chrf needs --min-chrf X (a sentence chrF from 0 to 100)")
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return [
        chrf.sentence_score(o, [r]).score >= min_chrf for o, r in zip(outputs, refs, strict=True)
    ]


# ------------------------------------------------------------------------------ the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``jumok calibrate`` that are its own (the decoding flags come from cli)."""
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run to calibrate")
    p.add_argument("--src", type=Path, required=True, help="source file, one text per line")
    p.add_argument("--ref", type=Path, required=True, help="reference file, one per line")
    p.add_argument(
        "--target-precision",
        type=float,
        required=True,
        metavar="P",
        help="share of good outputs wanted among those not withheld, e.g. 0.95",
    )
    p.add_argument(
        "--good",
        choices=["exact", "chrf"],
        default="exact",
        help="a line is good when its output equals the reference (exact, default) or its "
        "sentence chrF reaches --min-chrf (chrf)",
    )
    p.add_argument("--min-chrf", type=float, metavar="X", help="with --good chrf: 0 to 100")


def run_calibration(args: argparse.Namespace, options: dict[str, Any], rerank=None) -> int:
    """``jumok calibrate``: decode, calibrate, draw and write ``calibration.json`` (atomically;
    no other file of the run is touched)."""
    from jumok.checkpoint import atomic_path, atomic_write_text
    from jumok.data.inputs import read_lines
    from jumok.decoding.translator import load
    from jumok.plot import reliability_diagram

    if not args.run_dir.is_dir():
        raise RunDirError(f"{args.run_dir}: not a run directory (calibration.json goes into it)")
    (sources, _), (refs, _) = read_lines(args.src), read_lines(args.ref)
    if len(sources) != len(refs):
        raise DataError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(refs)}")
    if args.good == "chrf" and args.min_chrf is None:
        raise ConfigError("--good chrf needs --min-chrf X (a sentence chrF from 0 to 100)")
    translator = load(args.run_dir, which=args.checkpoint, device=args.device)
    options = {**options, "abstain_below": None}  # every line's confidence, none withheld
    opts = translator.options(**options)
    results = translator.translate(sources, rerank=rerank, **options)
    good = mark_good([r.text for r in results], refs, args.good, args.min_chrf)
    found = calibrate([r.confidence for r in results], good, args.target_precision)
    record = {
        **asdict(found),
        "good_by": args.good if args.good == "exact" else f"chrf >= {args.min_chrf}",
        "src": str(args.src),
        "ref": str(args.ref),
        "checkpoint": args.checkpoint,
        "decode": opts.model_dump(mode="json"),
    }
    with atomic_path(args.run_dir / DIAGRAM_FILE) as tmp:
        reliability_diagram(tmp, found.bins, found.threshold, title=_title(found))
    atomic_write_text(args.run_dir / CALIBRATION_FILE, json.dumps(record, indent=2) + "\n")
    sys.stdout.write(format_calibration(found))
    print(f"wrote {args.run_dir / CALIBRATION_FILE} and {args.run_dir / DIAGRAM_FILE}")
    return 0


def _title(found: Calibration) -> str:
    if found.threshold is None:
        return f"precision {found.target_precision:.0%} not reached; ECE {found.ece:.3f}"
    return (
        f"threshold {found.threshold:.3f}: precision {found.precision:.1%}, "
        f"coverage {found.coverage:.1%}; ECE {found.ece:.3f}"
    )


def format_calibration(found: Calibration) -> str:
    """The report ``jumok calibrate`` prints."""
    head = f"{found.lines} lines, {found.good} good ({found.good / found.lines:.1%})\n"
    if found.threshold is None:
        body = (
            f"no threshold reaches precision {found.target_precision:.1%}: even the most "
            "confident line is wrong; calibration.json has threshold null and "
            "--abstain-below auto refuses it\n"
        )
    else:
        body = (
            f"threshold {found.threshold:.4f}: precision {found.precision:.1%} "
            f"(target {found.target_precision:.1%}), coverage {found.coverage:.1%}\n"
        )
    return head + body + f"expected calibration error (10 bins): {found.ece:.4f}\n"


# ---------------------------------------------------------------------- --abstain-below auto
def abstain_value(text: str) -> float | str:
    """``--abstain-below``: a number, or ``auto`` (the run's calibration.json)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a confidence (e.g. 0.6) or auto, got {text!r}"
        ) from None


def calibrated_threshold(run_dir: str | Path) -> float:
    """The threshold in ``run_dir``'s calibration.json.

    Raises:
        RunDirError: there is none (naming the file and the command that writes it), or it is
            unreadable, or its target precision was not reached.
    """
    run = Path(run_dir)
    path = (run if run.is_dir() else run.parent) / CALIBRATION_FILE
    make = f"jumok calibrate {path.parent} --src DEV_SRC --ref DEV_REF --target-precision P"
    if not path.is_file():
        raise RunDirError(f"--abstain-below auto: {path} does not exist; create it with: {make}")
    try:
        threshold = json.loads(path.read_text(encoding="utf-8"))["threshold"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(
            f"{path}: unreadable calibration ({err}); write it again: {make}"
        ) from None
    if threshold is None:
        raise RunDirError(
            f"{path}: its target precision was not reached (threshold null); calibrate with a "
            f"lower --target-precision: {make}"
        )
    if not isinstance(threshold, (int, float)):
        raise RunDirError(f"{path}: threshold: expected a number, got {threshold!r}")
    return float(threshold)


def resolve_abstain(
    options: dict[str, Any], run_dirs: str | Path | Sequence[str | Path]
) -> dict[str, Any]:
    """``options`` with ``abstain_below: auto`` replaced by the (first) run's calibrated
    threshold (an ensemble reads its first run's calibration.json)."""
    if options.get("abstain_below") != "auto":
        return options
    first = run_dirs if isinstance(run_dirs, (str, Path)) else run_dirs[0]
    return {**options, "abstain_below": calibrated_threshold(first)}
