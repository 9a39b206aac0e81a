"""Special tokens, character tokenization and the :class:`Vocab` that maps tokens to ids.

The four special tokens have distinct, fixed ids: pad 0, bos 1, eos 2, unk 3 (pad is never bos,
a known pitfall). The lecture works on characters for its toy tasks, so the tokenizer here is
character level: ``"Sep 27"`` -> ``["S", "e", "p", " ", "2", "7"]``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def tokenize_chars(text: str) -> list[str]:
    """Split text into characters (the tokenizer of the lecture's toy tasks)."""
    return list(text)


def detokenize_chars(tokens: Sequence[str]) -> str:
    """Inverse of :func:`tokenize_chars`; special tokens are dropped."""
    return "".join(t for t in tokens if t not in SPECIALS)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text and how many of its tokens were unknown."""

    ids: list[int]
    unknown: int


class Vocab:
    """Token <-> id mapping with the special tokens first.

    Args:
        tokens: every token, specials first in the order of :data:`SPECIALS`.
    """

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        self.tokens: list[str] = list(tokens)
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], min_count: int = 1) -> Vocab:
        """Collect every token seen at least ``min_count`` times, most frequent first."""
        counts = Counter(token for tokens in texts for token in tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        # Ties broken by the token itself so that the vocabulary does not depend on data order.
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(tuple(self.tokens))

    def id(self, token: str) -> int:
        return self._ids.get(token, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> Encoded:
        """Map tokens to ids; unknown tokens become unk and are counted."""
        ids = [self._ids.get(t, UNK_ID) for t in tokens]
        unknown = ids.count(UNK_ID)
        if unknown:  # the unk token itself, written out, is known
            unknown -= sum(1 for t in tokens if t == self.tokens[UNK_ID])
        return Encoded(ids, unknown)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to tokens (no stripping)."""
        return [self.tokens[i] for i in ids]

    def to_json(self) -> str:
        return json.dumps(self.tokens, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        return cls(json.loads(text))
