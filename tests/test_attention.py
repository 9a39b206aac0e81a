"""The attention layer's math: properties, a worked example, gradient checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jumok.model.attention import DotAttention, build_attention, dot_scores, masked_softmax


def _inputs(B=3, T=4, S=6, H=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(B, T, H, generator=g, dtype=dtype)
    hs = torch.randn(B, S, H, generator=g, dtype=dtype)
    lengths = torch.tensor([S, 2, 1])[:B]
    mask = torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)
    return queries, hs, mask


def test_worked_example_from_the_docstring():
    # hs = [[1], [2], [0]] with the last position padding, queries [[0], [1]]:
    # scores [[0, 0, -inf], [1, 2, -inf]] -> weights [[.5, .5, 0], [e/(e+e^2), e^2/(e+e^2), 0]].
    hs = torch.tensor([[[1.0], [2.0], [0.0]]])
    queries = torch.tensor([[[0.0], [1.0]]])
    mask = torch.tensor([[True, True, False]])
    context, weights = DotAttention()(queries, hs, mask)
    e = torch.e
    expected = torch.tensor([[[0.5, 0.5, 0.0], [e / (e + e**2), e**2 / (e + e**2), 0.0]]])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(
        context, torch.tensor([[[1.5], [1 * expected[0, 1, 0] + 2 * expected[0, 1, 1]]]])
    )


def test_rows_sum_to_one_and_padding_is_exactly_zero():
    queries, hs, mask = _inputs()
    _, weights = DotAttention()(queries, hs, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert (weights >= 0).all()
    padded = ~mask.unsqueeze(1).expand_as(weights)
    assert (weights[padded] == 0).all()  # exactly zero, not merely small


def test_padding_content_does_not_matter():
    queries, hs, mask = _inputs()
    _, weights = DotAttention()(queries, hs, mask)
    hs2 = hs.clone()
    hs2[~mask] = 1000.0
    context2, weights2 = DotAttention()(queries, hs2, mask)
    torch.testing.assert_close(weights, weights2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_permuting_source_positions_permutes_the_weights(seed):
    queries, hs, _ = _inputs(seed=seed)
    mask = torch.ones(hs.shape[:2], dtype=torch.bool)
    perm = torch.randperm(hs.shape[1], generator=torch.Generator().manual_seed(seed))
    context, weights = DotAttention()(queries, hs, mask)
    context_p, weights_p = DotAttention()(queries, hs[:, perm], mask)
    torch.testing.assert_close(weights_p, weights[:, :, perm])
    torch.testing.assert_close(context_p, context)  # a weighted sum does not care about order


def test_changing_hs_changes_the_weights():
    queries, hs, mask = _inputs()
    _, weights = DotAttention()(queries, hs, mask)
    hs2 = hs.clone()
    hs2[0, 0] += 1.0
    _, weights2 = DotAttention()(queries, hs2, mask)
    assert not torch.allclose(weights[0], weights2[0])


def test_dot_scores_are_dot_products():
    queries, hs, _ = _inputs()
    scores = dot_scores(queries, hs)
    assert scores.shape == (3, 4, 6)
    torch.testing.assert_close(scores[1, 2, 3], queries[1, 2] @ hs[1, 3])


def test_gradcheck_attention_float64():
    queries, hs, mask = _inputs(B=2, T=2, S=4, H=3, dtype=torch.float64)
    queries.requires_grad_(True)
    hs.requires_grad_(True)

    def f(q, k):
        context, weights = DotAttention()(q, k, mask[:2])
        return context, weights

    assert torch.autograd.gradcheck(f, (queries, hs))


def test_gradcheck_masked_softmax_float64():
    scores = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, mask), (scores,))


def test_shape_errors_name_expected_and_actual():
    queries, hs, mask = _inputs()
    try:
        DotAttention()(queries[:, :, :2], hs, mask)
    except ValueError as err:
        assert "expected (3, T, 5)" in str(err) and "(3, 4, 2)" in str(err)
    else:
        raise AssertionError("a wrong query width must be rejected")


@pytest.mark.parametrize("kind", ["dot", "scaled_dot", "general"])
def test_step_attention_gives_the_modules_outputs_and_gradients(kind):
    # a training loop's attention (one query per step, the keys' and values' gradients summed
    # once at the end) against the module's own forward, step by step under autograd
    from jumok.fast.step_attention import StepAttention
    from jumok.model.attention import dot_product_scale, step_attention

    torch.manual_seed(3)
    B, S, T, H = 3, 6, 5, 4
    module = build_attention(kind, H, H)
    assert step_attention(module) and not step_attention(build_attention("additive", H, H))
    hs0 = torch.randn(B, S, H)
    mask_BS = torch.arange(S)[None] < torch.tensor([6, 2, 4])[:, None]
    queries0 = torch.randn(T, B, 1, H)
    results = []
    for deferred in (False, True):
        module.zero_grad()
        hs = hs0.clone().requires_grad_()
        queries = queries0.clone().requires_grad_()
        keys = module.prepare_keys(hs)
        scale = dot_product_scale(module, keys)
        attend = StepAttention(keys, hs, mask_BS, scale) if deferred else None
        q_B1H, outs = queries[0], []
        for t in range(T):
            context, weights = attend(q_B1H) if attend else module(q_B1H, hs, mask_BS, keys)
            assert weights[~mask_BS.unsqueeze(1)].abs().sum() == 0
            outs.append((context, weights))
            q_B1H = queries[t] + context.tanh()  # the next query reads this step's context
        loss = sum((c * c).sum() + (w * torch.arange(S)).sum() for c, w in outs)
        loss.backward()
        params = [p.grad.clone() for p in module.parameters()]
        results.append((loss.detach(), hs.grad.clone(), queries.grad.clone(), params))
    plain, step = results
    torch.testing.assert_close(step[0], plain[0])
    torch.testing.assert_close(step[1], plain[1])
    torch.testing.assert_close(step[2], plain[2])
    for a, b in zip(step[3], plain[3], strict=True):
        torch.testing.assert_close(a, b)
    assert plain[1].abs().sum() > 0


def test_step_attention_computes_in_float32_under_bf16_autocast():
    from jumok.fast.step_attention import StepAttention

    torch.manual_seed(4)
    module = build_attention("general", 8, 8)
    hs = torch.randn(2, 5, 8, requires_grad=True)
    mask_BS = torch.ones(2, 5, dtype=torch.bool)
    q_B1H = torch.randn(2, 1, 8, requires_grad=True)
    with torch.no_grad():
        want, _ = module(q_B1H, hs, mask_BS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys = module.prepare_keys(hs)  # bf16 under autocast
        context, weights = StepAttention(keys, hs, mask_BS)(q_B1H)
    assert context.dtype == weights.dtype == torch.float32
    assert (context - want).abs().max() < 0.05
    context.sum().backward()
    assert hs.grad.dtype == torch.float32 and q_B1H.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_bf16_decoding_on_a_cpu_keeps_dot_product_attention_in_float32(kind):
    from conftest import SRC_V, TGT_V, random_batch, tiny_model_config

    from jumok.model.seq2seq import build_model

    cfg = tiny_model_config(8, 6).model_copy(update={"attention": kind})
    torch.manual_seed(0)
    model = build_model(cfg, SRC_V, TGT_V).eval()
    src_BS, src_len_B, _ = random_batch()
    float32 = kind != "additive"  # additive scores go through Linear layers: left in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = model.encode(src_BS, src_len_B)  # with gradients: as in training, bf16
        with torch.no_grad():
            enc = model.encode(src_BS, src_len_B)
            q_B1H = torch.randn(src_BS.shape[0], 1, 8)
            context, weights = model.decoder.attention(q_B1H, enc.hs_BSH, enc.mask_BS, enc.keys_BSH)
    assert trained.hs_BSH.dtype == torch.bfloat16
    want = torch.float32 if float32 else torch.bfloat16
    assert enc.hs_BSH.dtype == enc.keys_BSH.dtype == weights.dtype == context.dtype == want
    if float32:  # the float32 arithmetic on those keys and values, exactly
        with torch.no_grad():
            scores = dot_scores(q_B1H, enc.keys_BSH)
            exact = masked_softmax(scores, enc.mask_BS)
        torch.testing.assert_close(weights, exact)
        torch.testing.assert_close(context, exact @ enc.hs_BSH)
