"""Sentence-pair readers for the common corpus formats, eager and streaming.

Four formats, each read line by line (so a corpus larger than memory can be streamed):

* ``tsv``: tab-separated columns, chosen by index (``fra.txt`` of Tatoeba/manythings);
* ``csv``: a header row and standard CSV quoting, columns chosen by name (``ChatbotData.csv``);
* ``parallel``: two plain-text files, line *i* of one pairs with line *i* of the other
  (Multi30k ``train.en``/``train.de``);
* ``jsonl``: one JSON object per line, fields chosen by name or dotted path
  (``translation.en`` for ``{"translation": {"en": ..., "de": ...}}``).

Every file is UTF-8 with or without a BOM, LF or CRLF. Fields lose their surrounding whitespace
and their control characters (other than tab and line breaks; counted).
A row whose source or target is then empty, or a blank line (nothing but whitespace), is dropped
and counted in :class:`ReadReport`, never silently. Anything malformed raises
:class:`~jumok.errors.DataError` as ``FILE:LINE: what is wrong, what was expected``.

Real corpora (chat logs, scraped captions) have a few such rows, and one should not stop a run.
The one exception is explicit: :func:`read_tsv` with ``empty="reject"`` reads jumok's own pair
files (:func:`jumok.data.splits.read_pairs`), where a blank line or an empty side is an error.
"""

from __future__ import annotations

import csv
import difflib
import errno
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from jumok.data.inputs import remove_controls
from jumok.errors import DataError

Pair = tuple[str, str]
T = TypeVar("T")

READER_KINDS = ("tsv", "csv", "parallel", "jsonl", "dlfs2")
EMPTY_POLICIES = ("drop", "reject")  # read_tsv's ``empty``: what a blank line or empty side gets
EmptyPolicy = Literal["drop", "reject"]
EMPTY_SIDE = "empty source or target"
BLANK_LINE = "blank line"
_BOM = b"\xef\xbb\xbf"


# ------------------------------------------------------------------------------------- report
@dataclass
class ReadReport:
    """What happened while reading a corpus: rows seen and rows dropped, by reason.

    ``rows`` counts data rows (a header row is not one), so ``pairs == rows - sum(dropped)``.
    """

    path: str
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    controls: int = 0  # control characters removed from the pairs kept (see remove_controls)

    @property
    def pairs(self) -> int:
        """Number of pairs kept."""
        return self.rows - sum(self.dropped.values())

    def clean(self, text: str) -> str:
        """``text`` without control characters (counted)."""
        text, removed = remove_controls(text)
        self.controls += removed
        return text

    def drop(self, reason: str) -> None:
        """Count one dropped row under ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def describe(self) -> str:
        """One line for a log, e.g. ``train.csv: 98 pairs from 100 rows (dropped: 2 blank line)``."""
        line = f"{self.path}: {_count(self.pairs, 'pair')} from {_count(self.rows, 'row')}"
        if self.dropped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
            line += f" (dropped: {reasons})"
        if self.controls:
            line += f"; removed {_count(self.controls, 'control character')}"
        return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class PairStream(Iterator[Pair]):
    """Pairs read lazily; ``report`` is filled in as they are read and is final at the end.

    ``empty``: ``"drop"`` strips both sides and drops blank lines and empty sides
    (:func:`_keep_nonempty`); ``"reject"``: ``rows`` raise at those themselves, and their pairs
    are passed on as they are, only counted.
    """

    def __init__(
        self, rows: Iterator[Pair | None], report: ReadReport, empty: EmptyPolicy = "drop"
    ):
        self.report = report
        self._pairs = _keep_nonempty(rows, report) if empty == "drop" else _counted(rows, report)

    def __iter__(self) -> PairStream:
        return self

    def __next__(self) -> Pair:
        return next(self._pairs)


def _keep_nonempty(rows: Iterator[Pair | None], report: ReadReport) -> Iterator[Pair]:
    """Strip both sides, drop (and count) blank lines (``None``) and empty sides.

    Raises:
        DataError: at the end, if not one pair was kept.
    """
    kept = 0
    for row in rows:
        report.rows += 1
        if row is None:
            report.drop(BLANK_LINE)
            continue
        source, target = report.clean(row[0]).strip(), report.clean(row[1]).strip()
        if not source or not target:
            report.drop(EMPTY_SIDE)
            continue
        kept += 1
        yield source, target
    if kept == 0:
        detail = f" ({_count(report.rows, 'row')}, all dropped)" if report.rows else ""
        raise DataError(f"{report.path}: no sentence pairs{detail}")


def _counted(rows: Iterator[Pair], report: ReadReport) -> Iterator[Pair]:
    """The pairs of ``rows``, each counted as a row (nothing is dropped; control characters are
    removed)."""
    for row in rows:
        report.rows += 1
        yield report.clean(row[0]), report.clean(row[1])


# -------------------------------------------------------------------------------------- lines
def _require_file(path: Path, missing: str = "file not found") -> None:
    """Fail before streaming starts rather than at the first ``next``."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a file")
    if not path.exists():
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                missing = "a loop of symbolic links; expected a file"
        raise DataError(f"{path}: {missing}")


