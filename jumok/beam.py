"""Beam search and sampling over the decoder step, batched, with the attention of every hypothesis.

Beam search keeps the ``K`` best partial outputs of every sentence. One step is four small
functions, each tested alone:

1. :func:`expand`: one decoder step for every live hypothesis -> log-probabilities (N, V);
2. :func:`adjust`: the constraints (minimum length, n-gram blocking, repetition penalty);
3. :func:`prune`: the 2K best (hypothesis, token) continuations of each sentence;
4. :func:`finish`: continuations that end with eos become finished hypotheses (scored with the
   length and coverage penalties); the best K others stay alive.

A sentence stops when no live hypothesis can still beat its ``n_best``-th finished one (an
exact bound, not a heuristic), and stopped sentences leave the batch, so the remaining work
shrinks. Encoder states and attention keys are computed once and only re-indexed.

Row layout: N = (live sentences) x K rows, sentence-major: row ``b * K + k`` is beam k of the
b-th live sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from jumok.model import Encoded, Seq2Seq
from jumok.search import Hypothesis
from jumok.vocab import BOS_ID, EOS_ID, PAD_ID

LengthPenalty = Literal["none", "gnmt", "average"]


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

    def __post_init__(self) -> None:
        if self.beam_size < 1 or not 1 <= self.n_best <= self.beam_size:
            raise ValueError(
                f"beam: need beam_size >= 1 and 1 <= n_best <= beam_size, got beam_size "
                f"{self.beam_size}, n_best {self.n_best}"
            )


def length_normalizer(length: int, kind: LengthPenalty, alpha: float) -> float:
    """The divisor of a hypothesis' log-probability: 1, ((5 + n) / 6) ** alpha, or n."""
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "average":
        return float(max(length, 1))
    return 1.0


def coverage(attention_TS: Tensor, beta: float) -> float:
    """GNMT coverage penalty: beta * sum over source positions of log(min(total weight, 1))."""
    if beta == 0.0 or attention_TS is None or attention_TS.numel() == 0:
        return 0.0
    total_S = attention_TS.sum(0).clamp(min=1e-10, max=1.0)
    return beta * float(total_S.log().sum())


@dataclass
class _Sentence:
    """The finished hypotheses of one sentence, best first."""

    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False


