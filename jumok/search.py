"""Decoding: greedy search over the decoder step, batched with masks.

Each hypothesis carries its tokens, total log-probability, per-token log-probabilities and its
attention matrix (output tokens x source tokens, in the order the model saw the source).
"""

from __future__ import annotations

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
    B = src_BS.shape[0]
    enc = model.encode(src_BS, src_len_B)
    state = enc.state
    tokens_B = torch.full((B,), BOS_ID, dtype=torch.long, device=src_BS.device)
    finished_B = torch.zeros(B, dtype=torch.bool, device=src_BS.device)
    ids, logprobs, weights = [], [], []
    for _ in range(max_length):
        logits_BV, state, weights_BS = model.decode_step(tokens_B, state, enc)
        logp_BV = logits_BV.float().log_softmax(dim=-1)
        logp_BV[:, BOS_ID] = -torch.inf  # never an output (as in beam search and sampling)
        logp_BV[:, PAD_ID] = -torch.inf
        logp_B, tokens_B = logp_BV.max(dim=-1)
        ids.append(tokens_B)
        logprobs.append(logp_B)
        if weights_BS is not None:
            weights.append(weights_BS.float())
        finished_B = finished_B | (tokens_B == EOS_ID)
        if bool(finished_B.all()):
            break
    weights_BTS = torch.stack(weights, 1) if weights else None
    return _collect(torch.stack(ids, 1), torch.stack(logprobs, 1), weights_BTS, src_len_B)


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
    return beam_search(model, src_BS, src_len_B, constraints)
