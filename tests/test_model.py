"""The model's wiring: shapes, masks, the two decoding paths, gradients, import hygiene."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from conftest import TGT_V, random_batch, tiny_model_config
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jumok.config import ModelConfig
from jumok.data.vocab import EOS_ID
from jumok.decoding.greedy import greedy
from jumok.fast.padded_rnn import padded_run_applies, run_padded
from jumok.model.encoder import reverse_within_length, run_by_length
from jumok.model.seq2seq import build_model

# every test here runs with jumok.fast on and off (conftest.fast_layer)
pytestmark = pytest.mark.usefixtures("fast_layer")


def test_forward_shapes(tiny_model):
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5)
    logits, weights = tiny_model(src, src_len, tgt_in)
    assert logits.shape == (4, 5, TGT_V)
    assert weights.shape == (4, 5, 7)


@pytest.mark.parametrize("lengths", [[5, 5, 5], [2, 5, 5, 3], [1], [4, 1, 3, 2, 4]])
def test_run_by_length_equals_packed_lstm(lengths):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    len_B = torch.tensor(lengths)
    x = torch.randn(len(lengths), max(lengths), 3)
    hs, (h, c) = run_by_length(lstm, x, len_B)
    packed = pack_padded_sequence(x, len_B, batch_first=True, enforce_sorted=False)
    out, (h_ref, c_ref) = lstm(packed)
    hs_ref, _ = pad_packed_sequence(out, batch_first=True, total_length=max(lengths))
    torch.testing.assert_close(hs, hs_ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def _by_length_reversed(rnn, x, len_B):
    """The backward direction the plain way: each sentence reversed within its length."""
    hs, state = run_by_length(rnn, reverse_within_length(x, len_B), len_B)
    return reverse_within_length(hs, len_B), state


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("lengths", [[2, 5, 5, 3], [1, 6], [4, 1, 3, 2, 4], [3, 3]])
@pytest.mark.parametrize("reverse", [False, True])
def test_run_padded_equals_run_by_length_with_gradients(kind, lengths, reverse):
    torch.manual_seed(0)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](3, 4, batch_first=True)
    assert padded_run_applies(rnn)
    len_B = torch.tensor(lengths)
    x = torch.randn(len(lengths), max(lengths), 3)
    x[torch.arange(max(lengths)) >= len_B.unsqueeze(1)] = 0  # padding embeds to zeros
    results = []
    reference = _by_length_reversed if reverse else run_by_length
    for run in (reference, functools.partial(run_padded, reverse=reverse)):
        rnn.zero_grad()
        x_in = x.clone().requires_grad_()
        hs, state = run(rnn, x_in, len_B)
        parts = [hs, *(state if kind == "lstm" else (state,))]
        g = torch.Generator().manual_seed(1)  # the same upstream gradients for both
        sum((p * torch.randn(p.shape, generator=g)).sum() for p in parts).backward()
        results.append((parts, x_in.grad, [p.grad.clone() for p in rnn.parameters()]))
    (want, want_dx, want_dw), (got, got_dx, got_dw) = results
    assert (got[0][len_B.unsqueeze(1) <= torch.arange(max(lengths))] == 0).all()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got_dx, want_dx)
    for a, b in zip(got_dw, want_dw, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = run_padded(rnn, x, len_B, reverse=reverse)[0]
    assert (bf16.float() - want[0]).abs().max() < 0.02


def test_decoder_starts_from_the_last_real_token_not_a_pad_step(tiny_model):
    src, src_len, _ = random_batch(B=3, S=6)
    src_len[1] = 2
    enc = tiny_model.encode(src, src_len)
    alone = tiny_model.encode(src[1:2, :2], src_len[1:2])
    torch.testing.assert_close(enc.state.rnn[0][:, 1], alone.state.rnn[0][:, 0])
    torch.testing.assert_close(enc.state.rnn[1][:, 1], alone.state.rnn[1][:, 0])


def test_teacher_forced_unroll_equals_step_by_step(tiny_model):
    src, src_len, tgt_in = random_batch(B=4, S=7, T=6)
    logits_all, weights_all = tiny_model(src, src_len, tgt_in)
    enc = tiny_model.encode(src, src_len)
    state = enc.state
    for t in range(tgt_in.shape[1]):
        logits_t, state, weights_t = tiny_model.decode_step(tgt_in[:, t], state, enc)
        torch.testing.assert_close(logits_t, logits_all[:, t], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights_t, weights_all[:, t], rtol=1e-5, atol=1e-6)


def test_a_sentence_alone_equals_the_same_sentence_in_a_padded_batch(tiny_model):
    src, src_len, tgt_in = random_batch(B=5, S=8, T=5, seed=3)
    src_len[2] = 3
    src[2, 3:] = 0
    logits, weights = tiny_model(src, src_len, tgt_in)
    logits1, weights1 = tiny_model(src[2:3, :3], src_len[2:3], tgt_in[2:3])
    torch.testing.assert_close(logits[2:3], logits1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights[2:3, :, :3], weights1, rtol=1e-5, atol=1e-6)
    assert (weights[2, :, 3:] == 0).all()
    # and greedy decoding agrees too
    tiny_model.eval()
    batch_hyps = greedy(tiny_model, src, src_len, max_length=6)
    alone_hyp = greedy(tiny_model, src[2:3, :3], src_len[2:3], max_length=6)[0]
    assert batch_hyps[2].token_ids == alone_hyp.token_ids
    torch.testing.assert_close(batch_hyps[2].attention_TS, alone_hyp.attention_TS)


def test_greedy_returns_attention_rows_summing_to_one(tiny_model):
    tiny_model.eval()
    src, src_len, _ = random_batch(B=3, S=6)
    for hyp, length in zip(
        greedy(tiny_model, src, src_len, max_length=5), src_len.tolist(), strict=True
    ):
        assert hyp.attention_TS.shape == (len(hyp.token_ids), length)
        torch.testing.assert_close(hyp.attention_TS.sum(-1), torch.ones(len(hyp.token_ids)))
        assert abs(hyp.score - sum(hyp.token_logprobs)) < 1e-5
        assert hyp.finished == (hyp.token_ids[-1] == EOS_ID)


def test_every_parameter_gets_a_finite_nonzero_gradient(tiny_model):
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5)
    logits, _ = tiny_model(src, src_len, tgt_in)
    logits.log_softmax(-1)[..., 4:].sum().backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_modules_keep_no_state_between_calls(tiny_model):
    src, src_len, tgt_in = random_batch()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    attrs = set(vars(tiny_model.decoder.attention))
    tiny_model(src, src_len, tgt_in)
    assert set(vars(tiny_model.decoder.attention)) == attrs
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_modelling_core_imports_no_plotting_and_no_training_loop():
    code = (
        "import sys, jumok, jumok.model.seq2seq, jumok.decoding.search, jumok.model.attention, jumok.decoding.translator; "
        "print(sorted(m for m in ('matplotlib', 'jumok.plot', 'jumok.training.train', 'jumok.app.cli') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _init_model(init: str, **extra):
    cfg = tiny_model_config(hidden=64, embedding=48).model_copy(update={"init": init, **extra})
    torch.manual_seed(0)
    return build_model(cfg, 200, 300)


def _embeddings(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]


@pytest.mark.parametrize("bound", [0.1, 0.03])
def test_uniform_init_fills_every_parameter_within_its_range(bound):
    model = _init_model("uniform", init_range=bound)
    for name, p in model.named_parameters():
        values = p.detach().flatten()
        if p.dim() >= 2:  # padding rows are zero; drop them before looking at the spread
            values = values[values != 0]
        assert values.abs().max() <= bound, name
        if values.numel() >= 1000:  # uniform(-b, b): std b/sqrt(3), and it reaches near b
            assert abs(values.std().item() - bound / 3**0.5) < 0.05 * bound, name
            assert values.abs().max() > 0.95 * bound, name
    biases = [p for n, p in model.named_parameters() if p.dim() == 1]
    assert biases and all((p != 0).all() for p in biases)  # biases too, as OpenNMT-py
    for emb in _embeddings(model):
        assert emb.padding_idx is not None and (emb.weight[emb.padding_idx] == 0).all()


@pytest.mark.parametrize("init, embedding_std", [("lecun", 1.0), ("book", 0.01)])
def test_fan_in_inits_scale_each_matrix_by_its_fan_in(init, embedding_std):
    model = _init_model(init)
    embeddings = {id(m.weight) for m in _embeddings(model)}
    for name, p in model.named_parameters():
        if id(p) in embeddings:
            rows = p[1:] if p.shape[0] > 1 else p  # row 0 is padding
            assert abs(rows.std().item() / embedding_std - 1) < 0.05, name
        elif p.dim() >= 2:
            fan_in = getattr(p, "fan_in", p.shape[1])
            assert abs(p.std().item() * fan_in**0.5 - 1) < 0.1, name
        else:
            assert (p == 0).all(), name
    for emb in _embeddings(model):
        assert (emb.weight[emb.padding_idx] == 0).all()


def test_init_range_must_be_positive():
    with pytest.raises(ValueError, match="init_range"):
        ModelConfig.model_validate({"init": "uniform", "init_range": 0})
