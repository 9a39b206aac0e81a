"""The output layer and the cross-entropy computed together in slices (jumok.loss) give the
loss and the gradients of the plain way: ``cross_entropy(output(x), target, reduction="sum")``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jumok import loss as loss_module
from jumok.loss import output_cross_entropy
from jumok.model import build_model
from jumok.train import loss_fn


def _plain(x, output, target, eps):
    logits = output(x)
    return F.cross_entropy(
        logits.float(), target, ignore_index=0, label_smoothing=eps, reduction="sum"
    )


def _grads(loss_of, x, output, target, eps, scale=0.37):
    x = x.detach().clone().requires_grad_()
    output.zero_grad()
    loss = loss_of(x, output, target, eps)
    (loss * scale).backward()  # a scale: the backward must multiply by the incoming gradient
    bias = None if output.bias is None else output.bias.grad.clone()
    return float(loss.detach()), x.grad.clone(), output.weight.grad.clone(), bias


def _case(N=23, F_=6, V=9, bias=True, seed=0):
    torch.manual_seed(seed)
    output = torch.nn.Linear(F_, V, bias=bias)
    x = torch.randn(N, F_) * 2
    target = torch.randint(0, V, (N,))
    target[::4] = 0  # padding rows
    return x, output, target


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 40),
    V=st.integers(2, 12),
    eps=st.sampled_from([0.0, 0.1, 0.3]),
    slice_logits=st.integers(1, 200),
    bias=st.booleans(),
)
def test_same_loss_and_gradients_as_the_plain_way(N, V, eps, slice_logits, bias):
    x, output, target = _case(N, 5, V, bias, seed=N * 13 + V)
    ref = _grads(_plain, x, output, target, eps)
    old = loss_module.SLICE_LOGITS
    loss_module.SLICE_LOGITS = slice_logits
    try:
        got = _grads(output_cross_entropy, x, output, target, eps)
    finally:
        loss_module.SLICE_LOGITS = old
    assert got[0] == pytest.approx(ref[0], rel=1e-5, abs=1e-5)
    for a, b in zip(got[1:], ref[1:], strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_padding_rows_get_no_gradient_and_no_loss():
    x, output, target = _case()
    target[:] = 0
    target[3] = 5
    loss, grad_x, _, _ = _grads(output_cross_entropy, x, output, target, 0.1)
    assert loss == pytest.approx(float(_plain(x, output, target, 0.1).detach()), rel=1e-6)
    assert grad_x[3].abs().sum() > 0
    assert grad_x[torch.arange(len(target)) != 3].abs().sum() == 0


def test_a_hopeless_row_keeps_its_exact_loss():
    # the target's logit 200 below the best: p underflows to 0 in float32, the loss is 200
    output = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        output.weight.copy_(torch.tensor([[100.0, 0.0], [-100.0, 0.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([1])
    loss = float(output_cross_entropy(x, output, target).detach())
    assert loss == pytest.approx(200.0, rel=1e-6)
    assert loss == pytest.approx(float(_plain(x, output, target, 0.0).detach()), rel=1e-6)


def test_tied_weights_receive_the_output_layers_gradient():
    x, output, target = _case()
    embedding = torch.nn.Embedding(9, 6)
    output.weight = embedding.weight
    got = _grads(output_cross_entropy, x, output, target, 0.0)
    ref = _grads(_plain, x, output, target, 0.0)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-5)
    assert embedding.weight.grad is output.weight.grad


def test_without_gradients_the_same_number():
    x, output, target = _case()
    with torch.no_grad():
        assert float(output_cross_entropy(x, output, target, 0.1)) == pytest.approx(
            float(_plain(x, output, target, 0.1)), rel=1e-6
        )


def test_bf16_autocast_is_as_close_to_float32_as_the_plain_way():
    x, output, target = _case(N=200, F_=32, V=50)
    exact = _grads(_plain, x, output, target, 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _grads(_plain, x, output, target, 0.0)
        fused = _grads(output_cross_entropy, x, output, target, 0.0)
    assert abs(fused[0] - exact[0]) <= 2 * abs(plain[0] - exact[0]) + 1e-3 * abs(exact[0])
    for got, ref, bf in zip(fused[1:], exact[1:], plain[1:], strict=True):
        assert (got - ref).abs().max() <= 2 * (bf - ref).abs().max() + 1e-4


@pytest.mark.parametrize("feeding", [True, False])
def test_the_models_loss_is_the_cross_entropy_of_its_logits(feeding):
    torch.manual_seed(1)
    cfg = tiny_model_config(hidden=8, embedding=6)
    cfg = cfg.model_copy(
        update={"decoder": cfg.decoder.model_copy(update={"input_feeding": feeding})}
    )
    model = build_model(cfg, 11, 13).eval()
    src = torch.randint(4, 11, (3, 5))
    src_len = torch.tensor([5, 3, 4])
    tgt_in = torch.randint(4, 13, (3, 6))
    tgt_out = torch.randint(4, 13, (3, 6))
    tgt_out[1, 4:] = 0
    logits, _ = model(src, src_len, tgt_in)
    plain = loss_fn(logits, tgt_out, 0.1, reduction="sum")
    plain.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    fused = model.loss(src, src_len, tgt_in, tgt_out, 0.1)
    fused.backward()
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    for name, p in model.named_parameters():
        if name in ref:
            torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6)