def _raw_lines(path: Path, missing: str = "file not found") -> Iterator[bytes]:
    """Yield the lines of ``path`` as bytes, without ``\\n``/``\\r\\n`` and without a BOM."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from None
    with file:
        for number, raw in enumerate(file, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if number == 1 and raw.startswith(_BOM):  # utf-8-sig, first line only
                raw = raw[len(_BOM) :]
            yield raw


def _decode(path: Path, number: int, raw: bytes, hint: str = "expected a UTF-8 file") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}:{number}: not valid UTF-8 (byte {err.start + 1} of the line); {hint}"
        ) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` pairs, numbered from 1."""
    for number, raw in enumerate(_raw_lines(path), start=1):
        yield number, _decode(path, number, raw)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------- tsv
def _tsv_rows(
    path: Path, source_column: int, target_column: int, header: bool
) -> Iterator[Pair | None]:
    needed = max(source_column, target_column) + 1
    wanted = f"source in column {source_column}, target in column {target_column}"
    width, width_line = None, 0  # every row must have as many columns as the first
    for number, line in _lines(path):
        columns = line.split("\t")
        if header and number == 1:
            if len(columns) < needed:
                raise DataError(
                    f"{path}:1: the header has {len(columns)} tab-separated columns; "
                    f"expected at least {needed} ({wanted})"
                )
            width, width_line = len(columns), 1
            continue
        if not line.strip():
            yield None
            continue
        if len(columns) < needed:
            raise DataError(
                f"{path}:{number}: found {_count(len(columns), 'tab-separated column')}; "
                f"expected at least {needed} ({wanted}): {_clip(line)!r}"
            )
        if width is None:
            width, width_line = len(columns), number
        elif len(columns) != width:
            raise DataError(
                f"{path}:{number}: found {len(columns)} tab-separated columns, but line "
                f"{width_line} has {width}; expected the same number on every line "
                "(a field may hold a stray tab)"
            )
        yield columns[source_column], columns[target_column]


def _pair_file_rows(path: Path) -> Iterator[Pair]:
    """The rows of one of jumok's pair files, read strictly (``empty="reject"``).

    Exactly ``source<TAB>target`` on every line, neither side blank, the sides kept as written;
    blank lines (ASCII whitespace only) are allowed at the end of the file alone. Anything else
    raises a :class:`~jumok.errors.DataError` at its line, as does a file without a pair.
    """
    blank: list[tuple[int, bytes]] = []  # fine at the end of the file, an error before a pair
    found = False
    for number, raw in enumerate(_raw_lines(path, "data file not found"), start=1):
        if not raw.strip():
            blank.append((number, raw))
            continue
        for at, line in [*blank, (number, raw)]:  # a blank line before this one fails the checks
            yield _pair_file_row(path, at, line)
        blank.clear()
        found = True
    if not found:
        raise DataError(f"{path}: the file holds no pairs; expected lines of source<TAB>target")


