"""Data check: what training would see in each split, measured before any training.

:func:`check_data` loads the splits exactly as :func:`jumok.training.train.train` does (the same readers,
hold-out and leak removal, the same tokenizers and train vocabularies) and measures, per split:
its size, its lengths in tokens, the share of tokens the train vocabularies do not know, repeated
and ambiguous pairs and, for dev and test, the overlap with train, both exact and after
normalisation, so that near-leaks (a change of case, punctuation or spacing) are visible.
:func:`format_report` renders the result as plain fixed-width tables of at most 100 columns: the
output of ``jumok data check``. Nothing is written next to the data: SentencePiece models are
trained into a temporary directory unless a ``workdir`` is given.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jumok.config import Config, DataConfig
from jumok.data.splits import Pair, Splits, load_splits, read_split
from jumok.data.tokenizers import Tokenizer
from jumok.data.vocab import SPECIALS, Vocab
from jumok.data.vocabularies import Vocabularies, build_vocabularies

SPLITS = ("train", "dev", "test")
PERCENTILES = (50, 90, 99)
UNK_WARN = 0.01  # warn when more than 1% of a split's source or target tokens are unknown
NEAR_LEAK_WARN = 0.01  # warn when at least 1% of dev/test sources occur in train (normalised)
WIDTH = 100  # most columns of a line of format_report


# ------------------------------------------------------------------------------- measurements
def normalise(text: str) -> str:
    """A source as compared for near-leaks: NFKC, lowercase, no punctuation, single spaces.

    Punctuation becomes a space rather than nothing, so that ``1/11/94`` and ``11/1/94`` (two
    different dates) stay apart as ``1 11 94`` and ``11 1 94``; at the edge of a word, where
    punctuation usually sits, this is the same as removing it: ``"Hello,  World!"`` ->
    ``"hello world"``.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def length_summary(lengths: Sequence[int]) -> dict[str, int | None]:
    """``min``, ``p50``, ``p90``, ``p99`` and ``max`` of ``lengths`` (all None when empty).

    Percentiles are nearest-rank: the p-th is the ceil(p/100 * n)-th smallest length, so it is
    always a length that occurs. For lengths 1..10, p50 = 5, p90 = 9 and p99 = 10.
    """
    ordered = sorted(lengths)
    summary: dict[str, int | None] = {"min": ordered[0] if ordered else None}
    for p in PERCENTILES:
        rank = math.ceil(p / 100 * len(ordered))
        summary[f"p{p}"] = ordered[max(rank, 1) - 1] if ordered else None
    summary["max"] = ordered[-1] if ordered else None
    return summary


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


@dataclass(frozen=True)
class SideStats:
    """One side (source or target) of a split, counted in tokens of the configured tokenizer.

    ``unk_rate`` is ``unknown / tokens``: the share of running tokens that the train vocabulary
    of this side does not hold (they become ``<unk>``). ``coverage`` is ``types_known / types``:
    the share of the split's distinct tokens that it does hold. Rates are None for an empty split.
    """

    length: dict[str, int | None]
    tokens: int
    unknown: int
    unk_rate: float | None
    types: int
    types_known: int
    coverage: float | None


def side_stats(token_lists: Sequence[Sequence[str]], vocab: Vocab) -> SideStats:
    """Lengths, unknown tokens and coverage of one side of a split against ``vocab``."""
    lengths = [len(tokens) for tokens in token_lists]
    unknown = sum(vocab.encode(tokens).unknown for tokens in token_lists)
    types = sorted({token for tokens in token_lists for token in tokens})
    types_known = len(types) - vocab.encode(types).unknown
    return SideStats(
        length=length_summary(lengths),
        tokens=sum(lengths),
        unknown=unknown,
        unk_rate=_rate(unknown, sum(lengths)),
        types=len(types),
        types_known=types_known,
        coverage=_rate(types_known, len(types)),
    )


@dataclass(frozen=True)
class Overlap:
    """Pairs of a dev or test split that (nearly) occur in train; rates are shares of its pairs.

    ``sources`` counts pairs whose source occurs in train exactly (with any target);
    ``sources_normalised`` those whose :func:`normalise`-d source does, so it includes
    ``sources``, and the difference is the near-leaks.
    """

    pairs: int
    pairs_rate: float | None
    sources: int
    sources_rate: float | None
    sources_normalised: int
    sources_normalised_rate: float | None


