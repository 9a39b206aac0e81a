"""Beam search over the decoder step, batched, with the attention of every hypothesis.

Beam search keeps the ``K`` best partial outputs of every sentence. One step is four small
functions, each tested alone:

1. :func:`expand`: one decoder step for every live hypothesis -> log-probabilities (N, V);
2. :func:`~jumok.decoding.constraints.adjust`: the constraints (minimum length, n-gram
   blocking, repetition penalty);
3. :func:`~jumok.decoding.prune.prune`: the 2K best (hypothesis, token) continuations of each
   sentence;
4. :func:`finish`: continuations that end with eos become finished hypotheses (scored with the
   length and coverage penalties; each sentence keeps its K best by that score, whenever they
   finished); the best K others stay alive.

One :class:`BeamState` carries the search from step to step, and :func:`beam_stream` is the
loop over its steps: the four above, then waiting sentences take the places of stopped ones
(:meth:`BeamState.refill`), the stopped ones leave (:meth:`BeamState.compact`) and the
survivors become the next step's rows (:meth:`BeamState.advance`). Back-pointers
(:class:`~jumok.decoding.trace.Trace`) stand in for copying every row's history.

When a sentence stops is :attr:`BeamOptions.stopping`: by default when its best live
hypothesis, scored as if it ended at the next step, falls below its ``n_best``-th finished one;
optionally when no live hypothesis can beat that one at any length (an exact bound), or by
OpenNMT-py's rule (:func:`_cannot_improve`). Stopped sentences leave the batch, so the
remaining work shrinks. Encoder states and attention keys are computed once and only
re-indexed.

Row layout: N = (live sentences) x K rows, sentence-major: row ``b * K + k`` is beam k of the
b-th live sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jumok.data.vocab import BOS_ID, EOS_ID
from jumok.decoding.constraints import (
    DEAD_END,
    BeamOptions,
    LengthPenalty,
    adjust,
    adjust_,
    length_limits,
)
from jumok.decoding.hypothesis import Hypothesis, Waiting
from jumok.decoding.prefix import Prefixes
from jumok.decoding.prune import prune, prune_chunked
from jumok.decoding.stop import StopCheck, check
from jumok.decoding.trace import Trace
from jumok.model.seq2seq import Encoded, Seq2Seq

__all__ = [
    "DEAD_END",
    "BeamOptions",
    "BeamState",
    "adjust",
    "beam_search",
    "beam_stream",
    "coverage",
    "expand",
    "finish",
    "length_limits",
    "length_normalizer",
    "prune",
    "prune_chunked",
    "streamable",
]


def length_normalizer(length: int, kind: LengthPenalty, alpha: float) -> float:
    """The divisor of a hypothesis' log-probability: 1, ((5 + n) / 6) ** alpha, or n."""
    if kind == "gnmt":
        try:
            return ((5.0 + length) / 6.0) ** alpha
        except OverflowError:  # an absurd alpha (e.g. 1000 through the API): past any float
            return math.inf
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
    """The finished hypotheses of one sentence: the best ``keep`` found so far, best first."""

    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False
    paths: dict[int, list[int]] = field(default_factory=dict)  # id(hypothesis) -> its rows
    start: int = 0  # the step at which its search began (sentences join a stream late)
    src_len: int = 0  # its source tokens (the columns of its attention)

    def add(self, found: tuple[Hypothesis, list[int]], keep: int | None = None) -> None:
        """Offer a finished hypothesis (with the rows it went through, for its attention).

        The list stays sorted best first by the ranking score (``normalized_score``); with
        ``keep``, only the ``keep`` best stay: a later, better hypothesis displaces the worst
        one, however early that one finished. (Keeping the first ``keep`` to finish instead
        returned early, short outputs over longer, better ones.) Among equal scores the earlier
        one stays first.
        """
        hyp, rows = found
        self.finished.append(hyp)
        self.paths[id(hyp)] = rows
        self.finished.sort(key=lambda h: -h.normalized_score)  # stable: ties keep their order
        if keep is not None:
            for dropped in self.finished[keep:]:
                del self.paths[id(dropped)]
            del self.finished[keep:]


