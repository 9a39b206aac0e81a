"""What a beam search is asked for (:class:`BeamOptions`) and the constraints that puts on each
next token (:func:`adjust`, :func:`length_limits`): minimum and maximum lengths, n-gram blocking
and the repetition penalty. Sampling (:mod:`jumok.decoding.sampling`) applies the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from jumok.config import DecodeConfig
from jumok.data.vocab import BOS_ID, EOS_ID, PAD_ID

# The log-probability of an end the constraints forced (max length reached, or nothing else
# allowed): finite, so the hypothesis still exists, and far below any real continuation.
DEAD_END = -1e9

LengthPenalty = Literal["none", "gnmt", "average"]
Stopping = Literal["exact", "current", "first"]


@dataclass(frozen=True)
class BeamOptions:
    """Settings of one beam search (``decode.*`` in the config, flags of ``jumok translate``).

    Attributes:
        beam_size: hypotheses kept per sentence (K).
        n_best: finished hypotheses returned per sentence (<= K).
        max_length: most output tokens, eos included.
        min_length: eos is not allowed before this many output tokens.
        length_penalty: 'none' ranks by the sum of log-probabilities; 'gnmt' divides it by
            ((5 + length) / 6) ** alpha (Wu et al. 2016); 'average' divides it by the length.
        alpha: the GNMT exponent.
        coverage_penalty: beta of GNMT's coverage penalty, beta * sum_s log(min(sum_t a_ts, 1)).
        no_repeat_ngram: never emit an n-gram of this size twice in one output (0 = off).
        repetition_penalty: multiply the log-probability of tokens already emitted (>= 1).
        min_length_ratio: eos is not allowed before ceil(ratio x source length) tokens.
        max_length_ratio: eos is forced at ceil(ratio x source length) tokens (when below
            max_length).
        stopping: when a sentence stops searching (it needs ``n_best`` finished hypotheses
            first). 'exact': when no live hypothesis can end above the n_best-th finished one,
            whatever its future length (the search's result is then the same as searching to
            max_length). 'current': when the best live hypothesis, normalised as if it ended at
            the next step, is below the n_best-th finished one (Hugging Face's default rule; a live one
            could still climb above it by growing, with GNMT's penalty). 'first': as soon as
            the best continuation of a step is an end (OpenNMT-py's and JoeyNMT's rule).
        shared_encoder: the K hypotheses of a sentence read one copy of its encoder states
            (one batched product per sentence) instead of one copy each. Faster; the attention
            scores then differ from the per-hypothesis ones in the last bits of float32, which
            can swap two near-tied hypotheses, so float32 decoding leaves it off and bf16 and
            int8 decoding (already rounded far more coarsely) turn it on.
    """

    beam_size: int = 5
    n_best: int = 1
    max_length: int = 100
    min_length: int = 0
    length_penalty: LengthPenalty = "gnmt"
    alpha: float = 1.0
    coverage_penalty: float = 0.0
    no_repeat_ngram: int = 0
    repetition_penalty: float = 1.0
    min_length_ratio: float = 0.0
    max_length_ratio: float | None = None
    stopping: Stopping = "current"
    shared_encoder: bool = False

    def __post_init__(self) -> None:
        if self.beam_size < 1 or not 1 <= self.n_best <= self.beam_size:
            raise ValueError(
                f"beam: need beam_size >= 1 and 1 <= n_best <= beam_size, got beam_size "
                f"{self.beam_size}, n_best {self.n_best}"
            )

    @classmethod
    def from_decode(cls, cfg: DecodeConfig) -> BeamOptions:
        """The beam search a ``decode`` config section asks for: the one place its fields are
        mapped (``beam`` is ``beam_size``; ``n_best`` is capped at the beam, as sampling may
        ask for more; the encoder is shared when decoding rounds anyway: bf16 or int8)."""
        return cls(
            beam_size=cfg.beam,
            n_best=min(cfg.n_best, cfg.beam),
            max_length=cfg.max_length,
            min_length=cfg.min_length,
            length_penalty=cfg.length_penalty,
            alpha=cfg.alpha,
            coverage_penalty=cfg.coverage_penalty,
            no_repeat_ngram=cfg.no_repeat_ngram,
            repetition_penalty=cfg.repetition_penalty,
            min_length_ratio=cfg.min_length_ratio,
            max_length_ratio=cfg.max_length_ratio,
            stopping=cfg.stopping,
            shared_encoder=cfg.precision == "bf16" or cfg.quantize == "int8",
        )


def length_limits(src_len_B: Tensor, opts: BeamOptions) -> tuple[Tensor, Tensor]:
    """Each sentence's fewest output tokens and the length at which eos is forced (eos
    included), from the absolute and the source-length-ratio settings.

    Only ``max_length_ratio`` forces eos; at ``max_length`` itself a hypothesis stops
    unfinished instead, so the forced length of a sentence without a ratio is past it.
    """
    min_B = torch.ceil(src_len_B.double() * opts.min_length_ratio).long()
    min_B = min_B.clamp(min=opts.min_length)
    forced_B = torch.full_like(src_len_B, opts.max_length + 1)
    if opts.max_length_ratio is not None:
        by_ratio_B = torch.ceil(src_len_B.double() * opts.max_length_ratio).long().clamp(min=1)
        forced_B = torch.where(by_ratio_B < opts.max_length, by_ratio_B, forced_B)
    return min_B, forced_B


def adjust(
    logp_NV: Tensor,
    history_NT: Tensor,
    step: int,
    opts: BeamOptions,
    limits_N: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Apply the constraints to the log-probabilities of the next token (returns a new tensor).

    Args:
        history_NT: the tokens emitted so far by each row (for n-gram blocking and the
            repetition penalty; may be empty when neither is set).
        step: how many tokens each row has emitted (one number, or one per row).
        limits_N: each row's (fewest, most) output tokens (:func:`length_limits`): eos is
            blocked before the first and forced at the second.
    """
    return adjust_(logp_NV.clone(), history_NT, step, opts, limits_N)