def _pair_file_row(path: Path, number: int, raw: bytes) -> Pair:
    text = _decode(path, number, raw, "save the file as UTF-8")
    parts = text.split("\t")
    if len(parts) != 2:
        found = "no tab" if len(parts) == 1 else f"{len(parts) - 1} tabs"
        raise DataError(
            f"{path}:{number}: expected source<TAB>target, found {found}: {_clip(text)!r}"
        )
    source, target = parts
    if not source.strip():
        raise DataError(f"{path}:{number}: the source (before the tab) is empty")
    if not target.strip():
        raise DataError(f"{path}:{number}: the target (after the tab) is empty")
    return source, target


def _stream_tsv(
    path: str | Path,
    source_column: int = 0,
    target_column: int = 1,
    header: bool = False,
    empty: EmptyPolicy = "drop",
) -> PairStream:
    if source_column < 0 or target_column < 0:
        raise ValueError(f"column indexes must be >= 0, got {source_column}, {target_column}")
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"unknown empty policy {empty!r}; expected one of {EMPTY_POLICIES}")
    path = Path(path)
    report = ReadReport(str(path))
    if empty == "reject":
        if (source_column, target_column, header) != (0, 1, False):
            raise ValueError(
                "empty='reject' reads jumok's pair files: source in column 0, target in column 1, "
                "no header"
            )
        _require_file(path, "data file not found")
        return PairStream(_pair_file_rows(path), report, empty)
    _require_file(path)
    return PairStream(_tsv_rows(path, source_column, target_column, header), report)


def read_tsv(
    path: str | Path,
    source_column: int = 0,
    target_column: int = 1,
    header: bool = False,
    *,
    empty: EmptyPolicy = "drop",
) -> tuple[list[Pair], ReadReport]:
    """Read a tab-separated file; columns are chosen by 0-based index.

    Columns after the ones used are allowed (Tatoeba's ``kor.txt`` has an attribution column), but
    every row must have the same number of columns, so a stray tab inside a field is caught.

    Args:
        path: the file.
        source_column: index of the source column.
        target_column: index of the target column.
        header: the first line names the columns and is skipped.
        empty: the policy for a blank line or a row with an empty side. ``"drop"`` (corpora):
            both sides are stripped, and such rows are dropped and counted in the report.
            ``"reject"`` (jumok's own pair files, :func:`jumok.data.splits.read_pairs`): such a
            row is an error, and the format is strict: exactly ``source<TAB>target`` on every
            line (the default columns, no header), the sides kept as written, blank lines only at
            the end of the file.

    Returns:
        The pairs, in file order, and what was read and dropped.

    Raises:
        DataError: missing file, bad UTF-8, a row with too few or a different number of columns,
            or no pairs at all; with ``empty="reject"`` also a row without exactly one tab, a
            blank line before the end or an empty side. The message names file and line.
    """
    stream = _stream_tsv(path, source_column, target_column, header, empty)
    return list(stream), stream.report


# ----------------------------------------------------------------------------------------- csv
def _did_you_mean(name: str, options: list[str]) -> str:
    by_folded = {option.casefold(): option for option in options}
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=1)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


def _csv_rows(path: Path, source: str, target: str, delimiter: str) -> Iterator[Pair | None]:
    # csv needs the line ends back to keep newlines inside multi-line quoted fields.
    text_lines = (line + "\n" for _, line in _lines(path))
    # strict: an unterminated quote at the end of the file is an error, not a silent field.
    reader = csv.reader(text_lines, delimiter=delimiter, strict=True)
    columns: list[str] | None = None
    source_index = target_index = 0
    while True:
        start = reader.line_num + 1  # the line where the next record begins
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(
                f"{path}:{start}: malformed CSV row ({err}); expected fields separated by "
                f"{delimiter!r}, quoted with '\"' and every quote closed"
            ) from None
        if columns is None:
            if not row:
                continue  # blank lines before the header
            columns = [name.strip() for name in row]
            source_index = _column_index(path, columns, source)
            target_index = _column_index(path, columns, target)
            continue
        if len(row) <= 1 and not "".join(row).strip():  # [] if empty, [" "] if only spaces
            yield None
            continue
        if len(row) != len(columns):
            span = f" (the row runs to line {reader.line_num}: an unbalanced quote?)"
            raise DataError(
                f"{path}:{start}: found {_count(len(row), 'field')}; expected {len(columns)} "
                f"like the header ({', '.join(columns)})"
                + (span if reader.line_num > start else "")
            )
        yield row[source_index], row[target_index]


