"""Sampling: draw outputs from the model's distribution instead of searching for the best one.

Each step divides the logits by the temperature, keeps the ``top_k`` most likely tokens and the
smallest set whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020), and
draws from what is left with a seeded generator, so the same seed gives the same outputs. The
constraints of beam search (minimum length, n-gram blocking, repetition penalty) apply before
the draw. Scores are the model's own log-probabilities (temperature 1) of the drawn tokens, so
samples can be compared with each other and with beam search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from jumok.config import DecodeConfig
from jumok.data.vocab import BOS_ID, EOS_ID
from jumok.decoding.constraints import BeamOptions, adjust, length_limits
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.hypothesis import collect as _collect
from jumok.decoding.prefix import Prefixes
from jumok.decoding.stop import StopCheck, check
from jumok.model.seq2seq import Seq2Seq


@dataclass(frozen=True)
class SamplingOptions:
    """Settings of sampling (``decode.temperature``, ``decode.top_k``, ``decode.top_p``).

    Attributes:
        samples: outputs drawn per input; duplicates are dropped, the rest sorted by score.
        temperature: > 1 flattens the distribution, < 1 sharpens it.
        top_k: keep only the k most likely tokens (0 = all).
        top_p: keep the most likely tokens whose probabilities sum to at least p (1 = all).
        seed: seed of the draws.
    """

    samples: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.temperature <= 0 or self.top_k < 0:
            raise ValueError(
                "sampling: need samples >= 1, temperature > 0 and top_k >= 0, got "
                f"{self.samples}, {self.temperature}, {self.top_k}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling: top_p must be in (0, 1], got {self.top_p}")

    @classmethod
    def from_decode(cls, cfg: DecodeConfig) -> SamplingOptions:
        """The sampling a ``decode`` config section asks for: the one place its fields are
        mapped (``n_best`` is the number of samples)."""
        return cls(cfg.n_best, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed)


def filter_logits(logits_NV: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set every token outside the top-k and the top-p nucleus to -inf (returns a new tensor).

    The most likely token always survives, so every row keeps something to draw.
    """
    logits_NV = logits_NV.clone()
    if top_k > 0 and top_k < logits_NV.shape[-1]:
        kth_N1 = logits_NV.topk(top_k, dim=-1).values[:, -1:]
        logits_NV[logits_NV < kth_N1] = -math.inf
    if top_p < 1.0:
        sorted_NV, order_NV = logits_NV.sort(dim=-1, descending=True)
        cumulative_NV = sorted_NV.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already reach top_p
        drop_NV = (cumulative_NV - sorted_NV.softmax(-1)) >= top_p
        drop_NV[:, 0] = False
        logits_NV[torch.zeros_like(drop_NV).scatter(1, order_NV, drop_NV)] = -math.inf
    return logits_NV


@torch.no_grad()
def sample(
    model: Seq2Seq,
    src_BS: Tensor,
    src_len_B: Tensor,
    opts: SamplingOptions,
    constraints: BeamOptions,
    should_stop: StopCheck | None = None,
    prefixes: Prefixes | None = None,
) -> list[list[Hypothesis]]:
    """Draw ``opts.samples`` outputs per sentence.

    Args:
        constraints: the length limits, no_repeat_ngram and repetition_penalty are used.
        should_stop: asked before every step; True stops the draw
            (:class:`~jumok.decoding.stop.DecodingStopped`).
        prefixes: each sentence's forced prefix, by batch row: every sample starts with it.

    Returns:
        For each sentence, its distinct samples, best score first.
    """
    B, n = src_BS.shape[0], opts.samples
    device = src_BS.device
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    rows_N = torch.arange(B, device=device).repeat_interleave(n)
    enc = model.encode(src_BS, src_len_B).select(rows_N)
    state = enc.state
    tokens_N = torch.full((B * n,), BOS_ID, dtype=torch.long, device=device)
    history_NT = torch.zeros(B * n, 0, dtype=torch.long, device=device)
    done_N = torch.zeros(B * n, dtype=torch.bool, device=device)
    limits_N = tuple(x.to(device)[rows_N] for x in length_limits(src_len_B.cpu(), constraints))
    logps, weights = [], []
    for step in range(constraints.max_length):
        check(should_stop)
        logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
        logp_NV = logits_NV.log_softmax(-1, dtype=torch.float32)
        allowed_NV = adjust(logp_NV, history_NT, step, constraints, limits_N)
        if prefixes is not None:  # the prefix's token alone may be drawn
            forced = prefixes.at(rows_N, step)
            forced.apply_(allowed_NV, forced.read(logp_NV))
        scaled_NV = filter_logits(allowed_NV / opts.temperature, opts.top_k, opts.top_p)
        tokens_N = torch.multinomial(scaled_NV.softmax(-1), 1, generator=generator).squeeze(1)
        tokens_N = torch.where(done_N, torch.full_like(tokens_N, EOS_ID), tokens_N)
        logps.append(logp_NV.gather(1, tokens_N.unsqueeze(1)).squeeze(1))
        if weights_NS is not None:
            weights.append(weights_NS.float())
        history_NT = torch.cat([history_NT, tokens_N.unsqueeze(1)], 1)
        done_N = done_N | (tokens_N == EOS_ID)
        if bool(done_N.all()):
            break
    weights_NTS = torch.stack(weights, 1) if weights else None
    hyps = _collect(history_NT, torch.stack(logps, 1), weights_NTS, src_len_B[rows_N])
    out = []
    for b in range(B):
        distinct: dict[tuple[int, ...], Hypothesis] = {}
        for hyp in hyps[b * n : (b + 1) * n]:
            distinct.setdefault(tuple(hyp.token_ids), hyp)
        out.append(sorted(distinct.values(), key=lambda h: -h.score))
    return out
