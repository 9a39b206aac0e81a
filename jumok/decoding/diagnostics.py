"""Numbers that say whether a model's attention is doing anything useful.

:func:`diagnose` reads one attention matrix (output tokens x source tokens, rows summing to 1)
and returns :class:`AttentionDiagnostics`: how peaked each row is (entropy), how much of the
source is looked at (coverage), whether the alignment runs left to right (monotonicity) and
whether attention has collapsed onto the last token the encoder read (final_share, collapsed).
:func:`summarize` averages them over a data set and words a warning when attention has collapsed;
:func:`format_summary` turns that into one or two lines for a terminal. ``docs/diagnostics.md``
explains how to read each number.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# A row may miss 1 by this much (float32 softmax, rounding in JSON) before it is rejected.
ROW_SUM_TOLERANCE = 1e-3
DECIMALS = 4


@dataclass(frozen=True)
class AttentionDiagnostics:
    """Diagnostics of one attention matrix with T output tokens (rows) and S source tokens.

    Attributes:
        entropy: per output token, the Shannon entropy of its weight row in nats (0 = all weight
            on one source token, log S = spread evenly).
        mean_entropy: the mean of ``entropy`` (0.0 when T == 0).
        coverage: share of source positions that are the argmax of at least one row, in [0, 1].
        monotonicity: length of the longest non-decreasing subsequence of the rows' argmax
            positions, divided by T; 1.0 = a monotone (left-to-right) alignment, 1/T = reversed.
        final_share: share of output tokens whose row puts more than half its weight on the
            collapse position(s) (the last token the encoder read). 0.0 when the collapse
            positions are every source column (e.g. S == 1): attention had no choice there.
        collapsed: ``final_share > 0.5``; most output tokens look only at the last token read.
    """

    entropy: list[float]
    mean_entropy: float
    coverage: float
    monotonicity: float
    final_share: float
    collapsed: bool

    @property
    def num_outputs(self) -> int:
        """T, the number of output tokens (rows) diagnosed."""
        return len(self.entropy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values, floats rounded to 4 decimals."""
        return {
            "entropy": [round(e, DECIMALS) for e in self.entropy],
            "mean_entropy": round(self.mean_entropy, DECIMALS),
            "coverage": round(self.coverage, DECIMALS),
            "monotonicity": round(self.monotonicity, DECIMALS),
            "final_share": round(self.final_share, DECIMALS),
            "collapsed": self.collapsed,
        }


def _as_array(weights_TS: Any) -> np.ndarray:
    if isinstance(weights_TS, torch.Tensor):
        array = weights_TS.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(weights_TS, dtype=np.float64)
    if array.shape == (0,):  # [] from a translation with no output tokens: no rows at all
        array = array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(
            f"attention weights must be 2-D (output tokens, source tokens); got shape "
            f"{tuple(array.shape)}"
        )
    return array


