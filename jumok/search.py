"""Decoding: greedy search over the decoder step, batched with masks.

Each hypothesis carries its tokens, total log-probability, per-token log-probabilities and its
attention matrix (output tokens x source tokens, in the order the model saw the source).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from jumok.model import Encoded, Seq2Seq
from jumok.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    """One decoded output.

    Attributes:
        token_ids: output ids, ending with eos when the model finished the sentence.
        score: sum of the log-probabilities of ``token_ids``.
        token_logprobs: log-probability of each output id.
        attention_TS: attention weights, one row per output id, one column per real source token
            (None for a model without attention).
        finished: whether the model emitted eos within the length limit.
        normalized_score: the score beam search ranks by (length and coverage penalties
            applied); None for greedy decoding, which ranks nothing.
    """

    token_ids: list[int]
    score: float
    token_logprobs: list[float]
    attention_TS: Tensor | None
    finished: bool
    normalized_score: float | None = None


def most_likely(logits_NV: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's most likely token (bos and padding excluded, as in beam search and sampling)
    and its log-probability (float32)."""
    logp_NV = logits_NV.log_softmax(-1, dtype=torch.float32)
    logp_NV[:, BOS_ID] = -torch.inf
    logp_NV[:, PAD_ID] = -torch.inf
    return logp_NV.max(dim=-1)


@torch.no_grad()
def greedy(model: Seq2Seq, src_BS: Tensor, src_len_B: Tensor, max_length: int) -> list[Hypothesis]:
    """Pick the most likely token at every step, for a whole padded batch at once.

    Args:
        model: the trained model (put in eval mode by the caller).
        src_BS: right-padded source ids, as the model sees them (already reversed if so trained).
        src_len_B: real lengths.
        max_length: most output tokens per sentence, eos included.

    Returns:
        One :class:`Hypothesis` per sentence, in batch order.
    """
    B, device = src_BS.shape[0], src_BS.device
    enc = model.encode(src_BS, src_len_B)
    state = enc.state
    # Sentences that emitted eos leave the batch: rows_N maps the live rows to the batch.
    rows_N = torch.arange(B, device=device)
    tokens_N = torch.full((B,), BOS_ID, dtype=torch.long, device=device)
    ids_BT = torch.full((B, max_length), PAD_ID, dtype=torch.long, device=device)
    logp_BT = torch.zeros(B, max_length, device=device)
    weights_BTS = None
    for step in range(max_length):
        logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
        logp_N, tokens_N = most_likely(logits_NV)
        ids_BT[rows_N, step] = tokens_N
        logp_BT[rows_N, step] = logp_N
        if weights_NS is not None:
            if weights_BTS is None:
                weights_BTS = torch.zeros(B, max_length, weights_NS.shape[1], device=device)
            weights_BTS[rows_N, step] = weights_NS.float()
        live_N = tokens_N != EOS_ID
        if not bool(live_N.all()):
            if not bool(live_N.any()):
                break
            keep_N = live_N.nonzero().squeeze(1)
            rows_N, tokens_N = rows_N[keep_N], tokens_N[keep_N]
            state, enc = state.select(keep_N), enc.select(keep_N)
    T = step + 1
    weights_BTS = None if weights_BTS is None else weights_BTS[:, :T]
    return _collect(ids_BT[:, :T], logp_BT[:, :T], weights_BTS, src_len_B)


@torch.no_grad()
def greedy_stream(
    model: Seq2Seq, batches: Sequence[tuple[Tensor, Tensor]], max_length: int, slots: int
) -> list[list[Hypothesis]]:
    """Greedy search over many batches with ``slots`` sentences decoded side by side, the place
    of each finished sentence taken at once by the next waiting one.

    Decoding batch after batch (:func:`greedy`), a batch runs as many steps as its longest
    output, and its last steps carry only a few rows: on Multi30k test2016 (batch 64) a third
    of all steps had a single row, each costing nearly what a full step costs (the weights
    are read either way). Here every step carries ``slots`` rows until the input runs out.
    Each sentence's result is the one :func:`greedy` gives it: rows never interact.

    Args:
        batches: (src_BS, src_len_B) pairs, as :func:`greedy` takes them; each is encoded when
            its first sentence is needed.
        slots: sentences in flight (the decoding batch size).

    Returns:
        For each batch, one :class:`Hypothesis` per sentence, in batch order.
    """
    waiting = Waiting(model, batches)
    enc, id_N = waiting.take(slots)
    device = id_N.device
    state = enc.state
    tokens_N = torch.full((len(id_N),), BOS_ID, dtype=torch.long, device=device)
    length_N = torch.zeros_like(tokens_N)
    steps: list[tuple[Tensor, Tensor, Tensor, Tensor | None]] = []  # (ids, tokens, logp, weights)
    while len(id_N):
        logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
        logp_N, tokens_N = most_likely(logits_NV)
        steps.append((id_N, tokens_N, logp_N, None if weights_NS is None else weights_NS.float()))
        length_N = length_N + 1
        done_N = (tokens_N == EOS_ID) | (length_N >= max_length)
        if not bool(done_N.any()):
            continue
        free_F = done_N.nonzero().squeeze(1)
        if waiting:  # new sentences take the finished ones' places
            rows_F = free_F[: len(waiting)]
            new, new_id = waiting.take(len(rows_F))
            if new.source_length > enc.source_length:
                enc = enc.padded(new.source_length)
            enc.put(rows_F, new.padded(enc.source_length))
            state.put(rows_F, new.state)
            id_N, tokens_N = id_N.clone(), tokens_N.clone()
            id_N[rows_F], tokens_N[rows_F], length_N[rows_F] = new_id, BOS_ID, 0
            done_N[rows_F] = False
        if bool(done_N.any()):  # nothing left to take their places: the batch shrinks
            keep_N = (~done_N).nonzero().squeeze(1)
            id_N, tokens_N, length_N = id_N[keep_N], tokens_N[keep_N], length_N[keep_N]
            state, enc = state.select(keep_N), enc.select(keep_N)
    results = _gather(steps, waiting.total, max(src.shape[1] for src, _ in batches))
    src_len = torch.cat([length for _, length in batches]).tolist()
    return waiting.split(
        [_hypothesis(*found, n) for found, n in zip(results, src_len, strict=True)]
    )


