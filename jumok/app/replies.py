"""Reply sets on the command line and the server: ``--reply-set FILE`` (one candidate per line).

The search itself is :mod:`jumok.decoding.replies`; here are the flags, reading the file, and
the server's ``--reply-set`` (one set per server, tokenized once at start-up, answered at
``POST /v1/reply``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jumok.errors import DataError

if TYPE_CHECKING:
    from jumok.decoding.translator import Translation, Translator

REPLY_FLAGS = ("--reply-set", "--reply-diversity")


def add_reply_arguments(p: argparse.ArgumentParser) -> None:
    """``--reply-set FILE`` and ``--reply-diversity T`` of ``jumok translate``."""
    p.add_argument(
        "--reply-set",
        type=Path,
        metavar="FILE",
        help="answer each input with the replies of FILE (one per line) the model scores "
        "highest (length-normalised log-probability, decode.length_penalty), --n-best of "
        "them, each with its attention (docs/steering.md, Reply sets)",
    )
    p.add_argument(
        "--reply-diversity",
        type=float,
        metavar="T",
        help="with --reply-set: skip a reply whose chrF similarity (0-1) to one already "
        "chosen is >= T, so the n-best differ (e.g. 0.5)",
    )


def read_reply_set(path: str | Path) -> list[str]:
    """The candidate replies of a file, one per line; an empty line is refused, naming it."""
    from jumok.data.inputs import read_lines

    texts, _ = read_lines(path)  # strict: names an empty or undecodable line
    if not texts:
        raise DataError(f"{path}: no candidate replies; expected one per line")
    return texts


def reply_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """With ``--reply-set``, a beam at least ``--n-best`` wide: nothing is searched, but the
    decoding options must stay valid (n_best <= beam)."""
    if args.reply_set is None:
        return options
    searching = {
        "--beam": (options.get("beam") or 1) > 1,
        "--sample": bool(options.get("sample")),
        "--prefix": bool(getattr(args, "prefix", None)),
        "--mmi-lm": args.mmi_lm is not None,
        "--mmi-reverse": args.mmi_reverse is not None,
    }
    if given := [flag for flag, on in searching.items() if on]:
        raise DataError(
            f"--reply-set scores the replies of {args.reply_set}, it does not search: "
            f"{', '.join(given)} does not apply; leave it out (--n-best and "
            "--reply-diversity choose the replies)"
        )
    if options.get("n_best") is None:
        return options
    return {**options, "beam": max(options["n_best"], 1)}


def translate_replies(
    args: argparse.Namespace, translator: Translator, texts: list[str], options: dict[str, Any]
) -> list[Translation] | None:
    """``jumok translate --reply-set``: the replies of ``texts``; None without ``--reply-set``."""
    if args.reply_set is None:
        if args.reply_diversity is not None:
            raise DataError("--reply-diversity needs --reply-set FILE")
        return None
    candidates = read_reply_set(args.reply_set)
    if args.batch_size is not None:
        options = {**options, "batch_size": args.batch_size}
    return translator.reply(texts, candidates, args.reply_diversity, **options)
