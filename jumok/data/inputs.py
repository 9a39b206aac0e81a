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


def read_lines(source: str | Path, max_chars: int = MAX_INPUT_CHARS) -> list[str]:
    """Lines of a file or stdin, one text each.

    Raises:
        DataError: naming the line: bad UTF-8, an empty line, a line break inside, or a line
            longer than ``max_chars`` (most likely not one sentence per line).
    """
    source = str(source)
    name = "<stdin>" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
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
    texts = []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{name}:{number}: not valid UTF-8 (byte {err.start + 1} of the line); "
                "expected a UTF-8 text file"
            ) from None
        if not text.strip():
            raise DataError(f"{name}:{number}: empty line; expected one text per line")
        if len(text) > max_chars:
            raise DataError(
                f"{name}:{number}: {len(text)} characters; expected at most {max_chars} per line "
                "(--max-input-chars): is the file one sentence per line?"
            )
        problem = text_problem(text)
        if problem:
            raise DataError(f"{name}:{number}: {problem}")
        texts.append(text)
    return texts