def expand(
    model: Seq2Seq, tokens_N: Tensor, state, enc: Encoded
) -> tuple[Tensor, object, Tensor | None]:
    """One decoder step for every row: (log-probabilities (N, V), new state, weights (N, S))."""
    logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
    return logits_NV.log_softmax(-1, dtype=torch.float32), state, weights_NS


def _cannot_improve(
    sentence: _Sentence, best_alive: float, length: int, best_ends: bool, opts: BeamOptions
) -> bool:
    """Whether a sentence stops, by the rule ``opts.stopping`` names.

    Args:
        best_alive: the raw score of its best live hypothesis (-inf when none is left).
        length: the tokens each live hypothesis has emitted.
        best_ends: whether this step's best continuation was an end (eos).

    'exact' is a bound: log-probabilities only fall as a hypothesis grows, and the length
    divisor grows at most to its value at max_length, so raw / divisor(max_length) bounds any
    future normalised score (the coverage penalty, always <= 0, can only lower it).
    """
    if len(sentence.finished) < opts.n_best:
        return best_alive == -math.inf
    if best_alive == -math.inf:
        return True
    if opts.stopping == "first":
        return best_ends
    worst_kept = sentence.finished[opts.n_best - 1].normalized_score
    if opts.stopping == "current":
        lengths: tuple[int, ...] = (length + 1,)
    else:
        lengths = (1, opts.max_length)
    divisor = max(length_normalizer(n, opts.length_penalty, opts.alpha) for n in lengths)
    bound = best_alive / divisor if best_alive < 0 else best_alive
    return bound < worst_kept


@dataclass
class Survivors:
    """The rows of the next step, as :func:`finish` chose them: K per live sentence,
    sentence-major (row ``b * K + k`` is beam k of the b-th live sentence), in plain lists.

    Attributes:
        rows: the row of the current step each continues (its parent).
        tokens: the token it appends.
        scores: its cumulative log-probability (-inf for a dead row, which only fills a place).
        logps: that token's log-probability.
    """

    rows: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)

    def append(self, row: int, token: int, score: float, logp: float) -> None:
        """Add one live continuation."""
        self.rows.append(row)
        self.tokens.append(token)
        self.scores.append(score)
        self.logps.append(logp)

    def pad(self, row: int, n: int) -> None:
        """Add ``n`` dead rows (continuing ``row``, any row of the sentence) at -inf."""
        self.rows += [row] * n
        self.tokens += [EOS_ID] * n
        self.scores += [-math.inf] * n
        self.logps += [-math.inf] * n

    def restart(self, b: int, row: int, K: int) -> None:
        """Make the b-th sentence's K rows a fresh start: one row feeding bos at score 0, K - 1
        dead. Their parent ``row`` may be any current row: :meth:`BeamState.join` replaces
        their decoder states."""
        first = b * K
        self.rows[first : first + K] = [row] * K
        self.tokens[first : first + K] = [BOS_ID] * K
        self.scores[first : first + K] = [0.0] + [-math.inf] * (K - 1)
        self.logps[first : first + K] = [0.0] * K

    def select(self, index: list[int]) -> None:
        """Keep only the rows at ``index``, in that order."""
        self.rows, self.tokens, self.scores, self.logps = (
            [x[i] for i in index] for x in (self.rows, self.tokens, self.scores, self.logps)
        )


@dataclass
class _Joining:
    """Sentences taking the places of stopped ones: their encodings, global ids, and the live
    positions (slots) they take."""

    enc: Encoded
    id_J: Tensor
    slots: list[int]