def _column_index(path: Path, columns: list[str], name: str) -> int:
    if name in columns:
        return columns.index(name)
    raise DataError(
        f"{path}: no column named {name!r}; the header has {', '.join(map(repr, columns))}"
        + _did_you_mean(name, columns)
    )


def _stream_csv(path: str | Path, source: str, target: str, delimiter: str = ",") -> PairStream:
    path = Path(path)
    _require_file(path)
    return PairStream(_csv_rows(path, source, target, delimiter), ReadReport(str(path)))


def read_csv(
    path: str | Path, source: str, target: str, delimiter: str = ","
) -> tuple[list[Pair], ReadReport]:
    """Read a CSV file with a header row; columns are chosen by name.

    Standard quoting (Python's ``csv`` module, strict): a quoted field may hold the delimiter,
    doubled quotes and newlines.

    Args:
        path: the file.
        source: header name of the source column.
        target: header name of the target column.
        delimiter: the field separator.

    Returns:
        The pairs, in file order, and what was read and dropped.

    Raises:
        DataError: missing file, bad UTF-8, an unknown column (the message lists the header and
            suggests a close name), a row with a different number of fields than the header, an
            unterminated quote, or no pairs. The message names file and line.
    """
    stream = _stream_csv(path, source, target, delimiter)
    return list(stream), stream.report


# ------------------------------------------------------------------------------------ parallel
def _parallel_rows(source_path: Path, target_path: Path) -> Iterator[Pair]:
    source_lines, target_lines = _raw_lines(source_path), _raw_lines(target_path)
    for number in itertools.count(1):
        source, target = next(source_lines, None), next(target_lines, None)
        if source is None and target is None:
            return
        if source is None or target is None:
            # Count what is left of the longer file (raw, so a bad byte there does not hide this).
            rest = sum(1 for _ in (target_lines if source is None else source_lines))
            longer, shorter = number + rest, number - 1
            counts = (shorter, longer) if source is None else (longer, shorter)
            ended = source_path if source is None else target_path
            raise DataError(
                f"{source_path} has {_count(counts[0], 'line')} but {target_path} has "
                f"{counts[1]}; expected equal counts, line i of one being the translation of "
                f"line i of the other ({ended} ends after line {shorter})"
            )
        yield _decode(source_path, number, source), _decode(target_path, number, target)


def _stream_parallel(source_path: str | Path, target_path: str | Path) -> PairStream:
    source_path, target_path = Path(source_path), Path(target_path)
    _require_file(source_path)
    _require_file(target_path)
    report = ReadReport(f"{source_path} + {target_path}")
    return PairStream(_parallel_rows(source_path, target_path), report)


def read_parallel(
    source_path: str | Path, target_path: str | Path
) -> tuple[list[Pair], ReadReport]:
    """Read two line-aligned text files: line *i* of ``source_path`` pairs with line *i* of
    ``target_path``. A blank line on either side drops that pair (counted).

    Returns:
        The pairs, in file order, and what was read and dropped.

    Raises:
        DataError: a missing file, bad UTF-8 (file and line), different line counts (both files
            and both counts), or no pairs.
    """
    stream = _stream_parallel(source_path, target_path)
    return list(stream), stream.report