class TrainIndex:
    """The train pairs, sources and normalised sources, to look dev and test pairs up in."""

    def __init__(self, train: Sequence[Pair]):
        self.pairs = set(train)
        self.sources = {source for source, _ in train}
        self.normalised = {normalise(source) for source in self.sources}

    def overlap(self, pairs: Sequence[Pair]) -> Overlap:
        """How many of ``pairs`` occur in train: as pairs, by source, by normalised source."""
        n = len(pairs)
        in_pairs = sum(1 for pair in pairs if pair in self.pairs)
        in_sources = sum(1 for source, _ in pairs if source in self.sources)
        in_normalised = sum(1 for source, _ in pairs if normalise(source) in self.normalised)
        return Overlap(
            in_pairs,
            _rate(in_pairs, n),
            in_sources,
            _rate(in_sources, n),
            in_normalised,
            _rate(in_normalised, n),
        )


def repeated_pairs(pairs: Sequence[Pair]) -> int:
    """Pairs that repeat an earlier pair of the same split exactly (``len - distinct``)."""
    return len(pairs) - len(set(pairs))


def ambiguous_sources(pairs: Sequence[Pair]) -> int:
    """Distinct sources that occur with more than one distinct target."""
    targets: dict[str, set[str]] = defaultdict(set)
    for source, target in pairs:
        targets[source].add(target)
    return sum(1 for found in targets.values() if len(found) > 1)


@dataclass(frozen=True)
class SplitStats:
    """Everything :func:`check_data` measures on one split.

    ``over_limit`` counts pairs longer than ``data.max_source_length`` or
    ``data.max_target_length`` tokens (training drops those of train). ``overlap`` is None for
    train itself.
    """

    pairs: int
    source: SideStats
    target: SideStats
    over_limit: int
    repeated_pairs: int
    ambiguous_sources: int
    overlap: Overlap | None


def split_stats(
    pairs: Sequence[Pair],
    tokenizers: tuple[Tokenizer, Tokenizer],
    vocabs: tuple[Vocab, Vocab],
    data: DataConfig,
    train: TrainIndex | None,
) -> SplitStats:
    """Measure one split; ``train`` is None when ``pairs`` is the train split itself."""
    src_tokens = [tokenizers[0].tokenize(source) for source, _ in pairs]
    tgt_tokens = [tokenizers[1].tokenize(target) for _, target in pairs]
    over_limit = sum(
        1
        for src, tgt in zip(src_tokens, tgt_tokens, strict=True)
        if len(src) > data.max_source_length or len(tgt) > data.max_target_length
    )
    return SplitStats(
        pairs=len(pairs),
        source=side_stats(src_tokens, vocabs[0]),
        target=side_stats(tgt_tokens, vocabs[1]),
        over_limit=over_limit,
        repeated_pairs=repeated_pairs(pairs),
        ambiguous_sources=ambiguous_sources(pairs),
        overlap=None if train is None else train.overlap(pairs),
    )


# ------------------------------------------------------------------------------------- report
def check_data(cfg: Config, workdir: Path | None = None) -> dict[str, Any]:
    """Load the data of ``cfg`` as training would and measure every split.

    Args:
        cfg: a resolved config; only ``cfg.data`` and ``cfg.train.seed`` (the SentencePiece
            seed, as in training) are used.
        workdir: where SentencePiece models go. A model already there is loaded as it is, as a
            run directory's is; None = train them into a temporary directory that is removed.

    Returns:
        A JSON-ready dict: ``tokenizer``, ``vocab`` (sizes of the train vocabularies, specials
        included), ``limits``, ``notes`` (what loading did: rows dropped, pairs held out, leaks
        removed), ``removed_with_holdout``, ``splits`` (``train``/``dev``/``test`` ->
        :class:`SplitStats` as a dict) and ``warnings``.

    Raises:
        DataError, ConfigError: a data file is missing or malformed, or the config does not fit.
    """
    data = cfg.data
    splits = load_splits(data)
    notes = list(splits.notes)
    removed = holdout_repeats(data, splits)  # load_splits says so in its notes as well
    v = _vocabularies(cfg, splits, workdir)
    tokenizers, vocabs = (v.src_tok, v.tgt_tok), (v.src_vocab, v.tgt_vocab)
    index = TrainIndex(splits.train)
    stats = {
        name: split_stats(
            getattr(splits, name), tokenizers, vocabs, data, None if name == "train" else index
        )
        for name in SPLITS
    }
    return {
        "tokenizer": {"kind": data.tokenizer.kind, "joint": data.tokenizer.joint},
        "vocab": {"source": len(vocabs[0]), "target": len(vocabs[1])},
        "limits": {
            "max_source_length": data.max_source_length,
            "max_target_length": data.max_target_length,
        },
        "notes": notes,
        "removed_with_holdout": removed,
        "splits": {name: asdict(s) for name, s in stats.items()},
        "warnings": find_warnings(stats, data),
    }


