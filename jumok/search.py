"""Decoding: greedy search over the decoder step, batched with masks.

Each hypothesis carries its tokens, total log-probability, per-token log-probabilities and its
attention matrix (output tokens x source tokens, in the order the model saw the source).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from jumok.model import Seq2Seq
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
        logp_NV = logits_NV.float().log_softmax(dim=-1)
        logp_NV[:, BOS_ID] = -torch.inf  # never an output (as in beam search and sampling)
        logp_NV[:, PAD_ID] = -torch.inf
        logp_N, tokens_N = logp_NV.max(dim=-1)
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


def run_search(model: Seq2Seq, src_BS: Tensor, src_len_B: Tensor, opts) -> list[list[Hypothesis]]:
    """Decode a batch the way ``opts`` (a ``DecodeConfig``) asks: greedy, beam or sampling.

    Greedy search (the lecture's) runs when the beam is 1 and no constraint is set; with a
    constraint, a beam of one applies it.

    Returns:
        For each sentence, its hypotheses, best first.
    """
    from jumok.beam import BeamOptions, beam_search
    from jumok.sampling import SamplingOptions, sample

    constraints = BeamOptions(
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
    )
    if opts.sample:
        drawing = SamplingOptions(opts.n_best, opts.temperature, opts.top_k, opts.top_p, opts.seed)
        return sample(model, src_BS, src_len_B, drawing, constraints)
    plain = constraints == BeamOptions(
        beam_size=1,
        n_best=1,
        max_length=opts.max_length,
        length_penalty=opts.length_penalty,
        alpha=opts.alpha,
    )
    if plain:
        return [[h] for h in greedy(model, src_BS, src_len_B, opts.max_length)]
    # float32 keeps its exact bits; bf16 and int8 already round far more coarsely
    inexact = opts.precision == "bf16" or opts.quantize == "int8"
    shared = dataclasses.replace(constraints, shared_encoder=inexact)
    return beam_search(model, src_BS, src_len_B, shared)
