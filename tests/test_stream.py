"""Decoding speed-ups that must not change a result: greedy search streamed through slots,
the decoder's token-gate table, and the stopping rules of beam search."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from conftest import SRC_V, TGT_V, random_batch, variant

from jumok.app.cli import CHOICES
from jumok.config import DecodeConfig
from jumok.data.vocab import EOS_ID
from jumok.decoding import hypothesis
from jumok.decoding.beam import (
    BeamOptions,
    _cannot_improve,
    _Sentence,
    beam_search,
    beam_stream,
    length_normalizer,
)
from jumok.decoding.ensemble import Ensemble
from jumok.decoding.greedy import greedy, greedy_stream
from jumok.decoding.hypothesis import Hypothesis
from jumok.fast import feeding
from jumok.model.seq2seq import build_model


def _batches(seed: int, shapes=((4, 3), (5, 7), (2, 5), (6, 9))):
    """Batches of different sizes and source lengths, as translate sorts them (and not)."""
    return [random_batch(B=B, S=S, seed=seed + i)[:2] for i, (B, S) in enumerate(shapes)]


def _same(a: Hypothesis, b: Hypothesis) -> None:
    assert a.token_ids == b.token_ids
    assert a.finished == b.finished
    assert a.score == pytest.approx(b.score, abs=1e-5)
    torch.testing.assert_close(
        torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs), atol=1e-5, rtol=1e-5
    )
    if a.attention_TS is None:
        assert b.attention_TS is None
    else:
        torch.testing.assert_close(a.attention_TS, b.attention_TS, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        variant("dot", input_feeding=True),
        variant("general", peeky=True, bidirectional=True),
        variant("additive", rnn="gru", layers=2),
        variant("none"),
    ],
    ids=["feeding", "peeky-bi", "gru-2", "no-attention"],
)
@pytest.mark.parametrize("slots", [1, 3, 8, 40])
@pytest.mark.parametrize("encode_rows", [10, 256])  # batches encoded in two groups, or one
def test_streamed_greedy_equals_greedy_batch_by_batch(config, slots, encode_rows, monkeypatch):
    monkeypatch.setattr(hypothesis, "ENCODE_ROWS", encode_rows)
    torch.manual_seed(4)
    model = build_model(config, SRC_V, TGT_V).eval()
    with torch.no_grad():  # outputs of many lengths, so that rows finish at different steps
        model.decoder.output.bias[EOS_ID] += 0.1
    batches = _batches(seed=20)
    streamed = greedy_stream(model, batches, max_length=7, slots=slots)
    assert [len(h) for h in streamed] == [src.shape[0] for src, _ in batches]
    for (src, src_len), got in zip(batches, streamed, strict=True):
        expected = greedy(model, src, src_len, max_length=7)
        for a, b in zip(got, expected, strict=True):
            _same(a, b)
    lengths = {len(h.token_ids) for hyps in streamed for h in hyps}
    assert len(lengths) > 1  # rows finished at different steps: slots were refilled


def test_streamed_greedy_attention_rows_sum_to_one_over_real_tokens_only():
    torch.manual_seed(2)
    model = build_model(variant("general", input_feeding=True), SRC_V, TGT_V).eval()
    batches = _batches(seed=3)
    for (_, src_len), hyps in zip(batches, greedy_stream(model, batches, 9, 4), strict=True):
        for h, n in zip(hyps, src_len.tolist(), strict=True):
            assert h.attention_TS.shape == (len(h.token_ids), n)
            torch.testing.assert_close(h.attention_TS.sum(1), torch.ones(len(h.token_ids)))


def test_streamed_greedy_of_an_ensemble_of_one_equals_the_model():
    torch.manual_seed(5)
    model = build_model(variant("dot", input_feeding=True), SRC_V, TGT_V).eval()
    batches = _batches(seed=8)
    alone = greedy_stream(model, batches, 8, 5)
    ensembled = greedy_stream(Ensemble([model]), batches, 8, 5)
    for a_hyps, b_hyps in zip(alone, ensembled, strict=True):
        for a, b in zip(a_hyps, b_hyps, strict=True):
            _same(a, b)


def test_the_token_gate_table_gives_the_products_it_replaces(monkeypatch):
    torch.manual_seed(6)
    model = build_model(variant("general", input_feeding=True, layers=2), SRC_V, TGT_V).eval()
    src, src_len = random_batch(B=5, S=6, seed=1)[:2]
    with_table = greedy(model, src, src_len, max_length=8)
    rnn = model.decoder.rnn
    assert rnn._table.shape == (TGT_V, 4 * rnn.hidden_size)  # the table was used
    monkeypatch.setattr(feeding, "TOKEN_TABLE_LIMIT", 0)
    without = greedy(model, src, src_len, max_length=8)
    for a, b in zip(with_table, without, strict=True):
        _same(a, b)
    # a weight changed in place, then the caches dropped (as each validation does): rebuilt
    monkeypatch.setattr(feeding, "TOKEN_TABLE_LIMIT", 2**26)
    with torch.no_grad():
        model.decoder.embedding.weight.mul_(2.0)
        model.eval()
        tokens = torch.tensor([[4, 5]])
        expected = rnn.inputs[0](model.decoder.embedding(tokens))
        torch.testing.assert_close(rnn.token_gates(model.decoder.embedding, tokens), expected)


def _finished(*normalized: float) -> _Sentence:
    sentence = _Sentence()
    for score in normalized:
        sentence.finished.append(Hypothesis([3], score, [score], None, True, score))
    return sentence


def test_stopping_rules_by_hand():
    exact = BeamOptions(beam_size=2, max_length=10, stopping="exact")
    current = BeamOptions(beam_size=2, max_length=10, stopping="current")
    first = BeamOptions(beam_size=2, max_length=10, stopping="first")
    done = _finished(-1.0)  # best finished, normalised: -1.0
    # a live hypothesis at raw -1.5 after 2 tokens: if it ended at the next step (3 tokens)
    # it would score -1.5 / ((5 + 3) / 6) = -1.125 < -1.0: current stops.
    assert _cannot_improve(done, -1.5, 2, False, current)
    # but at 10 tokens it could reach -1.5 / 2.5 = -0.6 > -1.0: exact goes on.
    assert not _cannot_improve(done, -1.5, 2, False, exact)
    assert -1.5 / length_normalizer(10, "gnmt", 1.0) > -1.0
    # exact stops once even the longest ending cannot reach it: -2.6 / 2.5 = -1.04
    assert _cannot_improve(done, -2.6, 2, False, exact)
    # current goes on while the next-step score would still win: -1.2 / (8/6) = -0.9
    assert not _cannot_improve(done, -1.2, 2, False, current)
    # first stops exactly when the step's best continuation was an end
    assert _cannot_improve(done, -1.2, 2, True, first)
    assert not _cannot_improve(done, -5.0, 2, False, first)
    # no rule stops before n_best hypotheses are finished, unless nothing is alive
    for opts in (exact, current, first):
        assert not _cannot_improve(_Sentence(), -9.0, 2, True, opts)
        assert _cannot_improve(_Sentence(), -math.inf, 2, False, opts)


def test_the_exact_rule_never_finds_worse_than_the_faster_rules():
    torch.manual_seed(9)
    model = build_model(variant("general", input_feeding=True), SRC_V, TGT_V).eval()
    src, src_len = random_batch(B=6, S=7, seed=4)[:2]
    found = {
        rule: beam_search(model, src, src_len, BeamOptions(3, 1, 12, stopping=rule))
        for rule in ("exact", "current", "first")
    }
    for i in range(6):
        best = found["exact"][i][0].normalized_score
        for rule in ("current", "first"):
            assert found[rule][i][0].normalized_score <= best + 1e-6


def test_cli_choices_are_the_config_values():
    for name, choices in CHOICES.items():
        annotation = DecodeConfig.model_fields[name].annotation
        assert choices == list(typing.get_args(annotation))


@pytest.mark.parametrize(
    "opts",
    [
        BeamOptions(beam_size=3, n_best=2, max_length=6),
        BeamOptions(beam_size=2, max_length=9, stopping="exact", coverage_penalty=0.3),
        BeamOptions(beam_size=3, max_length=12, min_length_ratio=0.5, max_length_ratio=1.5),
        BeamOptions(beam_size=3, n_best=3, max_length=8, min_length=3, shared_encoder=True),
        BeamOptions(beam_size=2, max_length=8, no_repeat_ngram=2),  # not streamable
    ],
    ids=["n-best", "exact-coverage", "ratios", "min-shared", "ngram"],
)
@pytest.mark.parametrize("slots", [1, 4, 40])
def test_streamed_beam_search_equals_beam_search_batch_by_batch(opts, slots):
    torch.manual_seed(7)
    model = build_model(variant("general", input_feeding=True), SRC_V, TGT_V).eval()
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] += 0.1
    batches = _batches(seed=30)
    streamed = beam_stream(model, batches, opts, slots=slots)
    lengths = set()
    for (src, src_len), got in zip(batches, streamed, strict=True):
        expected = beam_search(model, src, src_len, opts)
        for got_hyps, expected_hyps in zip(got, expected, strict=True):
            assert len(got_hyps) == len(expected_hyps) == opts.n_best
            for a, b in zip(got_hyps, expected_hyps, strict=True):
                _same(a, b)
                assert a.normalized_score == pytest.approx(b.normalized_score, abs=1e-5)
                lengths.add(len(a.token_ids))
    assert len(lengths) > 1
