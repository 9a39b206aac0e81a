"""The input-feeding LSTM (jumok.fast.feeding) computes what nn.LSTM computes, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jumok.fast.dropout import Dropout
from jumok.fast.feeding import InputFeedingLSTM, StepLinear

B, T, IN, H = 3, 5, 6, 4  # IN: what a step reads besides the feed (of size H)


def pair(layers: int) -> tuple[nn.LSTM, nn.Linear, InputFeedingLSTM, nn.Linear]:
    """An nn.LSTM and an attentional layer, and the same weights in jumok's split form."""
    torch.manual_seed(layers)
    ref, att = nn.LSTM(IN + H, H, num_layers=layers, batch_first=True), nn.Linear(H, H)
    fast, fast_att = InputFeedingLSTM(IN, H, H, layers), nn.Linear(H, H)
    fast.load_state_dict(ref.state_dict())  # nn.LSTM's names: split on load
    fast_att.load_state_dict(att.state_dict())
    return ref, att, fast, fast_att


def unroll_reference(ref, att, x_BTI, state):
    feed_BH, outs = torch.zeros(B, H), []
    for t in range(T):
        h_B1H, state = ref(torch.cat([x_BTI[:, t : t + 1], feed_BH[:, None]], -1), state)
        feed_BH = att(h_B1H[:, 0]).tanh()
        outs.append(feed_BH)
    return torch.stack(outs, 1), state


def unroll_fast(fast, att, x_BTI, state, step_linear: bool):
    steps, feed_BH, outs = fast.start(x_BTI), torch.zeros(B, H), []
    attentional = StepLinear(att, "cpu") if step_linear else att
    for _ in range(T):
        h_BH, state = steps.step(feed_BH, state)
        feed_BH = attentional(h_BH).tanh()
        outs.append(feed_BH)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("layers", [1, 2])
def test_the_same_outputs_and_gradients_as_nn_lstm(layers):
    ref, att, fast, fast_att = pair(layers)
    x_BTI = torch.randn(B, T, IN)
    state = (torch.randn(layers, B, H), torch.randn(layers, B, H))
    losses = []
    for unroll, modules in (
        (unroll_reference, (ref, att)),
        (lambda f, a, x, s: unroll_fast(f, a, x, s, step_linear=True), (fast, fast_att)),
    ):
        out_BTH, (h_LBH, c_LBH) = unroll(*modules, x_BTI, state)
        loss = out_BTH.pow(2).sum() + c_LBH.sum() + h_LBH.sum()
        loss.backward()
        losses.append((out_BTH.detach(), c_LBH.detach()))
    torch.testing.assert_close(losses[0], losses[1])
    for layer in range(layers):
        w_ih = getattr(ref, f"weight_ih_l{layer}").grad
        fed = fast.inputs[layer].weight.grad
        if layer == 0:
            torch.testing.assert_close(w_ih[:, :IN], fed)
            torch.testing.assert_close(w_ih[:, IN:], fast.feed.weight.grad)
        else:
            torch.testing.assert_close(w_ih, fed)
        torch.testing.assert_close(
            getattr(ref, f"weight_hh_l{layer}").grad, fast.recurrent[layer].weight.grad
        )
        for bias in ("bias_ih", "bias_hh"):  # one bias here gets the gradient of both
            torch.testing.assert_close(
                getattr(ref, f"{bias}_l{layer}").grad, fast.inputs[layer].bias.grad
            )
    torch.testing.assert_close(att.weight.grad, fast_att.weight.grad)
    torch.testing.assert_close(att.bias.grad, fast_att.bias.grad)


def test_step_linear_gives_the_gradient_of_a_linear_applied_at_every_step():
    torch.manual_seed(0)
    lin = nn.Linear(H, H)
    x_BH = torch.randn(B, H)
    grads = []
    for deferred in (False, True):
        lin.zero_grad()
        apply = StepLinear(lin, "cpu") if deferred else lin
        h_BH = x_BH
        for _ in range(T):
            h_BH = apply(h_BH).tanh()
        h_BH.sum().backward()
        grads.append((lin.weight.grad.clone(), lin.bias.grad.clone()))
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[1][0].abs().sum() > 0


def test_under_bf16_autocast_the_step_computes_in_bf16_and_keeps_the_cell_in_float32():
    _, _, fast, _ = pair(1)
    x_BTI = torch.randn(B, T, IN)
    state = (torch.zeros(1, B, H), torch.zeros(1, B, H))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        steps = fast.start(x_BTI)
        assert steps.pre_BTG.dtype == torch.bfloat16
        h_BH, (_, c_LBH) = steps.step(torch.zeros(B, H), state)
    assert c_LBH.dtype == torch.float32 and h_BH.dtype == torch.float32
    with torch.no_grad():
        exact, _ = fast.start(x_BTI).step(torch.zeros(B, H), state)
    assert (h_BH - exact).abs().max() < 0.02


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_rescales(p):
    torch.manual_seed(0)
    drop = Dropout(p)
    y = drop(torch.ones(200_001))  # not a multiple of the four elements per draw
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # neighbours (which share a 64-bit draw) are independent: P(both kept) = (1 - p)^2
    both = (kept[:-1] & kept[1:]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.005
    # a fresh mask per call
    assert not torch.equal(drop(torch.ones(1000)), drop(torch.ones(1000)))
    x = torch.randn(3, 7, requires_grad=True)
    out = drop(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - p))
    assert torch.equal(drop.eval()(x), x)


