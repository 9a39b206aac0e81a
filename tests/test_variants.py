"""The ladder's model options: every attention type x Peeky x batch size works both ways."""

from __future__ import annotations

import pytest
import torch
from conftest import SRC_V, TGT_V, random_batch

from jumok.attention import DotAttention, GeneralAttention
from jumok.config import DecoderConfig, EncoderConfig, ModelConfig
from jumok.model import build_model
from jumok.search import greedy

ATTENTIONS = ["none", "dot", "general", "additive"]


def variant(attention: str, peeky: bool) -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig(embedding_size=6, hidden_size=8),
        decoder=DecoderConfig(embedding_size=6, hidden_size=8, peeky=peeky),
        attention=attention,
    )


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("peeky", [False, True])
@pytest.mark.parametrize("batch", [1, 4])
def test_forward_backward_and_finite_nonzero_gradients(attention, peeky, batch):
    torch.manual_seed(0)
    model = build_model(variant(attention, peeky), SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=batch, S=7, T=5)
    logits, weights = model(src, src_len, tgt_in)
    assert logits.shape == (batch, 5, TGT_V)
    assert (weights is None) == (attention == "none")
    logits.log_softmax(-1)[..., 4:].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("peeky", [False, True])
def test_step_by_step_equals_teacher_forced(attention, peeky):
    torch.manual_seed(1)
    model = build_model(variant(attention, peeky), SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=3, S=6, T=5, seed=4)
    logits_all, weights_all = model(src, src_len, tgt_in)
    enc = model.encode(src, src_len)
    state = enc.state
    for t in range(5):
        logits_t, state, weights_t = model.decode_step(tgt_in[:, t], state, enc)
        torch.testing.assert_close(logits_t, logits_all[:, t], rtol=1e-5, atol=1e-6)
        if weights_all is not None:
            torch.testing.assert_close(weights_t, weights_all[:, t], rtol=1e-5, atol=1e-6)


def test_general_with_identity_equals_dot():
    queries = torch.randn(2, 3, 5)
    hs = torch.randn(2, 4, 5)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    general = GeneralAttention(5)
    with torch.no_grad():
        general.key_proj.weight.copy_(torch.eye(5))
    for a, b in zip(general(queries, hs, mask), DotAttention()(queries, hs, mask), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("attention", ["general", "additive"])
def test_parametric_attention_rows_sum_to_one_with_zero_padding(attention):
    torch.manual_seed(2)
    model = build_model(variant(attention, False), SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5, seed=5)
    _, weights = model(src, src_len, tgt_in)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 5))
    pad = torch.arange(7).unsqueeze(0) >= src_len.unsqueeze(1)
    assert (weights.masked_select(pad.unsqueeze(1)) == 0).all()


def test_greedy_without_attention_returns_no_matrix():
    torch.manual_seed(3)
    model = build_model(variant("none", True), SRC_V, TGT_V).eval()
    src, src_len, _ = random_batch(B=2, S=5)
    hyps = greedy(model, src, src_len, max_length=4)
    assert all(h.attention_TS is None and h.token_ids for h in hyps)
