"""Forced prefixes: outputs that must start with given tokens ("Dear Ms Kim,"), then go on freely.

Every search applies a prefix the same way, as a mask on the next token's log-probabilities
(:class:`Prefixes`, :class:`Forced`): while a row has emitted fewer tokens than its sentence's
prefix, every token but the prefix's next one is set to -inf, and that one keeps the model's own
log-probability. So the prefix is decoded by the model step by step (its tokens have attention
rows), scored (their log-probabilities count in ``score`` and ``token_logprobs``), and greedy
search, beam search (and its n-best) and sampling need nothing else. In beam search a sentence's
start row has one finite continuation at each prefix step, so its beam stays one hypothesis
(the K - 1 others dead, at -inf) until the prefix ends, as at the first step; only then does it
branch. The constraints (minimum length, n-gram blocking, repetition penalty) do not touch the
prefix's tokens; they see them in the history afterwards.

Prefix texts become ids with the target tokenizer (:func:`encode_prefixes`); a token outside the
target vocabulary, or a prefix that leaves no room for eos within ``max_length``, is an error
naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from jumok.data.tokenizers import Tokenizer
from jumok.data.vocab import PAD_ID, SPECIALS, Vocab
from jumok.errors import DataError

# What Translator.translate takes: one prefix for every text, or one per text (None: none).
PrefixArgument = str | Sequence[str | None] | None


@dataclass
class Forced:
    """One step's forcing: which rows are inside their prefix, and the token each must emit.

    Attributes:
        inside_N: rows that have not yet emitted their whole prefix.
        token_N: each row's forced token (meaningless outside the prefix).
    """

    inside_N: Tensor
    token_N: Tensor

    def read(self, logp_NV: Tensor) -> Tensor:
        """The model's log-probability of each row's forced token (read it before the
        constraints change ``logp_NV``: that is the prefix token's score)."""
        return logp_NV.gather(1, self.token_N.unsqueeze(1)).squeeze(1)

    def apply_(self, logp_NV: Tensor, value_N: Tensor) -> Tensor:
        """In place: every token of a row inside its prefix at -inf but the forced one, which
        gets ``value_N`` (from :meth:`read`). Rows outside are left as they are."""
        rows_R = self.inside_N.nonzero().squeeze(1)  # R: the rows inside their prefix
        token_R, value_R = self.token_N[rows_R], value_N[rows_R]
        logp_NV[rows_R] = -math.inf
        logp_NV[rows_R, token_R] = value_R
        return logp_NV

    def force_(self, logp_NV: Tensor) -> Tensor:
        """:meth:`apply_` with the values ``logp_NV`` holds now (no constraint applied yet)."""
        return self.apply_(logp_NV, self.read(logp_NV))


@dataclass
class Prefixes:
    """The prefix ids of every sentence of a search, by sentence number (a batch's row, or a
    stream's global id).

    Attributes:
        ids_GP: each sentence's prefix ids, padded with pad (G: sentences, P: prefix positions).
        length_G: each prefix's length (0: none).
    """

    ids_GP: Tensor
    length_G: Tensor

    @classmethod
    def build(
        cls, prefixes: Sequence[Sequence[int]] | None, device: torch.device
    ) -> Prefixes | None:
        """The prefixes of a search's sentences, in order; None when no sentence has one (the
        search then runs exactly as without prefixes)."""
        if prefixes is None or not any(prefixes):
            return None
        ids_GP = torch.full((len(prefixes), max(map(len, prefixes))), PAD_ID, dtype=torch.long)
        for g, ids in enumerate(prefixes):
            ids_GP[g, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        length_G = torch.tensor([len(ids) for ids in prefixes], dtype=torch.long)
        return cls(ids_GP.to(device), length_G.to(device))

    def at(self, sentence_N: Tensor, position_N: Tensor | int) -> Forced:
        """The forcing of rows that belong to ``sentence_N`` and have emitted ``position_N``
        tokens each."""
        position_N = torch.as_tensor(position_N, device=sentence_N.device).expand_as(sentence_N)
        inside_N = position_N < self.length_G[sentence_N]
        column_N = position_N.clamp(max=self.ids_GP.shape[1] - 1)
        return Forced(inside_N, self.ids_GP[sentence_N, column_N])

    def part(self, start: int, count: int) -> Prefixes:
        """The prefixes of sentences ``start`` to ``start + count - 1``, renumbered from 0 (one
        batch of a stream)."""
        return Prefixes(self.ids_GP[start : start + count], self.length_G[start : start + count])


def prefix_ids(
    text: str | None, tokenizer: Tokenizer, vocab: Vocab, max_length: int, name: str
) -> list[int]:
    """The target ids of one prefix text ([] for None or ''), checked.

    Raises:
        DataError: naming ``name``: a token outside the target vocabulary (the output could not
            start with it), or more tokens than ``max_length`` - 1 (eos needs a place).
    """
    if not text:
        return []
    if not isinstance(text, str):
        raise DataError(f"{name}: expected a string, got {type(text).__name__}")
    tokens = tokenizer.tokenize(text)
    ids = vocab.encode(tokens).ids
    unknown = [t for t, i in zip(tokens, ids, strict=True) if i < len(SPECIALS)]
    if unknown:
        shown = ", ".join(repr(t) for t in dict.fromkeys(unknown))
        raise DataError(
            f"{name}: {shown} not in the target vocabulary; a prefix can only hold tokens the "
            "model can output"
        )
    if len(ids) >= max_length:
        raise DataError(
            f"{name}: {len(ids)} tokens; max_length {max_length} leaves room for at most "
            f"{max_length - 1} (eos needs one): raise max_length or shorten the prefix"
        )
    return ids


def encode_prefixes(
    prefix: PrefixArgument,
    texts: Sequence[str],
    tokenizer: Tokenizer,
    vocab: Vocab,
    max_length: int,
) -> list[list[int]] | None:
    """The prefix ids of each of ``texts``: ``prefix`` is one text for all, or a list with one
    entry (text or None) per input. None when no input has a prefix.

    Raises:
        DataError: a list of the wrong length, or a bad prefix (:func:`prefix_ids`), naming
            its input.
    """
    count = len(texts)
    if prefix is None or prefix == "":
        return None
    if isinstance(prefix, str):
        ids = prefix_ids(prefix, tokenizer, vocab, max_length, "prefix")
        return [ids] * count
    if len(prefix) != count:
        raise DataError(f"prefix: {len(prefix)} prefixes for {count} inputs; expected one each")
    found = [
        prefix_ids(text, tokenizer, vocab, max_length, f"prefix of input {i}")
        for i, text in enumerate(prefix, start=1)
    ]
    return found if any(found) else None