@dataclass
class BeamState:
    """Everything a beam search carries from one step to the next.

    Row layout: the live rows are sentence-major, ``width`` per live sentence: row ``b * K + k``
    is beam k of the b-th live sentence (``width`` is 1 at the first step, when each sentence
    has only its start row, and K after). Tensors ending in ``_N`` have one entry per row.

    Attributes:
        opts: the search's settings.
        sentences: every sentence of the stream by global id: its finished hypotheses, the step
            at which it joined and its source length.
        active: the global ids of the live sentences, in row order.
        width: rows per live sentence.
        step: the number of the step under way (-1 before the first).
        tokens_N: the token each row feeds the decoder next.
        scores_N: each row's cumulative log-probability (-inf for a dead row).
        length_N: the tokens each row has emitted.
        limits_N: each row's (fewest, most) output tokens (:func:`length_limits`).
        history_NT: the tokens each row has emitted, kept only for n-gram blocking and the
            repetition penalty (otherwise no columns).
        state: each row's decoder state.
        enc: the encoder states and attention keys: one row per hypothesis, or one per
            sentence at the first step and with ``opts.shared_encoder``.
        trace: the back-pointers from which finished hypotheses are read.
        limits: every sentence's (fewest, most) output tokens, by global id (for joining ones).
        prefixes: every sentence's forced prefix, by global id (:mod:`jumok.decoding.prefix`).
    """

    opts: BeamOptions
    sentences: list[_Sentence]
    active: list[int]
    width: int
    step: int
    tokens_N: Tensor
    scores_N: Tensor
    length_N: Tensor
    limits_N: tuple[Tensor, Tensor]
    history_NT: Tensor
    state: Any  # the model's decoder state (an ensemble's has one per model)
    enc: Encoded
    trace: Trace
    limits: tuple[Tensor, Tensor]
    prefixes: Prefixes | None = None

    @classmethod
    def start(
        cls, waiting: Waiting, slots: int, opts: BeamOptions, prefixes: Prefixes | None = None
    ) -> BeamState:
        """The search of the first ``slots`` waiting sentences, one start row each (a first
        step from one row, instead of K copies of it)."""
        src_len = torch.cat([length for _, length in waiting.batches]).tolist()
        enc, id_B = waiting.take(slots)
        device = id_B.device
        limits = tuple(x.to(device) for x in length_limits(torch.tensor(src_len), opts))
        B = len(id_B)
        return cls(
            opts=opts,
            sentences=[_Sentence(src_len=n) for n in src_len],
            active=id_B.tolist(),
            width=1,
            step=-1,
            tokens_N=torch.full((B,), BOS_ID, dtype=torch.long, device=device),
            scores_N=torch.zeros(B, device=device),
            length_N=torch.zeros(B, dtype=torch.long, device=device),
            limits_N=(limits[0][id_B], limits[1][id_B]),
            history_NT=torch.zeros(B, 0, dtype=torch.long, device=device),
            state=enc.state,
            enc=enc,
            trace=Trace(),
            limits=limits,
            prefixes=prefixes,
        )

    @property
    def per_row(self) -> bool:
        """Whether each hypothesis reads its own copy of its sentence's encoder states."""
        return not self.opts.shared_encoder

    def next_logp(self, model: Seq2Seq) -> Tensor:
        """Begin the next step: every row's constrained log-probabilities (N, V) of its next
        token (:func:`expand`, then :func:`adjust`); the attention weights go to the trace."""
        self.step += 1
        logp_NV, self.state, weights_NS = expand(model, self.tokens_N, self.state, self.enc)
        self.trace.weights.append(weights_NS)
        if self.prefixes is None:
            return adjust_(logp_NV, self.history_NT, self.length_N, self.opts, self.limits_N)
        sentence_N = torch.tensor(self.active, device=logp_NV.device)
        forced = self.prefixes.at(sentence_N.repeat_interleave(self.width), self.length_N)
        value_N = forced.read(logp_NV)  # the model's own, before the constraints
        adjust_(logp_NV, self.history_NT, self.length_N, self.opts, self.limits_N)
        return forced.apply_(logp_NV, value_N)

    def hypothesis(
        self, sentence: _Sentence, row: int, token: int, score: float, logp: float | None = None
    ) -> tuple[Hypothesis, list[int]]:
        """Row ``row`` followed by ``token`` (eos, or the end at max_length): a scored
        hypothesis, and the row it was at in each step since its sentence joined.

        ``logp``, the token's log-probability, defaults to the score less the path's. The
        attention is filled in by :func:`_attach_attention` when the search is done, unless
        the coverage penalty needs it now.
        """
        opts, start = self.opts, sentence.start
        ids, logps, rows = self.trace.path(self.step, row, start)
        ids.append(token)
        logps.append(score - sum(logps) if logp is None else logp)
        attention = None
        if opts.coverage_penalty != 0.0 and self.trace.weights[self.step] is not None:
            attention = self.trace.attention(rows, sentence.src_len, start)
        normalized = score / length_normalizer(len(ids), opts.length_penalty, opts.alpha)
        normalized += coverage(attention, opts.coverage_penalty)
        finished = token == EOS_ID
        return Hypothesis(ids, score, logps, attention, finished, normalized), rows

    def close_full(self, logp_NV: Tensor) -> None:
        """Sentences out of room (max_length): the best continuation of each of their rows
        becomes a hypothesis (unfinished unless it is eos), and the sentence stops."""
        w = self.width
        closing_B = self.length_N.view(-1, w)[:, 0] >= self.opts.max_length - 1
        if not bool(closing_B.any()):
            return
        for b in closing_B.nonzero().squeeze(1).tolist():
            sentence = self.sentences[self.active[b]]
            best_logp, best_token = logp_NV[b * w : (b + 1) * w].max(-1)
            for k in range(w):
                score = float(self.scores_N[b * w + k] + best_logp[k])
                if score != -math.inf:
                    found = self.hypothesis(
                        sentence, b * w + k, int(best_token[k]), score, float(best_logp[k])
                    )
                    sentence.add(found)
            sentence.done = True

    def spread_encoder(self) -> None:
        """After the first step (one row per sentence), give each of a sentence's K rows its
        own copy of the encoder states, unless they share one."""
        if self.width == 1 and self.per_row:
            copies = torch.arange(len(self.active), device=self.scores_N.device)
            self.enc = self.enc.select(copies.repeat_interleave(self.opts.beam_size))

    def refill(self, survivors: Survivors, waiting: Waiting) -> _Joining | None:
        """Waiting sentences take the places of stopped ones: each gets a fresh start in
        ``survivors`` (its states are put in by :meth:`join`, after :meth:`advance`)."""
        stopped = [b for b, sid in enumerate(self.active) if self.sentences[sid].done]
        if not (stopped and waiting):
            return None
        enc, id_J = waiting.take(len(stopped))
        slots = stopped[: len(id_J)]
        for b, sid in zip(slots, id_J.tolist(), strict=True):
            self.active[b] = sid
            self.sentences[sid].start = self.step + 1
            survivors.restart(b, b * self.width, self.opts.beam_size)
        return _Joining(enc, id_J, slots)

    def compact(self, survivors: Survivors, joining: _Joining | None) -> bool:
        """Stopped sentences leave: their rows go from ``survivors`` and from the encoder
        states, and the joining sentences' slots are renumbered. Returns whether any live
        sentence is left."""
        keep = [b for b, sid in enumerate(self.active) if not self.sentences[sid].done]
        if not keep:
            return False
        if joining is not None:
            joining.slots = [keep.index(b) for b in joining.slots]
        if len(keep) < len(self.active):
            K = self.opts.beam_size
            kept_rows = [b * K + k for b in keep for k in range(K)]
            survivors.select(kept_rows)
            self.active = [self.active[b] for b in keep]
            index = kept_rows if self.per_row else keep
            self.enc = self.enc.select(torch.tensor(index, device=self.scores_N.device))
        return True

    def advance(self, survivors: Survivors) -> None:
        """Make the survivors the live rows: their tokens and scores, and their parents'
        decoder states, lengths, limits and history (the trace records the parents)."""
        self.trace.record(survivors.rows, survivors.tokens, survivors.logps)
        device = self.scores_N.device
        rows_N = torch.tensor(survivors.rows, device=device)
        self.tokens_N = torch.tensor(survivors.tokens, device=device)
        self.scores_N = torch.tensor(survivors.scores, device=device)
        self.length_N = self.length_N[rows_N] + 1
        self.state = self.state.select(rows_N)
        self.limits_N = (self.limits_N[0][rows_N], self.limits_N[1][rows_N])
        if not streamable(self.opts):
            self.history_NT = torch.cat([self.history_NT[rows_N], self.tokens_N.unsqueeze(1)], 1)
        self.width = self.opts.beam_size

    def join(self, joining: _Joining) -> None:
        """Put the joining sentences into their slots: encoder rows, decoder start states,
        lengths and limits (in place: these tensors are this search's own)."""
        K, device = self.opts.beam_size, self.scores_N.device
        slots = torch.tensor(joining.slots, device=device)
        rows_J = (slots.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)
        new = joining.enc
        if new.source_length > self.enc.source_length:
            self.enc = self.enc.padded(new.source_length)
        new = new.padded(self.enc.source_length)
        copies = torch.arange(len(joining.slots), device=device).repeat_interleave(K)
        if self.per_row:
            self.enc.put(rows_J, new.select(copies))
        else:
            self.enc.put(slots, new)
        self.state.put(rows_J, new.state.select(copies))
        self.length_N[rows_J] = 0
        new_N = joining.id_J.repeat_interleave(K)
        self.limits_N[0][rows_J] = self.limits[0][new_N]
        self.limits_N[1][rows_J] = self.limits[1][new_N]

    def results(self) -> list[list[Hypothesis]]:
        """Every sentence's ``n_best`` hypotheses, best first, with their attention."""
        for sentence in self.sentences:
            del sentence.finished[self.opts.n_best :]
        _attach_attention(self.sentences, self.trace)
        return [s.finished for s in self.sentences]