def test_dropout_keeps_the_input_dtype_and_drops_everything_at_p_1():
    x = torch.randn(4, 5, dtype=torch.bfloat16)
    assert Dropout(0.3)(x).dtype == torch.bfloat16
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


def test_decoding_steps_use_one_fused_product_and_give_the_same_states():
    _, _, fast, _ = pair(2)
    x_BTI = torch.randn(B, T, IN)
    state = (torch.randn(2, B, H), torch.randn(2, B, H))
    feed_BH = torch.randn(B, H)
    with torch.no_grad():
        fused = fast.start(x_BTI)
        assert fused.fused is not None  # one (4H, IN + 2H) matrix for layer 0
        assert fused.fused[0].shape == (4 * H, IN + 2 * H)
        got = fused.step(feed_BH, state)
    plain = fast.start(x_BTI)  # with gradients: the split products
    assert plain.fused is None
    want = plain.step(feed_BH, state)
    torch.testing.assert_close(got[0], want[0].detach())
    torch.testing.assert_close(got[1][1], want[1][1].detach())
    with torch.no_grad():  # a weight changed in place is seen once the caches are cleared
        fast.feed.weight.add_(1.0)
        fast.clear_cache()
        changed = fast.start(x_BTI).step(feed_BH, state)
    assert not torch.allclose(changed[0], got[0])
    with torch.no_grad():  # loading a state dict clears them too
        fast.start(x_BTI)
        assert "_fused" in fast.__dict__
        fast.load_state_dict(fast.state_dict())
        assert "_fused" not in fast.__dict__


@pytest.mark.parametrize("uses", ["both", "h", "c"])
def test_the_cell_matches_the_textbook_lstm_cell_forward_and_backward(uses):
    # jumok's cell (one sigmoid for the four gates, tanh as 2 sigmoid(2x) - 1) against the
    # textbook LSTM cell, when the loss reads h, c or both
    from jumok.fast.feeding import lstm_cell

    torch.manual_seed(7)
    gates0, c0 = torch.randn(B, 4 * H) * 2, torch.randn(B, H)
    grads = []
    for fast in (True, False):
        gates, c = gates0.clone().requires_grad_(), c0.clone().requires_grad_()
        if fast:
            h_new, c_new = lstm_cell(gates, c)
        else:
            i, f, g, o = gates.chunk(4, dim=1)
            c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h_new = o.sigmoid() * c_new.tanh()
        loss = {"both": (h_new * 3).sum() + (c_new**2).sum(), "h": h_new.pow(2).sum()}
        loss["c"] = c_new.sum()
        loss[uses].backward()
        grads.append((h_new.detach(), c_new.detach(), gates.grad, c.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_a_training_loops_attentional_dropout_draws_a_fresh_mask_for_every_step(autocast):
    """The loop draws the masks of all its steps at once (jumok.model.decoder): each step must still
    get its own, drop with probability p, rescale by 1 / (1 - p), and pass the gradient."""
    from conftest import tiny_model_config

    from jumok.model.seq2seq import build_model

    torch.manual_seed(0)
    cfg = tiny_model_config(hidden=64, embedding=6)
    cfg = cfg.model_copy(
        update={
            "decoder": cfg.decoder.model_copy(update={"input_feeding": True}),
            "dropout": cfg.dropout.model_copy(update={"attentional": 0.5}),
        }
    )
    model = build_model(cfg, 11, 13).train()
    src, src_len = torch.randint(4, 11, (32, 5)), torch.full((32,), 5)
    tgt = torch.randint(4, 13, (32, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        enc = model.encode(src, src_len)
        out_BTF, _, _ = model.decoder.features(tgt, enc.state, enc)
    assert out_BTF.dtype == (torch.bfloat16 if autocast else torch.float32)
    dropped_BTF = out_BTF == 0
    assert abs(dropped_BTF.float().mean().item() - 0.5) < 0.05
    for t in range(1, 6):  # not one mask for every step
        assert not torch.equal(dropped_BTF[:, t], dropped_BTF[:, 0])
    kept = out_BTF[~dropped_BTF].float().abs()
    assert kept.max() <= 2.0 + 1e-2  # tanh's range, doubled by 1 / (1 - p)
    (out_BTF.float() * torch.randn(out_BTF.shape)).sum().backward()
    for name, p in model.decoder.named_parameters():
        if not name.startswith("output."):  # the output layer is not part of the features
            assert p.grad is not None and p.grad.abs().sum() > 0, name
