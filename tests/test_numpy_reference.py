"""The NumPy reference against the PyTorch layer and autograd, finite differences, error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumok.model.attention import DotAttention
from jumok.model.numpy_reference import Attention, AttentionWeight, WeightSum

TOL = 1e-6  # float64 throughout; the two implementations agree far closer than this


def _inputs(B, T, S, H, lengths, seed=0):
    """Random float64 hs and queries, and a right-padding mask with the given source lengths."""
    rng = np.random.default_rng(seed)
    hs_BSH = rng.standard_normal((B, S, H))
    queries_BTH = rng.standard_normal((B, T, H))
    mask_BS = np.arange(S)[None, :] < np.asarray(lengths)[:, None]
    assert mask_BS.any(axis=1).all(), "every row needs a real position"
    return hs_BSH, queries_BTH, mask_BS


# (B, T, S, H, source lengths): padded rows, a row of length 1, B = 1 with and without padding.
CASES = [
    (3, 4, 6, 5, [6, 2, 1]),
    (4, 1, 5, 3, [3, 5, 1, 4]),
    (1, 3, 4, 2, [4]),
    (1, 2, 5, 3, [2]),
]


def _torch_reference(hs_BSH, queries_BTH, mask_BS, dcontext_BTH, dweights_BTS=None):
    """DotAttention's outputs and autograd's gradients of hs and queries, as NumPy arrays."""
    hs = torch.from_numpy(hs_BSH).requires_grad_(True)
    queries = torch.from_numpy(queries_BTH).requires_grad_(True)
    context, weights = DotAttention()(queries, hs, torch.from_numpy(mask_BS))
    # A loss whose gradient with respect to context (and weights) is the given upstream gradient.
    loss = (context * torch.from_numpy(dcontext_BTH)).sum()
    if dweights_BTS is not None:
        loss = loss + (weights * torch.from_numpy(dweights_BTS)).sum()
    loss.backward()
    return (
        context.detach().numpy(),
        weights.detach().numpy(),
        hs.grad.numpy(),
        queries.grad.numpy(),
    )


@pytest.mark.parametrize(("B", "T", "S", "H", "lengths"), CASES)
def test_forward_equals_dot_attention(B, T, S, H, lengths):
    hs_BSH, queries_BTH, mask_BS = _inputs(B, T, S, H, lengths)
    context_BTH, weights_BTS = Attention().forward(hs_BSH, queries_BTH, mask_BS)
    dummy_BTH = np.zeros((B, T, H))
    want_context, want_weights, _, _ = _torch_reference(hs_BSH, queries_BTH, mask_BS, dummy_BTH)
    assert context_BTH.shape == (B, T, H) and weights_BTS.shape == (B, T, S)
    np.testing.assert_allclose(context_BTH, want_context, rtol=0, atol=TOL)
    np.testing.assert_allclose(weights_BTS, want_weights, rtol=0, atol=TOL)


@pytest.mark.parametrize("with_dweights", [False, True], ids=["dcontext", "dcontext+dweights"])
@pytest.mark.parametrize(("B", "T", "S", "H", "lengths"), CASES)
def test_backward_equals_autograd(B, T, S, H, lengths, with_dweights):
    hs_BSH, queries_BTH, mask_BS = _inputs(B, T, S, H, lengths, seed=1)
    rng = np.random.default_rng(2)
    dcontext_BTH = rng.standard_normal((B, T, H))
    dweights_BTS = rng.standard_normal((B, T, S)) if with_dweights else None

    layer = Attention()
    layer.forward(hs_BSH, queries_BTH, mask_BS)
    dhs_BSH, dqueries_BTH = layer.backward(dcontext_BTH, dweights_BTS)

    _, _, want_dhs, want_dqueries = _torch_reference(
        hs_BSH, queries_BTH, mask_BS, dcontext_BTH, dweights_BTS
    )
    assert dhs_BSH.shape == (B, S, H) and dqueries_BTH.shape == (B, T, H)
    np.testing.assert_allclose(dhs_BSH, want_dhs, rtol=0, atol=TOL)
    np.testing.assert_allclose(dqueries_BTH, want_dqueries, rtol=0, atol=TOL)
    # Padding rows of hs get no gradient from either path: their weight is exactly 0.
    assert (dhs_BSH[~mask_BS] == 0).all()


def test_the_weights_gradient_changes_the_result():
    # Guards the dweights path of Attention.backward: it must not be silently ignored.
    hs_BSH, queries_BTH, mask_BS = _inputs(2, 3, 4, 2, [4, 2])
    dcontext_BTH = np.ones((2, 3, 2))
    layer = Attention()
    layer.forward(hs_BSH, queries_BTH, mask_BS)
    _, dqueries_plain = layer.backward(dcontext_BTH)
    _, dqueries_both = layer.backward(dcontext_BTH, np.ones((2, 3, 4)) * np.arange(4))
    assert np.abs(dqueries_both - dqueries_plain).max() > 1e-3


def test_padding_is_exactly_zero_and_rows_sum_to_one():
    hs_BSH, queries_BTH, mask_BS = _inputs(3, 4, 6, 5, [6, 2, 1])
    hs_BSH[~mask_BS] = 50.0  # large padding scores must still get weight 0 and not overflow
    weights_BTS = AttentionWeight().forward(hs_BSH, queries_BTH, mask_BS)
    padded_BTS = np.broadcast_to(~mask_BS[:, None, :], weights_BTS.shape)
    assert (weights_BTS[padded_BTS] == 0).all()  # exactly zero, not merely small
    assert (weights_BTS[~padded_BTS] > 0).all()
    np.testing.assert_allclose(weights_BTS.sum(axis=-1), np.ones((3, 4)), rtol=0, atol=1e-12)
    # The row of length 1 puts all its weight on its single real position.
    np.testing.assert_array_equal(weights_BTS[2, :, 0], np.ones(4))


def test_softmax_is_stable_for_large_scores():
    hs_BSH = np.array([[[1000.0], [999.0]]])
    queries_BTH = np.array([[[1.0]]])
    weights_BTS = AttentionWeight().forward(hs_BSH, queries_BTH, np.array([[True, True]]))
    e = np.e
    np.testing.assert_allclose(weights_BTS[0, 0], [e / (e + 1), 1 / (e + 1)], rtol=1e-12)


def test_worked_example_from_the_docstring():
    # hs = [[1], [2], [0]], last position padding, queries [[0], [1]]:
    # scores [[0, 0, -inf], [1, 2, -inf]] -> weights [[.5, .5, 0], [e/(e+e^2), e^2/(e+e^2), 0]],
    # contexts 1*.5 + 2*.5 = 1.5 and 1*0.269 + 2*0.731 = 1.731.
    hs_BSH = np.array([[[1.0], [2.0], [0.0]]])
    queries_BTH = np.array([[[0.0], [1.0]]])
    mask_BS = np.array([[True, True, False]])
    context_BTH, weights_BTS = Attention().forward(hs_BSH, queries_BTH, mask_BS)
    e = np.e
    a, b = e / (e + e**2), e**2 / (e + e**2)
    np.testing.assert_allclose(weights_BTS, [[[0.5, 0.5, 0.0], [a, b, 0.0]]], rtol=1e-12)
    np.testing.assert_allclose(context_BTH, [[[1.5], [a + 2 * b]]], rtol=1e-12)


def test_all_steps_at_once_equals_the_books_loop_over_time_steps():
    # The book's TimeAttention runs one Attention per output step t; the gradients of hs from
    # the T steps add up. Doing all T at once must give the same numbers.
    B, T, S, H = 2, 3, 4, 3
    hs_BSH, queries_BTH, mask_BS = _inputs(B, T, S, H, [4, 3], seed=3)
    dcontext_BTH = np.random.default_rng(4).standard_normal((B, T, H))

    layer = Attention()
    context_BTH, _ = layer.forward(hs_BSH, queries_BTH, mask_BS)
    dhs_BSH, dqueries_BTH = layer.backward(dcontext_BTH)

    dhs_loop_BSH = np.zeros_like(hs_BSH)
    for t in range(T):
        step = Attention()
        context_B1H, _ = step.forward(hs_BSH, queries_BTH[:, t : t + 1], mask_BS)
        np.testing.assert_allclose(context_B1H[:, 0], context_BTH[:, t], rtol=0, atol=1e-12)
        dhs_step_BSH, dquery_B1H = step.backward(dcontext_BTH[:, t : t + 1])
        dhs_loop_BSH += dhs_step_BSH
        np.testing.assert_allclose(dquery_B1H[:, 0], dqueries_BTH[:, t], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dhs_loop_BSH, dhs_BSH, rtol=0, atol=1e-12)


def _numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to each entry of x (changed in place)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        plus = f()
        x[index] = original - eps
        minus = f()
        x[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def test_attention_weight_backward_matches_finite_differences():
    # B=1, T=2, S=3, H=2 with the last source position padding.
    rng = np.random.default_rng(5)
    hs_BSH = rng.standard_normal((1, 3, 2))
    queries_BTH = rng.standard_normal((1, 2, 2))
    mask_BS = np.array([[True, True, False]])
    dweights_BTS = rng.standard_normal((1, 2, 3))  # loss = sum(dweights * weights)

    def loss():
        return float((AttentionWeight().forward(hs_BSH, queries_BTH, mask_BS) * dweights_BTS).sum())

    layer = AttentionWeight()
    layer.forward(hs_BSH, queries_BTH, mask_BS)
    dhs_BSH, dqueries_BTH = layer.backward(dweights_BTS)

    np.testing.assert_allclose(dhs_BSH, _numerical_gradient(loss, hs_BSH), rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        dqueries_BTH, _numerical_gradient(loss, queries_BTH), rtol=0, atol=1e-8
    )
    assert np.abs(dqueries_BTH).max() > 1e-3  # a real gradient, not zeros matching zeros


def test_weight_sum_backward_matches_finite_differences():
    rng = np.random.default_rng(6)
    hs_BSH = rng.standard_normal((1, 3, 2))
    weights_BTS = rng.random((1, 2, 3))
    dcontext_BTH = rng.standard_normal((1, 2, 2))

    def loss():
        return float((WeightSum().forward(hs_BSH, weights_BTS) * dcontext_BTH).sum())

    layer = WeightSum()
    layer.forward(hs_BSH, weights_BTS)
    dhs_BSH, dweights_BTS = layer.backward(dcontext_BTH)
    np.testing.assert_allclose(dhs_BSH, _numerical_gradient(loss, hs_BSH), rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        dweights_BTS, _numerical_gradient(loss, weights_BTS), rtol=0, atol=1e-8
    )


def test_shape_errors_name_expected_and_actual():
    hs_BSH, queries_BTH, mask_BS = _inputs(2, 3, 4, 5, [4, 2])
    with pytest.raises(ValueError, match=r"queries: expected \(2, T, 5\), got \(2, 3, 4\)"):
        Attention().forward(hs_BSH, queries_BTH[:, :, :4], mask_BS)
    with pytest.raises(ValueError, match=r"queries: expected \(2, T, 5\), got \(1, 3, 5\)"):
        Attention().forward(hs_BSH, queries_BTH[:1], mask_BS)
    with pytest.raises(ValueError, match=r"hs: expected \(B, S, H\), got \(4, 5\)"):
        Attention().forward(hs_BSH[0], queries_BTH, mask_BS)
    with pytest.raises(ValueError, match=r"mask: expected \(2, 4\), got \(2, 3\)"):
        Attention().forward(hs_BSH, queries_BTH, mask_BS[:, :3])
    with pytest.raises(ValueError, match=r"weights: expected \(2, T, 4\), got \(2, 3, 5\)"):
        WeightSum().forward(hs_BSH, np.ones((2, 3, 5)))

    layer = Attention()
    layer.forward(hs_BSH, queries_BTH, mask_BS)
    with pytest.raises(ValueError, match=r"dcontext: expected \(2, 3, 5\), got \(2, 3, 4\)"):
        layer.backward(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"dweights: expected \(2, 3, 4\), got \(2, 4, 3\)"):
        layer.backward(np.ones((2, 3, 5)), np.ones((2, 4, 3)))


def test_bad_masks_and_backward_before_forward_are_refused():
    hs_BSH, queries_BTH, mask_BS = _inputs(2, 3, 4, 5, [4, 2])
    with pytest.raises(TypeError, match="bool"):
        Attention().forward(hs_BSH, queries_BTH, mask_BS.astype(int))
    empty_BS = mask_BS.copy()
    empty_BS[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\] have none"):
        Attention().forward(hs_BSH, queries_BTH, empty_BS)
    with pytest.raises(RuntimeError, match="before"):
        Attention().backward(np.ones((2, 3, 5)))
