"""Decoding copies with weights packed for oneDNN (jumok/fast/packing.py): the same numbers as the
plain layers, faster; the model itself untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import QUIET, SRC_V, TGT_V, random_batch, small_config, tiny_model_config
from torch import nn

import jumok
from jumok.decoding import copies
from jumok.fast import packing
from jumok.fast.feeding import InputFeedingLSTM
from jumok.model.seq2seq import build_model
from jumok.training.train import train

pytestmark = pytest.mark.skipif(
    not packing.available(torch.device("cpu")), reason="this PyTorch build cannot pack weights"
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_the_linear(dtype, bias):
    if not packing.available(torch.device("cpu"), dtype):
        pytest.skip(f"this CPU's oneDNN cannot run {dtype}")
    torch.manual_seed(0)
    linear = nn.Linear(48, 37, bias=bias)
    packed = packing.PackedLinear(linear, dtype)
    for shape in [(1, 48), (5, 48), (64, 48), (3, 4, 48)]:
        x = torch.randn(shape)
        with torch.no_grad():
            if dtype == torch.bfloat16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    want, got = linear(x), packed(x)
                assert got.dtype == torch.bfloat16
                torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same products
            else:
                want, got = linear(x), packed(x)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert got.shape == (*shape[:-1], 37)


def test_a_packed_row_does_not_depend_on_the_others():
    torch.manual_seed(0)
    packed = packing.PackedLinear(nn.Linear(64, 300), torch.float32)
    x = torch.randn(40, 64)
    with torch.no_grad():
        together = packed(x)
        for n in (1, 3, 17):
            assert torch.equal(packed(x[:n]), together[:n])


def test_the_plain_path_outside_decoding():
    """With gradients, or in a dtype it was not packed for, the layer is the plain one."""
    if not packing.available(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU's oneDNN cannot run bf16")
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    packed = packing.PackedLinear(linear, torch.bfloat16)
    x = torch.randn(3, 8)
    out = packed(x)  # gradients on: float32, through the parameters
    assert out.dtype == torch.float32 and out.requires_grad
    torch.testing.assert_close(out, linear(x))
    out.sum().backward()
    assert linear.weight.grad is not None
    with torch.no_grad():  # float32 input, no autocast: not what it was packed for
        assert torch.equal(packed(x), linear(x))


def _feeding_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_model_config(hidden=16, embedding=8)
    cfg = cfg.model_copy(
        update={
            "attention": "general",
            "decoder": cfg.decoder.model_copy(update={"input_feeding": True}),
        }
    )
    return build_model(cfg, SRC_V, TGT_V).eval()


def test_decoding_steps_agree_with_the_plain_model():
    """Output layer, attentional layer and the LSTM's step product packed (float32): every
    step's logits as the plain model's, to float32 rounding."""
    model = _feeding_model()
    made = copy.deepcopy(model)
    assert copies.pack_decoders(made, torch.float32) == 3
    assert isinstance(made.decoder.output, packing.PackedLinear)
    assert made.decoder.rnn.pack_step_product and not model.decoder.rnn.pack_step_product
    src_BS, src_len_B, tgt_in_BT = random_batch(B=4, S=6, T=5)
    with torch.no_grad():
        states = []
        for m in (model, made):
            enc = m.encode(src_BS, src_len_B)
            state, steps = enc.state, []
            for t in range(tgt_in_BT.shape[1]):
                logits_BV, state, weights_BS = m.decode_step(tgt_in_BT[:, t], state, enc)
                steps.append((logits_BV, weights_BS))
            states.append(steps)
        assert made.decoder.rnn._packed is not None  # the packed product ran
    for (want, want_w), (got, got_w) in zip(*states, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-5)


def test_training_never_sees_packed_products():
    model = _feeding_model()
    lstm = model.decoder.rnn
    assert isinstance(lstm, InputFeedingLSTM)
    lstm.pack_step_product = True
    x = torch.randn(2, 3, 8)
    assert lstm.packed_layer0(x) is None  # gradients on
    with torch.no_grad():
        assert lstm.packed_layer0(x) is not None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("packing") / "run"
    train(small_config("train.epochs=1"), path, **QUIET)
    return path


DATES = ["september 27, 1994", "9/27/94", "Jan 1, 2001", "TUESDAY, MAY 3, 1983", "7/4/09"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("beam", [1, 3])
def test_translations_are_those_of_the_plain_layers(run_dir, monkeypatch, precision, beam):
    if precision == "bf16" and not packing.available(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU's oneDNN cannot run bf16")
    packed = jumok.load(run_dir)
    plain = jumok.load(run_dir)
    monkeypatch.setattr(packing, "available", lambda device, dtype=torch.float32: False)
    want = plain.translate(DATES, beam=beam, precision=precision)
    assert plain._decoding_model(precision) is plain.model or precision == "bf16"
    monkeypatch.undo()
    got = packed.translate(DATES, beam=beam, precision=precision)
    model = packed._decoding_model(precision)
    assert isinstance(model.decoder.output, packing.PackedLinear)
    assert [t.tokens for t in got] == [t.tokens for t in want]
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4 if precision == "fp32" else 0)


def test_the_float32_copy_shares_the_weights_and_is_repacked_after_refresh(run_dir):
    translator = jumok.load(run_dir)
    first = translator._decoding_model("fp32")
    assert first is not translator.model
    assert isinstance(translator.model.decoder.output, nn.Linear)  # the model is untouched
    assert all(
        a is b for a, b in zip(first.parameters(), translator.model.parameters(), strict=True)
    )
    assert translator._decoding_model("fp32") is first
    before = translator.translate(["9/27/94"])[0].tokens
    assert before != ["</s>"]
    with torch.no_grad():
        translator.model.decoder.output.bias[2] += 1e4  # eos first, whatever the input
    assert translator._decoding_model("fp32") is first  # kept: packed weights of its moment
    translator.refresh()
    assert translator._decoding_model("fp32") is not first  # repacked
    assert translator.translate(["9/27/94"])[0].tokens == ["</s>"]


def test_prepare_makes_the_copy_a_decode_then_uses(run_dir):
    from jumok.errors import ConfigError

    if not packing.available(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU's oneDNN cannot run bf16")

    translator = jumok.load(run_dir)
    translator.prepare(precision="bf16")
    made = translator._copies["bf16"][1]
    assert isinstance(made.decoder.output, packing.PackedLinear)
    translator.translate(["9/27/94"], precision="bf16")
    assert translator._copies["bf16"][1] is made  # not made again
    translator.prepare()  # the run's own settings: float32, a packed copy
    assert "fp32" in translator._copies
    with pytest.raises(ConfigError, match="beam"):
        translator.prepare(beam=0)


def test_availability_by_device_and_dtype():
    cpu = torch.device("cpu")
    assert packing.available(cpu, torch.float32)
    assert not packing.available(torch.device("meta"))  # only the CPU
    assert not packing.available(cpu, torch.float16)  # float32 and bf16 only
