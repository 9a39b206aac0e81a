"""The search a ``DecodeConfig`` asks for: greedy (:mod:`jumok.decoding.greedy`), beam
(:mod:`jumok.decoding.beam`) or sampling (:mod:`jumok.decoding.sampling`), for one batch
(:func:`run_search`) or streamed over many (:func:`search_batches`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import Tensor

from jumok.decoding.beam import BeamOptions, beam_search, beam_stream
from jumok.decoding.greedy import greedy, greedy_stream
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.sampling import SamplingOptions, sample
from jumok.model.seq2seq import Seq2Seq


def search_batches(
    model: Seq2Seq, batches: Sequence[tuple[Tensor, Tensor]], opts
) -> list[list[list[Hypothesis]]]:
    """:func:`run_search` over many batches: for each batch, for each sentence, its hypotheses.

    Greedy and beam search stream the batches through ``opts.batch_size`` slots
    (:func:`greedy_stream`, :func:`jumok.decoding.beam.beam_stream`); sampling decodes batch after
    batch.
    """
    if not batches:
        return []
    if _plain_greedy(opts):
        found = greedy_stream(model, batches, opts.max_length, opts.batch_size)
        return [[[h] for h in hyps] for hyps in found]
    if opts.sample:
        return [run_search(model, src_BS, src_len_B, opts) for src_BS, src_len_B in batches]
    return beam_stream(model, list(batches), _shared(opts), opts.batch_size)


def _beam_options(opts):
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
