"""Scores of decoded text against references."""

from __future__ import annotations

from collections.abc import Sequence


def exact_match(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Share of hypotheses identical to their reference, in [0, 1]."""
    _check(hyps, refs)
    if not refs:
        return 0.0
    return sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)


def token_accuracy(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> float:
    """Share of reference tokens matched at the same position, in [0, 1].

    Example: hyp ``1994-09-72`` against ref ``1994-09-27`` matches 8 of 10 characters: 0.8.
    """
    _check(hyps, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        return 0.0
    hits = sum(
        sum(a == b for a, b in zip(h, r, strict=False)) for h, r in zip(hyps, refs, strict=True)
    )
    return hits / total


def _check(hyps: Sequence, refs: Sequence) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, cased), 0-100."""
    _check(hyps, refs)
    if not refs:
        return 0.0
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults), 0-100."""
    _check(hyps, refs)
    if not refs:
        return 0.0
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score)
