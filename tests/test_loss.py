"""The output layer and the cross-entropy computed together in slices (jumok.fast.sliced_loss) give the
loss and the gradients of the plain way: ``cross_entropy(output(x), target, reduction="sum")``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jumok.fast import sliced_loss as loss_module
from jumok.fast.sliced_loss import output_cross_entropy
from jumok.model.seq2seq import build_model
from jumok.training.train import loss_fn


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
    old = loss_module.SLICE_LOGITS, loss_module.GRAD_SLICE_LOGITS
    loss_module.SLICE_LOGITS = loss_module.GRAD_SLICE_LOGITS = slice_logits
    try:
        got = _grads(output_cross_entropy, x, output, target, eps)
        with torch.no_grad():
            alone = float(output_cross_entropy(x, output, target, eps))  # without gradients
    finally:
        loss_module.SLICE_LOGITS, loss_module.GRAD_SLICE_LOGITS = old
    assert alone == pytest.approx(ref[0], rel=1e-5, abs=1e-5)
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


def _stepwise_grads(x_BTF, output, target_BT, eps, scale=0.37):
    x_BTF = x_BTF.detach().clone().requires_grad_()
    output.zero_grad()
    stepwise = loss_module.StepwiseCrossEntropy(output, target_BT, eps, ignore_index=0)
    steps = [x_BTF[:, t : t + 1] * 1.0 for t in range(x_BTF.shape[1])]  # as a loop makes them
    for step_B1F in steps:
        stepwise.add(step_B1F)
    loss = stepwise.total(torch.cat(steps, dim=1))
    (loss * scale).backward()
    bias = None if output.bias is None else output.bias.grad.clone()
    return float(loss.detach()), x_BTF.grad.clone(), output.weight.grad.clone(), bias


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 5),
    T=st.integers(1, 9),
    V=st.integers(2, 12),
    eps=st.sampled_from([0.0, 0.1]),
    slice_logits=st.integers(1, 300),
    bias=st.booleans(),
)
def test_stepwise_loss_gives_the_loss_and_gradients_of_all_rows_at_once(
    B, T, V, eps, slice_logits, bias
):
    torch.manual_seed(B * 100 + T * 10 + V)
    output = torch.nn.Linear(5, V, bias=bias)
    x_BTF = torch.randn(B, T, 5) * 2
    target_BT = torch.randint(0, V, (B, T))
    target_BT[0, -1] = 0  # padding
    old = loss_module.GRAD_SLICE_LOGITS
    loss_module.GRAD_SLICE_LOGITS = slice_logits  # 1 to T steps per slice, a shorter last one
    try:
        got = _stepwise_grads(x_BTF, output, target_BT, eps)
    finally:
        loss_module.GRAD_SLICE_LOGITS = old
    flat = _grads(_plain, x_BTF.reshape(-1, 5), output, target_BT.reshape(-1), eps)
    assert got[0] == pytest.approx(flat[0], rel=1e-5, abs=1e-5)
    torch.testing.assert_close(got[1].reshape(-1, 5), flat[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], flat[2], rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(got[3], flat[3], rtol=1e-5, atol=1e-5)
    else:
        assert got[3] is None


def test_stepwise_loss_computes_each_slice_as_soon_as_its_steps_are_in(monkeypatch):
    output = torch.nn.Linear(4, 10)
    target_BT = torch.randint(1, 10, (3, 7))
    monkeypatch.setattr(loss_module, "GRAD_SLICE_LOGITS", 3 * 10 * 2)  # two steps per slice
    stepwise = loss_module.StepwiseCrossEntropy(output, target_BT)
    seen = []
    for _ in range(7):
        stepwise.add(torch.randn(3, 1, 4))
        seen.append(stepwise.done)
    assert seen == [0, 2, 2, 4, 4, 6, 6]
    assert float(stepwise.loss) > 0  # six steps' loss already summed
    with pytest.raises(ValueError, match="7 target steps, but features of 7 steps were added"):
        stepwise.total(torch.randn(3, 6, 4))  # the last step is computed; the shapes disagree


def test_training_loss_with_input_feeding_goes_step_by_step(monkeypatch):
    torch.manual_seed(3)
    cfg = tiny_model_config(hidden=8, embedding=6)
    cfg = cfg.model_copy(update={"decoder": cfg.decoder.model_copy(update={"input_feeding": True})})
    model = build_model(cfg, 11, 13).train()
    made = []
    original = loss_module.StepwiseCrossEntropy.add
    monkeypatch.setattr(
        loss_module.StepwiseCrossEntropy,
        "add",
        lambda self, x: (made.append(x.shape), original(self, x))[1],
    )
    src, src_len = torch.randint(4, 11, (2, 5)), torch.tensor([5, 2])
    tgt = torch.randint(4, 13, (2, 6))
    model.loss(src, src_len, tgt, tgt).backward()
    assert made == [torch.Size([2, 1, model.decoder.output.in_features])] * 6
    with torch.no_grad():  # evaluation: all rows after the loop
        made.clear()
        model.loss(src, src_len, tgt, tgt)
    assert made == []


def test_stepwise_loss_under_bf16_reads_the_weights_of_the_moment():
    """Under autocast the output weight's bf16 copy is written into a buffer kept between
    updates: the next loss must see the weights as they are then, not the previous copy."""
    torch.manual_seed(0)
    output = torch.nn.Linear(8, 11)
    x_BTF, target_BT = torch.randn(3, 4, 8), torch.randint(1, 11, (3, 4))

    def stepwise():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_module.StepwiseCrossEntropy(output, target_BT)
            for t in range(4):
                loss.add(x_BTF[:, t : t + 1])
            return float(loss.total(x_BTF).detach())

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return float(_plain(x_BTF.reshape(-1, 8), output, target_BT.reshape(-1), 0.0).detach())

    first = stepwise()
    assert first == pytest.approx(plain(), rel=1e-3)
    with torch.no_grad():
        output.weight.mul_(3.0)  # in place, as the optimizer updates it
    assert stepwise() == pytest.approx(plain(), rel=1e-3)
    assert stepwise() != pytest.approx(first, rel=1e-2)
