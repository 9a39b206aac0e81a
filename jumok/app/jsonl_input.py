"""``jumok translate --input-format jsonl``: one JSON object per input line, the text and what
steers its decoding, e.g. ``{"text": "Sep 27, 1994", "prefix": "1994-"}``.

The fields a line may have are one table (:data:`FIELDS`), so a new one (lexical constraints)
is one more entry and one more attribute of :class:`InputLine`. A line that is not a JSON
object, lacks ``text``, or has an unknown field or a field of the wrong type is an error naming
the line and the field, with or without ``--strict``: the file itself is malformed. A text that
cannot be one input (empty, too long, a line break) is treated as in a plain text file: an empty
output and a warning naming the line, or with ``--strict`` an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jumok.data.inputs import read_lines, text_problem
from jumok.errors import DataError

# Longest JSON line read (the text's own limit, --max-input-chars, is checked on the text).
MAX_LINE_CHARS = 10_000_000


@dataclass(frozen=True)
class InputLine:
    """One input of a jsonl file.

    Attributes:
        text: the text to decode ('' for a line that cannot be one input).
        prefix: what its output must start with; None when the line gives none (``--prefix``
            then applies). A JSON null or '' means no prefix, whatever ``--prefix`` says.
        has_prefix: the line has a ``prefix`` field.
    """

    text: str
    prefix: str | None = None
    has_prefix: bool = False


# field -> (the JSON types it takes, what the error says is expected); "text" is required.
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "text": ((str,), "a string"),
    "prefix": ((str, type(None)), "a string or null"),
}


def parse_line(line: str, where: str) -> InputLine:
    """One jsonl line as an :class:`InputLine` (its text not yet checked).

    Raises:
        DataError: naming ``where`` (file:line) and the field at fault.
    """
    example = '{"text": "...", "prefix": "..."}'
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{where}: not valid JSON ({err.msg} at column {err.colno}); --input-format jsonl "
            f"expects one object per line, e.g. {example}"
        ) from None
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: a JSON {type(record).__name__}; --input-format jsonl expects one object "
            f"per line, e.g. {example}"
        )
    for name, value in record.items():
        if name not in FIELDS:
            raise DataError(
                f"{where}: field {name!r} is unknown; expected {', '.join(map(repr, FIELDS))}"
            )
        kinds, expected = FIELDS[name]
        if not isinstance(value, kinds):
            raise DataError(
                f"{where}: field {name!r}: expected {expected}, got {json.dumps(value)[:40]}"
            )
    if "text" not in record:
        raise DataError(f"{where}: field 'text' is missing; every line needs one")
    return InputLine(record["text"], record.get("prefix"), "prefix" in record)


def read_jsonl(
    source: str | Path, max_chars: int, strict: bool
) -> tuple[list[InputLine], list[str]]:
    """The inputs of a jsonl file (``-``: stdin), one per line, and the notes on lines whose
    text was replaced by an empty one (as :func:`jumok.data.inputs.read_lines` gives them).

    Raises:
        DataError: a malformed line (:func:`parse_line`); with ``strict``, a text that cannot
            be one input.
    """
    name = "<stdin>" if str(source) == "-" else str(source)
    lines, notes = read_lines(source, MAX_LINE_CHARS, strict=strict)
    inputs = []
    for number, line in enumerate(lines, start=1):
        if not line:  # an empty or undecodable line: an empty output (noted by read_lines)
            inputs.append(InputLine(""))
            continue
        found = parse_line(line, f"{name}:{number}")
        problem = text_problem(found.text)
        if len(found.text) > max_chars:
            problem = f"{len(found.text)} characters; expected at most {max_chars} per text"
        if problem and strict:
            raise DataError(f"{name}:{number}: field 'text': {problem}")
        if problem:
            notes.append(f"{name}:{number}: field 'text': {problem}; its output is empty")
            found = InputLine("", found.prefix, found.has_prefix)
        inputs.append(found)
    return inputs, notes


def read_input(
    source: str | Path, input_format: str, max_chars: int, strict: bool, prefix: str | None
) -> tuple[list[str], str | list[str | None] | None, list[str]]:
    """What ``jumok translate`` decodes: the texts, the prefix argument of
    :meth:`~jumok.decoding.translator.Translator.translate` (``prefix``, from ``--prefix``, for
    every line of a text file and for every jsonl line without its own), and the notes."""
    if input_format == "text":
        texts, notes = read_lines(source, max_chars, strict=strict)
        return texts, prefix, notes
    inputs, notes = read_jsonl(source, max_chars, strict)
    prefixes = [line.prefix if line.has_prefix else prefix for line in inputs]
    return [line.text for line in inputs], prefixes, notes