def holdout_repeats(data: DataConfig, splits: Splits) -> int:
    """Train rows beyond the dev pairs themselves that a held-out dev removed from train.

    With no ``data.dev``, dev is drawn from the *distinct* train pairs and then every train row
    equal to a dev pair is removed, so each extra copy of a dev pair leaves train too (noted by
    :func:`~jumok.data.splits.load_splits`). The train file is read once more to count them (0 when dev
    is given or generated).
    """
    if data.generate is not None or data.dev is not None or data.train is None or not splits.dev:
        return 0
    dev = set(splits.dev)
    return sum(1 for pair in read_split(data, data.train, []) if pair in dev) - len(dev)


def _vocabularies(cfg: Config, splits: Splits, workdir: Path | None) -> Vocabularies:
    """Tokenizers and vocabularies built by training's own code, so they are the ones a run uses."""
    quiet = lambda _: None  # noqa: E731
    if workdir is not None or cfg.data.tokenizer.kind != "sentencepiece":
        return build_vocabularies(cfg, splits, Path(workdir or "."), quiet)  # char/word: no files
    # A trained SentencePiece model lives on in memory after its file is gone.
    with tempfile.TemporaryDirectory(prefix="jumok-datacheck-") as directory:
        return build_vocabularies(cfg, splits, Path(directory), quiet)


def find_warnings(stats: dict[str, SplitStats], data: DataConfig) -> list[str]:
    """The findings worth a look, one line each, in split order."""
    found: list[str] = []
    for name, s in stats.items():
        if s.pairs == 0:
            found.append(f"{name} is empty")
            continue
        if name == "train" and s.over_limit:
            found.append(
                f"train: {s.over_limit} pairs are longer than data.max_source_length "
                f"({data.max_source_length}) or data.max_target_length "
                f"({data.max_target_length}) tokens; training drops them"
            )
        for side in ("source", "target"):
            rate = getattr(s, side).unk_rate
            if rate is not None and rate > UNK_WARN:
                found.append(f"{side} unk rate {_pct(rate, 1)} in {name}")
        if s.repeated_pairs:
            found.append(f"{name}: {s.repeated_pairs} pairs repeat an earlier pair exactly")
        if s.ambiguous_sources:
            found.append(
                f"{name}: {s.ambiguous_sources} sources occur with more than one different target"
            )
        o = s.overlap
        if o is None:
            continue
        if o.pairs:
            found.append(f"{name}: {o.pairs} pairs ({_pct(o.pairs_rate, 1)}) also occur in train")
        if o.sources_normalised and (o.sources_normalised_rate or 0) >= NEAR_LEAK_WARN:
            found.append(
                f"{name}: {_pct(o.sources_normalised_rate, 1)} of sources also occur in train "
                f"after normalisation ({_pct(o.sources_rate, 1)} exactly)"
            )
    return found


