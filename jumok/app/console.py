"""Interactive use at a terminal: type a sentence, see the n-best with scores and the attention
as text.

The attention view has one line per output token and one column per source token; each cell is
a shade from ``' '`` (no weight) to ``'█'`` (all of it), followed by the source token that gets
the most weight::

          9 / 2 7 / 9 4
    1     ░       ▓ █     <- 9 0.71
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from jumok.decoding.translator import Translation, Translator

SHADES = " ░▒▓█"


def _cell(weight: float) -> str:
    return SHADES[min(len(SHADES) - 1, int(round(weight * (len(SHADES) - 1))))]


def _show(token: str) -> str:
    return "␣" if token == " " else token


def text_attention(
    source_tokens: Sequence[str], tokens: Sequence[str], attention: Sequence[Sequence[float]]
) -> str:
    """The attention matrix as shaded text, one line per output token (see the module doc)."""
    width = max([len(_show(t)) for t in source_tokens] + [1])
    label = max([len(_show(t)) for t in tokens] + [1])
    header = " " * (label + 2) + " ".join(_show(t).ljust(width) for t in source_tokens)
    lines = [header.rstrip()]
    for token, row in zip(tokens, attention, strict=True):
        cells = " ".join(_cell(w).ljust(width) for w in row)
        top = max(range(len(row)), key=row.__getitem__)
        lines.append(
            f"{_show(token).ljust(label)}  {cells}  <- {_show(source_tokens[top])} {row[top]:.2f}"
        )
    return "\n".join(lines)


def format_translation(result: Translation, attention: bool = True) -> str:
    """The n-best with rank, score and confidence, and the best one's attention."""
    lines = []
    if result.abstained:
        lines.append(f"(no reply: confidence {result.confidence:.2f} below the threshold)")
    for rank, h in enumerate(result.hypotheses, start=1):
        lines.append(f"{rank}. {h.text}    score {h.score:.3f}  confidence {h.confidence:.2f}")
    best = result.hypotheses[0]
    if attention and best.attention is not None:
        lines.append(text_attention(result.source_tokens, best.tokens, best.attention))
    return "\n".join(lines)


def interactive(
    translator: Translator,
    options: dict,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> None:
    """Prompt for sentences until end of input (Ctrl-D) or an empty line twice."""
    print("Type a sentence and press Enter (Ctrl-D to quit).", file=out)
    empty = 0
    while True:
        try:
            text = read("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return
        if not text.strip():
            empty += 1
            if empty >= 2:
                return
            continue
        empty = 0
        [result] = translator.translate([text], **options)
        print(format_translation(result), file=out, flush=True)
