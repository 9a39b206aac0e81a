"""The plain reference (jumok.model.reference) and the production model compute the same function.

Both are given the same weights; the production model runs as training runs it (training mode,
dropout 0, its fast paths as they are by default on a CPU: the padded encoder run, the sliced
loss, and with input feeding the stepped LSTM, the deferred gradients and the stepwise loss) and
as decoding runs it (evaluation mode, greedy search). Everything is float32 and compared to 1e-5.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import SRC_V, TGT_V, random_batch, tiny_model_config

from jumok.config import DecoderConfig, EncoderConfig, ModelConfig
from jumok.data.vocab import EOS_ID, PAD_ID
from jumok.decoding.greedy import greedy
from jumok.fast.feeding import InputFeedingLSTM
from jumok.model import reference
from jumok.model.seq2seq import Seq2Seq, build_model

E, H = 6, 8
TOL = {"rtol": 1e-5, "atol": 1e-5}


def config(input_feeding: bool) -> ModelConfig:
    if not input_feeding:
        return tiny_model_config(hidden=H, embedding=E)  # the lecture's model: the defaults
    return ModelConfig(
        encoder=EncoderConfig(embedding_size=E, hidden_size=H),
        decoder=DecoderConfig(embedding_size=E, hidden_size=H, input_feeding=True),
    )


def pair(input_feeding: bool, train_steps: int = 0) -> tuple[Seq2Seq, reference.Seq2Seq]:
    """A production model (jumok's default initialisation, then ``train_steps`` Adam updates on
    :func:`padded_batch`) and the reference with its weights."""
    torch.manual_seed(3)
    production = build_model(config(input_feeding), SRC_V, TGT_V).train()
    # with input feeding, the fast path under test is jumok's stepped LSTM (jumok.fast.feeding)
    assert isinstance(production.decoder.rnn, InputFeedingLSTM) == input_feeding
    optimizer = torch.optim.Adam(production.parameters(), lr=0.1)
    for _ in range(train_steps):
        optimizer.zero_grad()
        production.loss(*padded_batch()).backward()
        optimizer.step()
    ref = reference.Seq2Seq(SRC_V, TGT_V, E, H, input_feeding)
    ref.load_state_dict(reference.from_production(production.state_dict()))
    return production, ref.train()


def padded_batch():
    """Sources of lengths 7, 5, 1, 4 (padded to 7) and targets of lengths 5, 2, 4, 1 (padded to 5),
    with padding in ``tgt_in`` as well as in ``tgt_out``."""
    src_BS, _, tgt_in_BT = random_batch(B=4, S=7, T=5, seed=1)
    src_len_B = torch.tensor([7, 5, 1, 4])
    src_BS[torch.arange(7).unsqueeze(0) >= src_len_B.unsqueeze(1)] = PAD_ID
    tgt_out_BT = torch.cat([tgt_in_BT[:, 1:], torch.full((4, 1), EOS_ID)], dim=1)
    tgt_len_B = torch.tensor([5, 2, 4, 1])
    pad_BT = torch.arange(5).unsqueeze(0) >= tgt_len_B.unsqueeze(1)
    tgt_out_BT[pad_BT] = PAD_ID
    tgt_in_BT[pad_BT] = PAD_ID
    tgt_out_BT[torch.arange(4), tgt_len_B - 1] = EOS_ID
    return src_BS, src_len_B, tgt_in_BT, tgt_out_BT


def gradients_in_production_names(ref: reference.Seq2Seq) -> dict[str, torch.Tensor]:
    """The reference's gradients, in production's names (the inverse of ``from_production``)."""
    grads = {name: p.grad for name, p in ref.named_parameters()}
    if ref.decoder.input_feeding:
        p = "decoder.rnn."
        w_ih = grads.pop(p + "weight_ih_l0")
        grads[p + "inputs.0.weight"], grads[p + "feed.weight"] = w_ih[:, :E], w_ih[:, E:]
        grads[p + "recurrent.0.weight"] = grads.pop(p + "weight_hh_l0")
        b_ih, b_hh = grads.pop(p + "bias_ih_l0"), grads.pop(p + "bias_hh_l0")
        torch.testing.assert_close(b_ih, b_hh)  # both are the gradient of the gate inputs
        grads[p + "inputs.0.bias"] = b_ih
    return grads


CASES = pytest.mark.parametrize("input_feeding", [False, True], ids=["lecture", "input_feeding"])


@CASES
def test_teacher_forced_logits_and_attention_weights_are_the_same(input_feeding):
    production, ref = pair(input_feeding)
    src_BS, src_len_B, tgt_in_BT, _ = padded_batch()
    calls = []  # the encoder's nn.LSTM module is not called when the fast padded run is taken
    production.encoder.rnn.register_forward_hook(lambda *args: calls.append(1))
    logits_BTV, weights_BTS = production(src_BS, src_len_B, tgt_in_BT)
    assert not calls, "production ran the source by length, not in one padded call"
    ref_logits_BTV, ref_weights_BTS = ref(src_BS, src_len_B, tgt_in_BT)
    torch.testing.assert_close(logits_BTV, ref_logits_BTV, **TOL)
    torch.testing.assert_close(weights_BTS, ref_weights_BTS, **TOL)
    assert (ref_weights_BTS[2, :, 1:] == 0).all()  # sentence 2 has one real source token


@CASES
def test_the_loss_and_the_gradient_of_every_parameter_are_the_same(input_feeding):
    production, ref = pair(input_feeding)
    batch = padded_batch()
    loss = production.loss(*batch)
    ref_loss = ref.loss(*batch)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    loss.backward()
    ref_loss.backward()
    expected = gradients_in_production_names(ref)
    grads = {name: p.grad for name, p in production.named_parameters()}
    assert sorted(grads) == sorted(expected)
    for name, grad in grads.items():
        assert expected[name].abs().sum() > 0, f"{name}: no gradient to compare"
        torch.testing.assert_close(grad, expected[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


@CASES
def test_greedy_decoding_gives_the_same_tokens_and_attention_weights(input_feeding):
    # trained a little on the batch, so that the outputs differ and end at different steps
    production, ref = pair(input_feeding, train_steps=25)
    src_BS, src_len_B, _, tgt_out_BT = padded_batch()
    hyps = greedy(production.eval(), src_BS, src_len_B, max_length=7)
    ref_ids_BT, ref_weights_BTS = reference.greedy(ref.eval(), src_BS, src_len_B, max_length=7)
    assert [len(hyp.token_ids) for hyp in hyps] == [5, 2, 4, 1]  # eos after each target
    for b, hyp in enumerate(hyps):
        T, S = len(hyp.token_ids), int(src_len_B[b])
        assert hyp.token_ids == ref_ids_BT[b, :T].tolist() == tgt_out_BT[b, :T].tolist()
        assert (ref_ids_BT[b, T:] == PAD_ID).all()
        torch.testing.assert_close(hyp.attention_TS, ref_weights_BTS[b, :T, :S], **TOL)


@CASES
def test_a_weight_off_by_one_part_in_a_thousand_is_caught(input_feeding):
    # the comparisons above can fail: the encoder's recurrent weights scaled by 1.001 move the
    # logits by ~6e-5, four times the tolerance at their size (the two models differ by ~1e-7)
    production, ref = pair(input_feeding)
    with torch.no_grad():
        ref.encoder.rnn.weight_hh_l0.mul_(1.001)
    src_BS, src_len_B, tgt_in_BT, _ = padded_batch()
    logits_BTV, _ = production(src_BS, src_len_B, tgt_in_BT)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(logits_BTV, ref(src_BS, src_len_B, tgt_in_BT)[0], **TOL)


def test_an_attention_over_the_padding_is_caught(monkeypatch):
    # a reference that forgot the mask (lecture point 5 with padding) differs from production
    production, ref = pair(input_feeding=False)
    plain = reference.attend
    monkeypatch.setattr(
        reference, "attend", lambda h, hs, mask: plain(h, hs, torch.ones_like(mask))
    )
    src_BS, src_len_B, tgt_in_BT, _ = padded_batch()
    logits_BTV, _ = production(src_BS, src_len_B, tgt_in_BT)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(logits_BTV, ref(src_BS, src_len_B, tgt_in_BT)[0], **TOL)


def test_the_lecture_page_links_the_reference_lines_it_names():
    # docs/lecture.md links line ranges of reference.py: each range must still hold (or, for an
    # excerpt, directly follow) the definition it names, and the page must give the line count
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs/lecture.md").read_text(encoding="utf-8")
    lines = (root / "jumok/model/reference.py").read_text(encoding="utf-8").splitlines()
    assert f"the lecture's model in {len(lines)}\nplain lines" in page
    links = re.findall(r"reference\.py#L(\d+)-L(\d+)\) `([\w.]+)`", page)
    assert len(links) == 10
    for first, last, name in links:
        found = [
            n
            for n, line in enumerate(lines, 1)
            if re.match(rf"\s*(def|class) {name.split('.')[-1]}\b", line)
        ]
        assert any(int(first) - 2 <= n <= int(last) for n in found), f"L{first}-L{last}: {name}"
