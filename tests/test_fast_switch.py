"""The speed layer behind one switch: a model built with ``fast=False`` (``train.fast: false``,
``JUMOK_FAST=0``) runs the plain version of every trick and computes the same thing as the fast
one from the same weights: logits, loss, gradients and greedy output, for every model variant."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import GRID, QUIET, SRC_V, TGT_V, random_batch, small_config, variant, variant_id

from jumok.decoding import copies
from jumok.decoding.greedy import greedy
from jumok.fast import enabled
from jumok.fast.dropout import Dropout
from jumok.fast.feeding import InputFeedingLSTM
from jumok.model.seq2seq import build_model


def _pair(cfg):
    torch.manual_seed(0)
    fast = build_model(cfg, SRC_V, TGT_V, fast=True)
    plain = build_model(cfg, SRC_V, TGT_V, fast=False)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def _loss_and_grads(model, src, src_len, tgt_in, tgt_out):
    model.train()
    model.zero_grad()
    loss = model.loss(src, src_len, tgt_in, tgt_out, label_smoothing=0.1)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("case", GRID, ids=variant_id)
def test_the_plain_model_computes_what_the_fast_one_does(case):
    attention, (bi, layers, rnn), peeky, feeding = case
    fast, plain = _pair(variant(attention, peeky, feeding, bi, layers, rnn))
    assert fast.fast and not plain.fast
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5, seed=3)
    tgt_out = torch.cat([tgt_in[:, 1:], torch.full((4, 1), 2)], dim=1)
    tgt_out[1, 3:] = 0  # padding in the targets
    loss_f, grads_f = _loss_and_grads(fast, src, src_len, tgt_in, tgt_out)
    loss_p, grads_p = _loss_and_grads(plain, src, src_len, tgt_in, tgt_out)
    torch.testing.assert_close(loss_p, loss_f, rtol=1e-5, atol=1e-5)
    assert grads_f.keys() == grads_p.keys()
    for name in grads_f:
        torch.testing.assert_close(grads_p[name], grads_f[name], rtol=1e-4, atol=1e-5, msg=name)
    fast.eval(), plain.eval()
    with torch.no_grad():
        logits_f, weights_f = fast(src, src_len, tgt_in)
        logits_p, weights_p = plain(src, src_len, tgt_in)
        torch.testing.assert_close(logits_p, logits_f, rtol=1e-5, atol=1e-5)
        found_f = greedy(fast, src, src_len, max_length=8)
        found_p = greedy(plain, src, src_len, max_length=8)
    assert [h.token_ids for h in found_p] == [h.token_ids for h in found_f]


def test_the_environment_switches_the_layer_off_for_every_model_built(monkeypatch):
    cfg = variant("general", input_feeding=True)
    monkeypatch.setenv("JUMOK_FAST", "0")
    assert not enabled()
    with_dropout = type(cfg).model_validate({**cfg.model_dump(), "dropout": {"embeddings": 0.2}})
    plain = build_model(with_dropout, SRC_V, TGT_V)
    assert not plain.fast and not plain.encoder.fast and not plain.decoder.fast
    # the plain dropout, and no packed layers in a decoding copy
    assert not any(isinstance(m, Dropout) for m in plain.modules())
    assert copies.pack_decoders(plain, torch.float32) == 0
    monkeypatch.setenv("JUMOK_FAST", "1")
    fast = build_model(cfg, SRC_V, TGT_V)
    assert fast.fast and isinstance(fast.decoder.rnn, InputFeedingLSTM)
    assert copies.pack_decoders(fast, torch.float32) > 0


def test_train_fast_false_trains_the_plain_model(tmp_path, monkeypatch):
    from jumok.training import setup
    from jumok.training.train import train

    built = []
    real = setup.build_model

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(setup, "build_model", spy)
    monkeypatch.setenv("JUMOK_FAST", "1")
    cfg = small_config("train.fast=false", "train.max_steps=20", "train.valid_every=20")
    result = train(cfg, tmp_path / "plain", **QUIET)
    assert len(built) == 1 and not built[0].fast and not built[0].decoder.fast
    losses = [r.train_loss for r in result.history]
    assert losses and all(math.isfinite(x) for x in losses)
    train(small_config("train.max_steps=1"), tmp_path / "fast", **QUIET)
    assert built[1].fast  # the default: the fast layer