# ----------------------------------------------------------------------------------- rendering
def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`check_data` as plain text: notes, three tables, warnings.

    Every line fits in 100 columns; one table row per split, ``-`` where a value does not apply
    (an empty split, train's overlap with itself).
    """
    vocab, tk = report["vocab"], report["tokenizer"]
    kind = tk["kind"] + (
        f" ({'joint' if tk['joint'] else 'separate'})" if tk["kind"] == "sentencepiece" else ""
    )
    lines = [
        f"tokenizer: {kind}; train vocabularies: {vocab['source']} source and "
        f"{vocab['target']} target tokens ({len(SPECIALS)} special each)",
        "",
        "notes:",
        *_bullets(report["notes"]),
        "",
    ]
    splits = report["splits"]
    lines += [
        "lengths in tokens (over limit: longer than data.max_source_length "
        f"{report['limits']['max_source_length']} or max_target_length "
        f"{report['limits']['max_target_length']})",
        *_length_table(splits),
        "",
        "vocabulary (unknown = not in the train vocabulary of that side)",
        *_vocab_table(splits),
        "",
        "duplicates within each split, and dev/test pairs that also occur in train",
        *_overlap_table(splits),
        "",
        "warnings:" if report["warnings"] else "warnings: none",
        *_bullets(report["warnings"]),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _bullets(items: Sequence[str]) -> list[str]:
    out = []
    for item in items:
        # break_long_words: a long path must not push a line past WIDTH
        out += textwrap.wrap(item, WIDTH, initial_indent="- ", subsequent_indent="  ")
    return out


def _length_table(splits: dict[str, Any]) -> list[str]:
    keys = ["min", *(f"p{p}" for p in PERCENTILES), "max"]
    columns = [("", "split"), ("", "pairs")]
    columns += [("source", k) for k in keys] + [("target", k) for k in keys]
    columns.append(("", "over limit"))
    rows = []
    for name, s in splits.items():
        cells = [name, str(s["pairs"])]
        for side in ("source", "target"):
            cells += [_num(s[side]["length"][k]) for k in keys]
        rows.append([*cells, str(s["over_limit"])])
    return _table(columns, rows)


def _vocab_table(splits: dict[str, Any]) -> list[str]:
    columns = [("", "split")]
    for side in ("source", "target"):
        columns += [(side, h) for h in ("tokens", "unk", "unk rate", "types", "coverage")]
    rows = []
    for name, s in splits.items():
        cells = [name]
        for side in ("source", "target"):
            v = s[side]
            cells += [
                str(v["tokens"]),
                str(v["unknown"]),
                _pct(v["unk_rate"]),
                str(v["types"]),
                _pct(v["coverage"]),
            ]
        rows.append(cells)
    return _table(columns, rows)


def _overlap_table(splits: dict[str, Any]) -> list[str]:
    columns = [
        ("", "split"),
        ("duplicates", "repeated pairs"),
        ("duplicates", "ambiguous sources"),
        ("also in train", "pairs"),
        ("also in train", "sources"),
        ("also in train", "normalised sources"),
    ]
    rows = []
    for name, s in splits.items():
        o = s["overlap"]
        if o is None:
            found = ["-", "-", "-"]
        else:
            found = [
                _count_pct(o["pairs"], o["pairs_rate"]),
                _count_pct(o["sources"], o["sources_rate"]),
                _count_pct(o["sources_normalised"], o["sources_normalised_rate"]),
            ]
        rows.append([name, str(s["repeated_pairs"]), str(s["ambiguous_sources"]), *found])
    return _table(columns, rows)


def _table(columns: list[tuple[str, str]], rows: list[list[str]]) -> list[str]:
    """Columns two spaces apart, the first left-aligned, the rest right-aligned, under a line of
    group labels: ``("source", "p50")`` puts ``p50`` under a ``--- source ---`` rule spanning
    the neighbouring columns of the same group."""
    gap = 2
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (_, h) in enumerate(columns)]
    starts = [sum(widths[:i]) + gap * i for i in range(len(widths))]
    groups = ""
    i = 0
    while i < len(columns):
        j = i
        while j + 1 < len(columns) and columns[j + 1][0] == columns[i][0]:
            j += 1
        if columns[i][0]:
            span = starts[j] + widths[j] - starts[i]
            groups = groups.ljust(starts[i]) + f" {columns[i][0]} ".center(span, "-")
        i = j + 1

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (" " * gap).join(parts).rstrip()

    return [groups, line([h for _, h in columns]), *(line(row) for row in rows)]


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pct(rate: float | None, digits: int = 2) -> str:
    return "-" if rate is None else f"{100 * rate:.{digits}f}%"


def _count_pct(count: int, rate: float | None) -> str:
    return "-" if rate is None else f"{count} ({_pct(rate, 1)})"