# --------------------------------------------------------------------------------------- jsonl
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_field(path: Path, number: int, obj: dict, name: str) -> str:
    """Look ``name`` up in ``obj``: a key as written, or else a dotted path into nested objects."""
    if name in obj:
        value = obj[name]
    else:
        value, walked = obj, []
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                where = ".".join(walked) or "the object"
                keys = ", ".join(map(repr, value)) if isinstance(value, dict) else "none"
                raise DataError(
                    f"{path}:{number}: no field {name!r} ({where} has keys {keys}); "
                    f"expected every object to have it"
                )
            value = value[part]
            walked.append(part)
    if not isinstance(value, str):
        kind = _JSON_TYPES.get(type(value), type(value).__name__)
        raise DataError(
            f"{path}:{number}: field {name!r} is {kind} ({_clip(json.dumps(value))}); "
            "expected a string"
        )
    return value


def _jsonl_rows(path: Path, source: str, target: str) -> Iterator[Pair | None]:
    for number, line in _lines(path):
        if not line.strip():
            yield None
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno}); "
                "expected one JSON object per line"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}:{number}: found {_JSON_TYPES.get(type(obj), 'a value')}; expected a "
                f"JSON object with fields {source!r} and {target!r}"
            )
        yield _json_field(path, number, obj, source), _json_field(path, number, obj, target)


def _stream_jsonl(path: str | Path, source: str, target: str) -> PairStream:
    path = Path(path)
    _require_file(path)
    return PairStream(_jsonl_rows(path, source, target), ReadReport(str(path)))


def read_jsonl(path: str | Path, source: str, target: str) -> tuple[list[Pair], ReadReport]:
    """Read one JSON object per line; ``source``/``target`` name a field or a dotted path.

    Returns:
        The pairs, in file order, and what was read and dropped.

    Raises:
        DataError: missing file, bad UTF-8, invalid JSON, a line that is not an object, a missing
            field, a field that is not a string, or no pairs. The message names file and line.
    """
    stream = _stream_jsonl(path, source, target)
    return list(stream), stream.report


# --------------------------------------------------------------------------------------- dlfs2
def _dlfs2_rows(path: Path) -> Iterator[Pair | None]:
    for number, line in _lines(path):
        if not line.strip():
            yield None
            continue
        source, sep, target = line.partition("_")
        if not sep:
            raise DataError(
                f"{path}:{number}: no '_' between source and target; expected the book's "
                f"fixed-width 'source   _target' lines: {_clip(line)!r}"
            )
        yield source, target


def _stream_dlfs2(path: str | Path) -> PairStream:
    path = Path(path)
    _require_file(path)
    return PairStream(_dlfs2_rows(path), ReadReport(str(path)))


def read_dlfs2(path: str | Path) -> tuple[list[Pair], ReadReport]:
    """Read the book's toy data (``date.txt``, ``addition.txt`` of Deep Learning from Scratch 2).

    Each line is the source padded with spaces to a fixed width, ``_``, and the target padded the
    same way: ``16+75  _91  ``. The padding is stripped (jumok masks padding instead of reading
    it); the first ``_`` separates the two sides.
    """
    stream = _stream_dlfs2(path)
    return list(stream), stream.report


# ------------------------------------------------------------------------------------ dispatch
_STREAMS: dict[str, Callable[..., PairStream]] = {
    "tsv": _stream_tsv,
    "csv": _stream_csv,
    "parallel": _stream_parallel,
    "jsonl": _stream_jsonl,
    "dlfs2": _stream_dlfs2,
}


def iter_pairs(kind: str, **kwargs: object) -> PairStream:
    """Stream the pairs of a corpus lazily, line by line, with the same checks as the readers
    (``kind``: one of :data:`READER_KINDS`; ``kwargs``: those of the matching ``read_*``).

    Returns:
        An iterator of pairs whose ``report`` attribute is complete once it is exhausted. A
        missing file fails here; anything else fails at the line where it is found, after the
        pairs before it have been yielded.
    """
    if kind not in _STREAMS:
        raise ValueError(f"unknown reader kind {kind!r}; expected one of {READER_KINDS}")
    return _STREAMS[kind](**kwargs)


def read_pairs_as(kind: str, **kwargs: object) -> tuple[list[Pair], ReadReport]:
    """Read a whole corpus with the reader named by ``kind`` (see :func:`iter_pairs`)."""
    stream = iter_pairs(kind, **kwargs)
    return list(stream), stream.report