def finish(beam: BeamState, best_B2K: tuple[Tensor, Tensor, Tensor, Tensor]) -> Survivors:
    """Move eos continuations to the finished lists; choose the K continuations that stay alive.

    Args:
        beam: the search, at the step whose continuations these are.
        best_B2K: each live sentence's best continuations (:func:`prune`: scores, rows within
            the sentence, tokens and token log-probabilities).

    Returns:
        The K live continuations of each live sentence (a sentence that has stopped, or has
        fewer, gets dead rows at -inf). Each sentence's ``done`` says whether it stopped.
    """
    K = beam.opts.beam_size
    survivors = Survivors()
    scores_l, beam_l, token_l, logp_l = (x.tolist() for x in best_B2K)
    for b, sentence_id in enumerate(beam.active):
        sentence = beam.sentences[sentence_id]
        if sentence.done:  # closed at max_length this step: K dead rows
            survivors.pad(b * beam.width, K)
            continue
        best_ends = token_l[b][0] == EOS_ID and scores_l[b][0] != -math.inf
        candidates = zip(scores_l[b], beam_l[b], token_l[b], logp_l[b], strict=True)
        kept = _sort_continuations(beam, b, candidates, survivors)
        survivors.pad(b * beam.width, K - kept)
        best_alive = max(survivors.scores[-K:])
        length = beam.step - sentence.start + 1
        sentence.done = _cannot_improve(sentence, best_alive, length, best_ends, beam.opts)
    return survivors


