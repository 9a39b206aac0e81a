"""The search a ``DecodeConfig`` asks for: greedy (:mod:`jumok.decoding.greedy`), beam
(:mod:`jumok.decoding.beam`) or sampling (:mod:`jumok.decoding.sampling`), for one batch
(:func:`run_search`) or streamed over many (:func:`search_batches`).

A forced prefix per sentence (:mod:`jumok.decoding.prefix`) works with each of them.

The config's fields are mapped to each search's settings in one place each:
:meth:`BeamOptions.from_decode <jumok.decoding.constraints.BeamOptions.from_decode>` and
:meth:`SamplingOptions.from_decode <jumok.decoding.sampling.SamplingOptions.from_decode>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from jumok.config import DecodeConfig
from jumok.decoding.beam import BeamOptions, beam_search, beam_stream
from jumok.decoding.greedy import greedy, greedy_stream
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.prefix import Prefixes
from jumok.decoding.sampling import SamplingOptions, sample
from jumok.decoding.stop import StopCheck
from jumok.model.seq2seq import Seq2Seq


def search_batches(
    model: Seq2Seq,
    batches: Sequence[tuple[Tensor, Tensor]],
    cfg: DecodeConfig,
    should_stop: StopCheck | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[list[Hypothesis]]]:
    """:func:`run_search` over many batches: for each batch, for each sentence, its hypotheses.

    Greedy and beam search stream the batches through ``cfg.batch_size`` slots
    (:func:`greedy_stream`, :func:`jumok.decoding.beam.beam_stream`); sampling decodes batch after
    batch. ``should_stop`` is asked before every step of every search; True stops them all
    (:class:`~jumok.decoding.stop.DecodingStopped`). ``prefixes``: the ids each sentence's
    output must start with (one list per sentence, batch after batch; [] for none).
    """
    if not batches:
        return []
    forced = Prefixes.build(prefixes, batches[0][0].device)
    if _plain_greedy(cfg):
        slots = cfg.batch_size
        found = greedy_stream(model, batches, cfg.max_length, slots, should_stop, forced)
        return [[[h] for h in hyps] for hyps in found]
    if cfg.sample:
        found, first = [], 0
        for src_BS, src_len_B in batches:
            part = None if prefixes is None else prefixes[first : first + src_BS.shape[0]]
            found.append(run_search(model, src_BS, src_len_B, cfg, should_stop, part))
            first += src_BS.shape[0]
        return found
    options = BeamOptions.from_decode(cfg)
    return beam_stream(model, list(batches), options, cfg.batch_size, should_stop, forced)


def _plain_greedy(cfg: DecodeConfig) -> bool:
    """Whether ``cfg`` asks for the lecture's greedy search: a beam of 1, no constraint (the
    settings that change nothing for a beam of 1 may be anything)."""
    if cfg.sample:
        return False
    asked = BeamOptions.from_decode(cfg)
    plain = BeamOptions(
        beam_size=1,
        n_best=1,
        max_length=asked.max_length,
        length_penalty=asked.length_penalty,
        alpha=asked.alpha,
        stopping=asked.stopping,
        shared_encoder=asked.shared_encoder,
    )
    return asked == plain


def run_search(
    model: Seq2Seq,
    src_BS: Tensor,
    src_len_B: Tensor,
    cfg: DecodeConfig,
    should_stop: StopCheck | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Decode a batch the way ``cfg`` asks: greedy, beam or sampling.

    Greedy search (the lecture's) runs when the beam is 1 and no constraint is set; with a
    constraint, a beam of one applies it. ``should_stop``, ``prefixes`` (one per batch row):
    see :func:`search_batches`.

    Returns:
        For each sentence, its hypotheses, best first.
    """
    forced = Prefixes.build(prefixes, src_BS.device)
    if cfg.sample:
        constraints = BeamOptions.from_decode(cfg)
        options = SamplingOptions.from_decode(cfg)
        return sample(model, src_BS, src_len_B, options, constraints, should_stop, forced)
    if _plain_greedy(cfg):
        found = greedy(model, src_BS, src_len_B, cfg.max_length, should_stop, forced)
        return [[h] for h in found]
    options = BeamOptions.from_decode(cfg)
    return beam_search(model, src_BS, src_len_B, options, should_stop, forced)
