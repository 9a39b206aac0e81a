"""What ``jumok translate``, ``jumok eval`` and the server read: one input text per line (or per
request), each checked on its own, with errors that name the line."""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

from jumok.errors import DataError

MAX_INPUT_CHARS = 10_000
# Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F) except tab and the
# line breaks LF and CR (a quoted CSV field may hold several lines)
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def remove_controls(text: str) -> tuple[str, int]:
    """``text`` without its control characters (tab and line breaks excepted), and how many
    were removed.

    NUL, escape, a stray carriage return and the like are signs of a binary or mangled file, not
    of language: training data, ``jumok translate`` and the server treat them alike.
    """
    return _CONTROLS.subn("", text)


def text_problem(text: str) -> str | None:
    """What makes ``text`` unusable as one input sentence, or None.

    A line break (it would be two sentences) or an unpaired surrogate is a problem; an empty or
    blank text is one too, once its other control characters are removed (they are, before
    decoding: see :func:`remove_controls`).
    """
    if not remove_controls(text)[0].strip():
        return "the text is empty; expected at least one character"
    for position, char in enumerate(text, start=1):
        if char in "\n\r\u2028\u2029":
            return f"line break at column {position}; expected one sentence per line"
        if unicodedata.category(char) == "Cs":
            return (
                f"unpaired surrogate U+{ord(char):04X} at column {position}; expected valid Unicode"
            )
    return None


def read_lines(
    source: str | Path, max_chars: int = MAX_INPUT_CHARS, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Lines of a file or stdin, one text each, and the notes on lines that were skipped.

    ``strict``: a line that cannot be one input (bad UTF-8, empty, longer than ``max_chars``, an
    unusable character) is an error naming it. Otherwise the output stays line-aligned, as other
    MT tools keep it: such a line becomes an empty text (decoded to an empty output), and every
    one but an empty line gets a note naming it. Control characters are not removed here: the
    translator removes and counts them.

    Raises:
        DataError: the file is missing or a directory; with ``strict``, a line as above.
    """
    name = "<stdin>" if str(source) == "-" else str(source)
    texts: list[str] = []
    notes: list[str] = []
    for number, line in enumerate(_raw_lines(source, name), start=1):
        text, problem = _one_text(line, max_chars)
        if problem and strict:
            raise DataError(f"{name}:{number}: {problem}")
        if problem and not problem.startswith("empty line"):
            notes.append(f"{name}:{number}: {problem}; its output is empty")
        texts.append("" if problem else text)
    return texts, notes


def _raw_lines(source: str | Path, name: str) -> list[bytes]:
    """The lines of the file (``-``: stdin) without line ends and a leading BOM."""
    try:
        raw = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: input file not found") from None
    except IsADirectoryError:
        raise DataError(
            f"{name}: is a directory; expected a text file, one input per line"
        ) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.rstrip(b"\r") for line in lines]


def _one_text(line: bytes, max_chars: int) -> tuple[str, str | None]:
    """A line's text, and what makes it unusable as one input (or None)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return "", (
            f"not valid UTF-8 (byte {err.start + 1} of the line); expected a UTF-8 text file"
        )
    if not text.strip():
        return text, "empty line; expected one text per line"
    if len(text) > max_chars:
        return text, (
            f"{len(text)} characters; expected at most {max_chars} per line "
            "(--max-input-chars): is the file one sentence per line?"
        )
    return text, text_problem(text)