def _sort_continuations(beam: BeamState, b: int, candidates, survivors: Survivors) -> int:
    """The b-th live sentence's continuations, best first: each end becomes a finished
    hypothesis (the sentence keeps its K best), the first K others go to ``survivors``.
    Returns how many went there."""
    K, sentence = beam.opts.beam_size, beam.sentences[beam.active[b]]
    kept = 0
    for score, parent, token, logp in candidates:
        if score == -math.inf:
            break
        row = b * beam.width + parent
        if token == EOS_ID:
            sentence.add(beam.hypothesis(sentence, row, token, score), keep=K)
        elif kept < K:
            survivors.append(row, token, score, logp)
            kept += 1
    return kept


def _attach_attention(sentences: list[_Sentence], trace: Trace) -> None:
    """Give each finished hypothesis its attention matrix, read from the trace in one gather."""
    waiting = [(s, h) for s in sentences for h in s.finished if h.attention_TS is None]
    paths = [(s.paths[id(h)], s.src_len, s.start) for s, h in waiting]
    for (_, hyp), attention_TS in zip(waiting, trace.attentions(paths), strict=True):
        hyp.attention_TS = attention_TS


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src_BS: Tensor,
    src_len_B: Tensor,
    opts: BeamOptions,
    should_stop: StopCheck | None = None,
    prefixes: Prefixes | None = None,
) -> list[list[Hypothesis]]:
    """Decode a padded batch with beam search (``should_stop``, ``prefixes`` by batch row: see
    :func:`beam_stream`).

    Returns:
        For each sentence, its ``n_best`` hypotheses, best first by the length- (and
        coverage-) normalised score; each carries tokens, total and per-token log-probabilities
        and its attention matrix (output tokens x real source tokens).
    """
    batches = [(src_BS, src_len_B)]
    return beam_stream(model, batches, opts, src_BS.shape[0], should_stop, prefixes)[0]