def adjust_(
    logp_NV: Tensor,
    history_NT: Tensor,
    step: int,
    opts: BeamOptions,
    limits_N: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """:func:`adjust` in place (beam search owns its log-probabilities: no (N, V) copy)."""
    logp_NV[:, BOS_ID] = -math.inf
    logp_NV[:, PAD_ID] = -math.inf
    step = torch.as_tensor(step, device=logp_NV.device)
    logp_NV[:, EOS_ID].masked_fill_(step < opts.min_length, -math.inf)
    if limits_N is not None:
        min_N, max_N = limits_N
        logp_NV[:, EOS_ID].masked_fill_(step < min_N, -math.inf)
        forced_N = step >= max_N - 1
        if bool(forced_N.any()):
            eos_N = logp_NV[forced_N, EOS_ID].clamp(min=DEAD_END)  # stays finite when blocked
            logp_NV[forced_N] = -math.inf
            logp_NV[forced_N, EOS_ID] = eos_N
    if opts.repetition_penalty != 1.0 and history_NT.shape[1] > 0:
        seen_NV = torch.zeros_like(logp_NV, dtype=torch.bool).scatter_(1, history_NT, True)
        seen_NV[:, EOS_ID] = False
        logp_NV = torch.where(seen_NV, logp_NV * opts.repetition_penalty, logp_NV)
    n = opts.no_repeat_ngram
    if n > 0 and history_NT.shape[1] >= n - 1:
        _block_repeated_ngrams_(logp_NV, history_NT, n)
    return logp_NV


def _block_repeated_ngrams_(logp_NV: Tensor, history_NT: Tensor, n: int) -> None:
    """Forbid (in place) each token that would complete an n-gram its row has emitted before.

    Blocking can leave a row nothing at all (a small vocabulary, every token already used, eos
    not yet allowed): it then ends there, at a finite DEAD_END cost, so that every search
    returns a hypothesis instead of none.
    """
    for row, tokens in enumerate(history_NT.tolist()):
        prefix = tuple(tokens[len(tokens) - (n - 1) :]) if n > 1 else ()
        banned = [
            tokens[i + n - 1]
            for i in range(len(tokens) - n + 1)
            if tuple(tokens[i : i + n - 1]) == prefix
        ]
        if banned:
            logp_NV[row, banned] = -math.inf
    stuck_N = torch.isneginf(logp_NV).all(1)
    if bool(stuck_N.any()):
        logp_NV[stuck_N, EOS_ID] = DEAD_END