def expand(
    model: Seq2Seq, tokens_N: Tensor, state, enc: Encoded
) -> tuple[Tensor, object, Tensor | None]:
    """One decoder step for every row: (log-probabilities (N, V), new state, weights (N, S))."""
    logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
    return logits_NV.float().log_softmax(-1), state, weights_NS


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
        history_NT: the tokens emitted so far by each row (T = step).
        step: how many tokens each row has emitted.
        limits_N: each row's (fewest, most) output tokens (:func:`length_limits`): eos is
            blocked before the first and forced at the second.
    """
    logp_NV = logp_NV.clone()
    logp_NV[:, BOS_ID] = -math.inf
    logp_NV[:, PAD_ID] = -math.inf
    if step < opts.min_length:
        logp_NV[:, EOS_ID] = -math.inf
    if limits_N is not None:
        min_N, max_N = limits_N
        logp_NV[step < min_N, EOS_ID] = -math.inf
        forced_N = step >= max_N - 1
        if bool(forced_N.any()):
            eos_N = logp_NV[forced_N, EOS_ID].clamp(min=-1e9)  # stays finite when blocked
            logp_NV[forced_N] = -math.inf
            logp_NV[forced_N, EOS_ID] = eos_N
    if opts.repetition_penalty != 1.0 and step > 0:
        seen_NV = torch.zeros_like(logp_NV, dtype=torch.bool).scatter_(1, history_NT, True)
        seen_NV[:, EOS_ID] = False
        logp_NV = torch.where(seen_NV, logp_NV * opts.repetition_penalty, logp_NV)
    n = opts.no_repeat_ngram
    if n > 0 and step >= n - 1:
        for row, tokens in enumerate(history_NT.tolist()):
            prefix = tuple(tokens[len(tokens) - (n - 1) :]) if n > 1 else ()
            banned = [
                tokens[i + n - 1]
                for i in range(len(tokens) - n + 1)
                if tuple(tokens[i : i + n - 1]) == prefix
            ]
            if banned:
                logp_NV[row, banned] = -math.inf
    return logp_NV


def prune(scores_N: Tensor, logp_NV: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
    """The 2K best continuations of each sentence.

    Returns:
        scores_B2K: their cumulative log-probabilities, best first;
        beam_B2K: which of the sentence's K rows each continues;
        token_B2K: the token each appends.
    """
    V = logp_NV.shape[1]
    total_BKV = (scores_N.unsqueeze(1) + logp_NV).view(-1, K * V)
    scores_B2K, flat_B2K = total_BKV.topk(min(2 * K, K * V), dim=1)
    return scores_B2K, flat_B2K // V, flat_B2K % V


def finish(
    sentences: list[_Sentence],
    active: list[int],
    scores_B2K: Tensor,
    beam_B2K: Tensor,
    token_B2K: Tensor,
    history: dict[str, Tensor],
    src_len: list[int],
    opts: BeamOptions,
) -> tuple[list[int], list[int], list[float]]:
    """Move eos continuations to the finished lists; choose the K continuations that stay alive.

    Args:
        sentences: every sentence of the batch (indexed by original position).
        active: original positions of the live sentences, in row order.
        history: ``tokens`` (N, T), ``logps`` (N, T) and ``attention`` (N, T, S) of the rows,
            not yet including this step's token.

    Returns:
        rows (into the current N rows), tokens and scores of the K * len(active) live
        continuations, sentence-major (a sentence that has stopped gets K dead rows at -inf).
    """
    K = opts.beam_size
    rows, tokens, scores = [], [], []
    scores_l, beam_l, token_l = scores_B2K.tolist(), beam_B2K.tolist(), token_B2K.tolist()
    for b, sentence_id in enumerate(active):
        sentence = sentences[sentence_id]
        kept = 0
        for score, beam, token in zip(scores_l[b], beam_l[b], token_l[b], strict=True):
            if score == -math.inf:
                break
            row = b * K + beam
            if token == EOS_ID:
                if len(sentence.finished) < K:  # never more than K per sentence
                    sentence.finished.append(
                        _hypothesis(history, row, token, score, src_len[sentence_id], True, opts)
                    )
                continue
            if kept < K:
                rows.append(row)
                tokens.append(token)
                scores.append(score)
                kept += 1
        for _ in range(K - kept):  # pad with dead rows
            rows.append(b * K)
            tokens.append(EOS_ID)
            scores.append(-math.inf)
        sentence.finished.sort(key=lambda h: -h.normalized_score)
        best_alive = max(scores[-K:])
        sentence.done = _cannot_improve(sentence, best_alive, opts)
    return rows, tokens, scores


def _cannot_improve(sentence: _Sentence, best_alive: float, opts: BeamOptions) -> bool:
    """True when no live hypothesis can end above the n_best-th finished one.

    Log-probabilities only fall as a hypothesis grows; the length divisor grows at most to its
    value at max_length. So raw / divisor(max_length) bounds any future normalised score (and
    the coverage penalty, always <= 0, can only lower it).
    """
    if len(sentence.finished) < opts.n_best:
        return best_alive == -math.inf
    if best_alive == -math.inf:
        return True
    worst_kept = sentence.finished[opts.n_best - 1].normalized_score
    divisor = max(
        length_normalizer(n, opts.length_penalty, opts.alpha) for n in (1, opts.max_length)
    )
    bound = best_alive / divisor if best_alive < 0 else best_alive
    return bound < worst_kept


def _hypothesis(
    history: dict[str, Tensor],
    row: int,
    token: int,
    score: float,
    src_len: int,
    finished: bool,
    opts: BeamOptions,
    logp: float | None = None,
    weights_S: Tensor | None = None,
) -> Hypothesis:
    ids = history["tokens"][row].tolist() + [token]
    logps = history["logps"][row].tolist()
    logps.append(score - sum(logps) if logp is None else logp)
    attention = None
    if history["attention"] is not None:
        rows = history["attention"][row]
        if weights_S is None:
            weights_S = history["step_weights"][row]
        attention = torch.cat([rows, weights_S.unsqueeze(0)])[:, :src_len].cpu()
    normalized = score / length_normalizer(len(ids), opts.length_penalty, opts.alpha)
    normalized += coverage(attention, opts.coverage_penalty)
    return Hypothesis(ids, score, logps, attention, finished, normalized_score=normalized)


@torch.no_grad()
def beam_search(
    model: Seq2Seq, src_BS: Tensor, src_len_B: Tensor, opts: BeamOptions
) -> list[list[Hypothesis]]:
    """Decode a padded batch with beam search.

    Returns:
        For each sentence, its ``n_best`` hypotheses, best first by the length- (and
        coverage-) normalised score; each carries tokens, total and per-token log-probabilities
        and its attention matrix (output tokens x real source tokens).
    """
    K, B = opts.beam_size, src_BS.shape[0]
    device = src_BS.device
    enc = model.encode(src_BS, src_len_B)
    enc = enc.select(torch.arange(B, device=device).repeat_interleave(K))
    state = enc.state
    src_len = src_len_B.tolist()
    sentences = [_Sentence() for _ in range(B)]
    active = list(range(B))
    limits_N = tuple(x.to(device).repeat_interleave(K) for x in length_limits(src_len_B, opts))
    # Only beam 0 is live at the start, so the first step does not repeat one hypothesis K times.
    scores_N = torch.full((B * K,), -math.inf, device=device)
    scores_N[::K] = 0.0
    tokens_N = torch.full((B * K,), BOS_ID, dtype=torch.long, device=device)
    S = src_BS.shape[1]
    history: dict[str, Tensor | None] = {
        "tokens": torch.zeros(B * K, 0, dtype=torch.long, device=device),
        "logps": torch.zeros(B * K, 0, device=device),
        "attention": None,
    }
    for step in range(opts.max_length):
        logp_NV, state, weights_NS = expand(model, tokens_N, state, enc)
        if history["attention"] is None and weights_NS is not None:
            history["attention"] = torch.zeros(B * K, 0, S, device=device)
        history["step_weights"] = weights_NS
        logp_NV = adjust(logp_NV, history["tokens"], step, opts, limits_N)
        last_step = step == opts.max_length - 1
        if last_step:  # out of room: every live hypothesis ends here, unfinished
            _close_unfinished(sentences, active, scores_N, logp_NV, history, src_len, opts)
            break
        scores_B2K, beam_B2K, token_B2K = prune(scores_N, logp_NV, K)
        rows, tokens, scores = finish(
            sentences, active, scores_B2K, beam_B2K, token_B2K, history, src_len, opts
        )
        rows_N = torch.tensor(rows, device=device)
        tokens_N = torch.tensor(tokens, device=device)
        step_logp_N = logp_NV[rows_N, tokens_N]
        history["tokens"] = torch.cat([history["tokens"][rows_N], tokens_N.unsqueeze(1)], 1)
        history["logps"] = torch.cat([history["logps"][rows_N], step_logp_N.unsqueeze(1)], 1)
        if history["attention"] is not None:
            history["attention"] = torch.cat(
                [history["attention"][rows_N], weights_NS[rows_N].unsqueeze(1)], 1
            )
        scores_N = torch.tensor(scores, device=device)
        state = state.select(rows_N)
        # Sentences that cannot improve leave the batch.
        keep = [b for b, sid in enumerate(active) if not sentences[sid].done]
        if not keep:
            break
        if len(keep) < len(active):
            keep_N = torch.tensor([b * K + k for b in keep for k in range(K)], device=device)
            active = [active[b] for b in keep]
            scores_N, tokens_N = scores_N[keep_N], tokens_N[keep_N]
            limits_N = (limits_N[0][keep_N], limits_N[1][keep_N])
            state, enc = state.select(keep_N), enc.select(keep_N)
            for key in ("tokens", "logps", "attention"):
                if history[key] is not None:
                    history[key] = history[key][keep_N]
    return [s.finished[: opts.n_best] for s in sentences]


def _close_unfinished(sentences, active, scores_N, logp_NV, history, src_len, opts) -> None:
    """At max_length: the best continuations of the live rows become unfinished hypotheses."""
    K = opts.beam_size
    best_logp_N, best_token_N = logp_NV.max(-1)
    for b, sentence_id in enumerate(active):
        sentence = sentences[sentence_id]
        for k in range(K):
            row = b * K + k
            score = float(scores_N[row] + best_logp_N[row])
            if score == -math.inf:
                continue
            token = int(best_token_N[row])
            hyp = _hypothesis(
                history,
                row,
                token,
                score,
                src_len[sentence_id],
                token == EOS_ID,
                opts,
                logp=float(best_logp_N[row]),
            )
            sentence.finished.append(hyp)
        sentence.finished.sort(key=lambda h: -h.normalized_score)
        sentence.done = True