def streamable(opts: BeamOptions) -> bool:
    """Whether sentences may join a search under way: not with n-gram blocking or the
    repetition penalty, which read every row's history (all rows then start together)."""
    return opts.no_repeat_ngram == 0 and opts.repetition_penalty == 1.0


@torch.no_grad()
def beam_stream(
    model: Seq2Seq,
    batches: list[tuple[Tensor, Tensor]],
    opts: BeamOptions,
    slots: int,
    should_stop: StopCheck | None = None,
    prefixes: Prefixes | None = None,
) -> list[list[list[Hypothesis]]]:
    """Beam search over many batches with ``slots`` sentences searched side by side; when a
    sentence stops, the next waiting one takes its K rows.

    Each sentence's result is the one it gets decoded alone (rows never interact). Decoding
    batch after batch instead, a batch's last steps carry only its slowest sentences, at a
    cost per row several times that of a full step.

    ``should_stop`` is asked before every step; True stops the search
    (:class:`~jumok.decoding.stop.DecodingStopped`). ``prefixes``: each sentence's forced
    prefix, by global id (batch after batch).

    Returns:
        For each batch, for each sentence, its ``n_best`` hypotheses (see :func:`beam_search`).
    """
    whole = len(batches) == 1 and slots >= batches[0][0].shape[0]
    if not streamable(opts) and not whole:  # each batch whole: no sentence joins later
        firsts = Waiting(model, batches).first_id
        return [
            beam_search(model, src_BS, src_len_B, opts, should_stop, _part(prefixes, first, src_BS))
            for (src_BS, src_len_B), first in zip(batches, firsts, strict=True)
        ]
    waiting = Waiting(model, batches)
    beam = BeamState.start(waiting, slots, opts, prefixes)
    while True:
        check(should_stop)
        logp_NV = beam.next_logp(model)  # expand, adjust
        beam.close_full(logp_NV)  # sentences at max_length end here
        best_B2K = prune(beam.scores_N, logp_NV, beam.width, opts.beam_size)
        survivors = finish(beam, best_B2K)
        beam.spread_encoder()
        joining = beam.refill(survivors, waiting)  # waiting sentences take stopped ones' slots
        if not beam.compact(survivors, joining):  # stopped ones leave
            break
        beam.advance(survivors)
        if joining is not None:
            beam.join(joining)
    return waiting.split(beam.results())


def _part(prefixes: Prefixes | None, first: int, src_BS: Tensor) -> Prefixes | None:
    """The prefixes of the batch whose first sentence is ``first``."""
    return None if prefixes is None else prefixes.part(first, src_BS.shape[0])