# Sentences encoded together by streaming search: consecutive batches are joined up to this
# many rows, so the encoder runs fewer, larger products (its results do not depend on it).
ENCODE_ROWS = 256


class Waiting:
    """The sentences of a list of batches that have not started yet, in order. Consecutive
    batches are encoded together (up to :data:`ENCODE_ROWS` sentences) when their first
    sentence is taken.

    Sentences are numbered across batches (global ids): batch b's row i is
    ``first_id[b] + i``.
    """

    def __init__(self, model: Seq2Seq, batches: Sequence[tuple[Tensor, Tensor]]):
        self.model, self.batches = model, batches
        self.sizes = [src_BS.shape[0] for src_BS, _ in batches]
        self.first_id = [sum(self.sizes[:b]) for b in range(len(batches))]
        self.total = sum(self.sizes)
        self.next = 0  # global id of the next sentence to take
        self.groups: list[list[int]] = []  # the batches encoded together
        self.group_size: list[int] = []  # sentences in each group
        for b, size in enumerate(self.sizes):
            if not self.groups or self.group_size[-1] + size > ENCODE_ROWS:
                self.groups.append([])
                self.group_size.append(0)
            self.groups[-1].append(b)
            self.group_size[-1] += size
        self.group_first = [self.first_id[group[0]] for group in self.groups]
        self.encoded: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return self.total - self.next

    def _encode(self, g: int) -> Encoded:
        """The sentences of group g, encoded in one call."""
        parts = [self.batches[b] for b in self.groups[g]]
        S = max(src_BS.shape[1] for src_BS, _ in parts)
        src_BS = torch.cat([nn.functional.pad(src, (0, S - src.shape[1])) for src, _ in parts])
        return self.model.encode(src_BS, torch.cat([length for _, length in parts]))

    def take(self, n: int) -> tuple[Encoded, Tensor]:
        """The next (at most) n sentences: their encodings, padded to one source length, and
        their global ids."""
        device = self.batches[0][0].device
        ids = list(range(self.next, min(self.next + n, self.total)))
        self.next += len(ids)
        parts = []
        start = bisect.bisect_right(self.group_first, ids[0]) - 1
        for g in range(start, len(self.groups)):
            first, size = self.group_first[g], self.group_size[g]
            if first >= self.next:
                break
            rows = [i - first for i in ids if first <= i < first + size]
            if g not in self.encoded:
                self.encoded[g] = self._encode(g)
            parts.append(self.encoded[g].select(torch.tensor(rows, device=device)))
            if rows[-1] == size - 1:
                del self.encoded[g]  # every sentence of group g has started
        S = max(enc.source_length for enc in parts)
        enc = parts[0].padded(S)
        for other in parts[1:]:
            enc = enc.cat(other.padded(S))
        return enc, torch.tensor(ids, device=device)

    def split(self, per_sentence: list) -> list[list]:
        """A list over global ids cut into one list per batch."""
        return [
            per_sentence[first : first + size]
            for first, size in zip(self.first_id, self.sizes, strict=True)
        ]


def _gather(steps, total: int, S: int) -> list[tuple[list[int], list[float], Tensor | None]]:
    """Each sentence's tokens, log-probabilities and attention rows, from the per-step records
    (every step lists the sentences it advanced, in the order their tokens came)."""
    id_X = torch.cat([ids for ids, _, _, _ in steps]).cpu()  # X: every row of every step
    order_X = torch.argsort(id_X, stable=True)
    counts = torch.bincount(id_X, minlength=total).tolist()
    tokens = torch.cat([t for _, t, _, _ in steps]).cpu()[order_X].tolist()
    logps = torch.cat([lp for _, _, lp, _ in steps]).cpu()[order_X].tolist()
    weights_XS = None
    if steps[0][3] is not None:
        padded = [nn.functional.pad(w, (0, S - w.shape[1])) for _, _, _, w in steps]
        weights_XS = torch.cat(padded).cpu()[order_X]
    results, start = [], 0
    for n in counts:
        w = None if weights_XS is None else weights_XS[start : start + n]
        results.append((tokens[start : start + n], logps[start : start + n], w))
        start += n
    return results


