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


def distinct_n(outputs: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams / all word n-grams over the outputs,
    in [0, 1]. Words are split on whitespace. 0 when there is no n-gram at all."""
    grams = [
        tuple(words[i : i + n])
        for words in (text.split() for text in outputs)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def top_output_share(outputs: Sequence[str]) -> tuple[float, str]:
    """The share of the most frequent output and that output: 1.0 means the same answer to
    everything."""
    if not outputs:
        return 0.0, ""
    from collections import Counter

    text, count = Counter(outputs).most_common(1)[0]
    return count / len(outputs), text