def _validate(weights_TS: np.ndarray) -> None:
    T, S = weights_TS.shape
    if T == 0:
        return
    if S == 0:
        raise ValueError(
            f"attention weights of shape {(T, S)}: {T} output tokens but no source tokens"
        )
    if not np.isfinite(weights_TS).all():
        raise ValueError(f"attention weights of shape {(T, S)} contain NaN or infinity")
    if (weights_TS < 0).any():
        raise ValueError(f"attention weights of shape {(T, S)} contain negative values")
    sums_T = weights_TS.sum(axis=1)
    worst = int(np.argmax(np.abs(sums_T - 1.0)))
    if abs(sums_T[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise ValueError(
            f"attention weights of shape {(T, S)}: row {worst} sums to {sums_T[worst]:.6g}, "
            "expected 1 (pass softmax weights over the real source tokens, not scores)"
        )


def _entropy_T(weights_TS: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row in nats, with 0 * log 0 = 0."""
    p_TS = weights_TS / weights_TS.sum(axis=1, keepdims=True)  # absorb float32 rounding
    logp_TS = np.log(np.where(p_TS > 0, p_TS, 1.0))  # log 1 = 0 where p == 0
    entropy_T = -(p_TS * logp_TS).sum(axis=1)
    return np.clip(entropy_T, 0.0, math.log(weights_TS.shape[1]))


def longest_non_decreasing(values: Iterable[int]) -> int:
    """Length of the longest non-decreasing subsequence (patience sorting, O(n log n))."""
    tails: list[int] = []  # tails[k]: smallest last value of such a subsequence of length k + 1
    for v in values:
        k = bisect.bisect_right(tails, v)
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
    return len(tails)


def diagnose(
    weights_TS: Any, collapse_positions: Iterable[int] | None = None
) -> AttentionDiagnostics:
    """Diagnose one attention matrix.

    Args:
        weights_TS: a torch Tensor, numpy array or nested list of shape (T output tokens,
            S real source tokens), each row summing to 1, columns in the source's original order.
        collapse_positions: the source columns that count as "the last token the encoder read"
            (final token or eos). Default: the last column, S - 1. For a model that read the
            source reversed, pass ``{0}``. Negative indices count from the end.

    With T == 0 (no output tokens, also ``[]``) every number is 0 and nothing is collapsed.

    Raises:
        ValueError: the weights are not 2-D, hold negative or non-finite values, have rows that
            do not sum to 1, or a collapse position lies outside the S columns.
    """
    w_TS = _as_array(weights_TS)
    _validate(w_TS)
    T, S = w_TS.shape
    if T == 0:
        return AttentionDiagnostics([], 0.0, 0.0, 0.0, 0.0, False)
    positions = {S - 1} if collapse_positions is None else {int(p) for p in collapse_positions}
    for p in sorted(positions):
        if not -S <= p < S:
            raise ValueError(
                f"collapse position {p} is outside the {S} source columns of attention weights "
                f"of shape {(T, S)}"
            )
    entropy_T = _entropy_T(w_TS)
    argmax_T = w_TS.argmax(axis=1)
    coverage = len(np.unique(argmax_T)) / S
    monotonicity = longest_non_decreasing(argmax_T.tolist()) / T
    columns = sorted({p % S for p in positions})
    if len(columns) == S:
        final_share = 0.0  # every column is a collapse position: nothing to choose between
    else:
        final_share = float((w_TS[:, columns].sum(axis=1) > 0.5).mean())
    return AttentionDiagnostics(
        entropy=[float(e) for e in entropy_T],
        mean_entropy=float(entropy_T.mean()),
        coverage=float(coverage),
        monotonicity=float(monotonicity),
        final_share=final_share,
        collapsed=final_share > 0.5,
    )


def summarize(items: Sequence[AttentionDiagnostics]) -> dict[str, Any]:
    """Data-set level view of many :class:`AttentionDiagnostics` (one per sentence).

    Returns a JSON-friendly dict (floats rounded to 4 decimals):
        count: number of sentences given.
        mean_entropy, coverage, monotonicity, final_share: means over the sentences with at
            least one output token (each sentence counts once).
        collapsed_share: share of those sentences that are ``collapsed``.
        token_final_share: share of all output tokens, over the whole set, that put more than
            half their weight on the last token read (token-weighted final_share).
        warning: a sentence for the user when ``token_final_share > 0.5``, else None.
    """
    used = [d for d in items if d.num_outputs > 0]
    tokens = sum(d.num_outputs for d in used)

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), DECIMALS) if values else 0.0

    token_final_share = sum(d.final_share * d.num_outputs for d in used) / tokens if tokens else 0.0
    warning = None
    if token_final_share > 0.5:
        warning = (
            f"attention collapse: {100 * token_final_share:.0f}% of output tokens put most of "
            "their weight on the last source token the encoder read; the decoder is not using "
            "attention — it translates from the encoder's last state alone, like a model "
            "without attention. Train longer or with a lower learning rate, and check the "
            "attention settings (see docs/diagnostics.md)."
        )
    return {
        "count": len(items),
        "mean_entropy": mean([d.mean_entropy for d in used]),
        "coverage": mean([d.coverage for d in used]),
        "monotonicity": mean([d.monotonicity for d in used]),
        "final_share": mean([d.final_share for d in used]),
        "collapsed_share": mean([float(d.collapsed) for d in used]),
        "token_final_share": round(token_final_share, DECIMALS),
        "warning": warning,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One line of numbers for a :func:`summarize` dict, plus a second line with its warning."""
    count = summary["count"]
    line = (
        f"attention over {count} sentence{'' if count == 1 else 's'}: "
        f"entropy {summary['mean_entropy']:.2f} nats, "
        f"coverage {100 * summary['coverage']:.1f}%, "
        f"monotonicity {100 * summary['monotonicity']:.1f}%, "
        f"last-token share {100 * summary['final_share']:.1f}%, "
        f"collapsed {100 * summary['collapsed_share']:.1f}%"
    )
    if summary.get("warning"):
        line += f"\nwarning: {summary['warning']}"
    return line