def _hypothesis(tokens: list[int], logps: list[float], weights_TS, src_len: int) -> Hypothesis:
    return Hypothesis(
        token_ids=tokens,
        score=float(sum(logps)),
        token_logprobs=logps,
        attention_TS=None if weights_TS is None else weights_TS[:, :src_len],
        finished=tokens[-1] == EOS_ID,
    )


def _collect(
    ids_BT: Tensor, logp_BT: Tensor, weights_BTS: Tensor | None, src_len_B: Tensor
) -> list[Hypothesis]:
    """Cut each row after its first eos and keep its real source columns."""
    ids_BT, logp_BT = ids_BT.cpu(), logp_BT.cpu()
    weights_BTS = None if weights_BTS is None else weights_BTS.cpu()
    hyps = []
    for b in range(ids_BT.shape[0]):
        row = ids_BT[b].tolist()
        finished = EOS_ID in row
        length = row.index(EOS_ID) + 1 if finished else len(row)
        token_logprobs = logp_BT[b, :length].tolist()
        hyps.append(
            Hypothesis(
                token_ids=row[:length],
                score=float(sum(token_logprobs)),
                token_logprobs=token_logprobs,
                attention_TS=None
                if weights_BTS is None
                else weights_BTS[b, :length, : int(src_len_B[b])],
                finished=finished,
            )
        )
    return hyps


def search_batches(
    model: Seq2Seq, batches: Sequence[tuple[Tensor, Tensor]], opts
) -> list[list[list[Hypothesis]]]:
    """:func:`run_search` over many batches: for each batch, for each sentence, its hypotheses.

    Greedy and beam search stream the batches through ``opts.batch_size`` slots
    (:func:`greedy_stream`, :func:`jumok.beam.beam_stream`); sampling decodes batch after
    batch.
    """
    if not batches:
        return []
    if _plain_greedy(opts):
        found = greedy_stream(model, batches, opts.max_length, opts.batch_size)
        return [[[h] for h in hyps] for hyps in found]
    if opts.sample:
        return [run_search(model, src_BS, src_len_B, opts) for src_BS, src_len_B in batches]
    from jumok.beam import beam_stream

    return beam_stream(model, list(batches), _shared(opts), opts.batch_size)


def _beam_options(opts):
    from jumok.beam import BeamOptions

    return BeamOptions(
        beam_size=opts.beam,
        n_best=min(opts.n_best, opts.beam),
        max_length=opts.max_length,
        min_length=opts.min_length,
        length_penalty=opts.length_penalty,
        alpha=opts.alpha,
        coverage_penalty=opts.coverage_penalty,
        no_repeat_ngram=opts.no_repeat_ngram,
        repetition_penalty=opts.repetition_penalty,
        min_length_ratio=opts.min_length_ratio,
        max_length_ratio=opts.max_length_ratio,
        stopping=opts.stopping,
    )


def _plain_greedy(opts) -> bool:
    """Whether ``opts`` asks for the lecture's greedy search: a beam of 1, no constraint."""
    from jumok.beam import BeamOptions

    plain = BeamOptions(
        beam_size=1,
        n_best=1,
        max_length=opts.max_length,
        length_penalty=opts.length_penalty,
        alpha=opts.alpha,
        stopping=opts.stopping,
    )
    return not opts.sample and _beam_options(opts) == plain


def run_search(model: Seq2Seq, src_BS: Tensor, src_len_B: Tensor, opts) -> list[list[Hypothesis]]:
    """Decode a batch the way ``opts`` (a ``DecodeConfig``) asks: greedy, beam or sampling.

    Greedy search (the lecture's) runs when the beam is 1 and no constraint is set; with a
    constraint, a beam of one applies it.

    Returns:
        For each sentence, its hypotheses, best first.
    """
    from jumok.beam import beam_search
    from jumok.sampling import SamplingOptions, sample

    constraints = _beam_options(opts)
    if opts.sample:
        drawing = SamplingOptions(opts.n_best, opts.temperature, opts.top_k, opts.top_p, opts.seed)
        return sample(model, src_BS, src_len_B, drawing, constraints)
    if _plain_greedy(opts):
        return [[h] for h in greedy(model, src_BS, src_len_B, opts.max_length)]
    return beam_search(model, src_BS, src_len_B, _shared(opts))


def _shared(opts):
    """Beam options with the encoder copy shared by a sentence's hypotheses when decoding
    rounds anyway: float32 keeps its exact bits; bf16 and int8 already round far more
    coarsely."""
    inexact = opts.precision == "bf16" or opts.quantize == "int8"
    return dataclasses.replace(_beam_options(opts), shared_encoder=inexact)
