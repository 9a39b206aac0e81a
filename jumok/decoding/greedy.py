"""Greedy search (the lecture's decoding): the most likely token at every step, for a padded
batch at once (:func:`greedy`) or streamed through a fixed number of slots
(:func:`greedy_stream`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from jumok.data.vocab import BOS_ID, EOS_ID, PAD_ID
from jumok.decoding.hypothesis import Hypothesis, Waiting, collect
from jumok.decoding.prefix import Forced, Prefixes
from jumok.decoding.stop import StopCheck, check
from jumok.model.seq2seq import Seq2Seq


def most_likely(logits_NV: Tensor, forced: Forced | None = None) -> tuple[Tensor, Tensor]:
    """Each row's most likely token (bos and padding excluded, as in beam search and sampling)
    and its log-probability (float32); a row inside its prefix (``forced``) gets the prefix's
    token, with the model's log-probability of it."""
    logp_NV = logits_NV.log_softmax(-1, dtype=torch.float32)
    if forced is not None:
        forced.force_(logp_NV)
    logp_NV[:, BOS_ID] = -torch.inf
    logp_NV[:, PAD_ID] = -torch.inf
    return logp_NV.max(dim=-1)


@torch.no_grad()
def greedy(
    model: Seq2Seq,
    src_BS: Tensor,
    src_len_B: Tensor,
    max_length: int,
    should_stop: StopCheck | None = None,
    prefixes: Prefixes | None = None,
) -> list[Hypothesis]:
    """Pick the most likely token at every step, for a whole padded batch at once.

    Args:
        model: the trained model (put in eval mode by the caller).
        src_BS: right-padded source ids, as the model sees them (already reversed if so trained).
        src_len_B: real lengths.
        max_length: most output tokens per sentence, eos included.
        should_stop: asked before every step; True stops the search
            (:class:`~jumok.decoding.stop.DecodingStopped`).
        prefixes: each sentence's forced prefix, by batch row (:mod:`jumok.decoding.prefix`).

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
        check(should_stop)
        logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
        forced = None if prefixes is None else prefixes.at(rows_N, step)
        logp_N, tokens_N = most_likely(logits_NV, forced)
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
    return collect(ids_BT[:, :T], logp_BT[:, :T], weights_BTS, src_len_B)


@torch.no_grad()
def greedy_stream(
    model: Seq2Seq,
    batches: Sequence[tuple[Tensor, Tensor]],
    max_length: int,
    slots: int,
    should_stop: StopCheck | None = None,
    prefixes: Prefixes | None = None,
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
        should_stop: asked before every step; True stops the search
            (:class:`~jumok.decoding.stop.DecodingStopped`).
        prefixes: each sentence's forced prefix, by global id (batch after batch).

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
        check(should_stop)
        logits_NV, state, weights_NS = model.decode_step(tokens_N, state, enc)
        forced = None if prefixes is None else prefixes.at(id_N, length_N)
        logp_N, tokens_N = most_likely(logits_NV, forced)
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
