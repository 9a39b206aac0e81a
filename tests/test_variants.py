"""Every model option works both ways: a grid over attention x encoder x Peeky x input feeding.

For each variant: forward and backward run for batch sizes 1 and 4, every parameter gets a finite,
non-zero gradient, and decoding one step at a time gives the teacher-forced numbers.
"""

from __future__ import annotations

import pytest
import torch
from conftest import GRID, SRC_V, TGT_V, random_batch, small_config, variant, variant_id

from jumok.config import ModelConfig
from jumok.decoding.greedy import greedy
from jumok.model.attention import DotAttention, GeneralAttention, ScaledDotAttention
from jumok.model.seq2seq import build_model

# every test here runs with jumok.fast on and off (conftest.fast_layer)
pytestmark = pytest.mark.usefixtures("fast_layer")


def _check_gradients(model, src, src_len, tgt_in, batch):
    logits, weights = model(src, src_len, tgt_in)
    assert logits.shape == (batch, tgt_in.shape[1], TGT_V)
    assert torch.isfinite(logits).all()
    logits.log_softmax(-1)[..., 4:].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    return weights


@pytest.mark.parametrize("case", GRID, ids=variant_id)
@pytest.mark.parametrize("batch", [1, 4])
def test_forward_backward_and_finite_nonzero_gradients(case, batch):
    attention, (bi, layers, rnn), peeky, feeding = case
    torch.manual_seed(0)
    model = build_model(variant(attention, peeky, feeding, bi, layers, rnn), SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=batch, S=7, T=5)
    weights = _check_gradients(model, src, src_len, tgt_in, batch)
    assert (weights is None) == (attention == "none")
    if weights is not None:
        torch.testing.assert_close(weights.sum(-1), torch.ones(batch, 5))


@pytest.mark.parametrize("case", GRID, ids=variant_id)
def test_step_by_step_equals_teacher_forced(case):
    attention, (bi, layers, rnn), peeky, feeding = case
    torch.manual_seed(1)
    model = build_model(variant(attention, peeky, feeding, bi, layers, rnn), SRC_V, TGT_V).eval()
    src, src_len, tgt_in = random_batch(B=3, S=6, T=5, seed=4)
    with torch.no_grad():
        logits_all, weights_all = model(src, src_len, tgt_in)
        enc = model.encode(src, src_len)
        state = enc.state
        for t in range(5):
            logits_t, state, weights_t = model.decode_step(tgt_in[:, t], state, enc)
            torch.testing.assert_close(logits_t, logits_all[:, t], rtol=1e-5, atol=1e-6)
            if weights_all is not None:
                torch.testing.assert_close(weights_t, weights_all[:, t], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", ["last", "bridge", "zero"])
@pytest.mark.parametrize("decoder_rnn", ["lstm", "gru"])
@pytest.mark.parametrize("encoder_rnn", ["lstm", "gru"])
def test_initial_states_and_mixed_cells(init, decoder_rnn, encoder_rnn):
    torch.manual_seed(2)
    cfg = variant("general", rnn=encoder_rnn, init=init)
    cfg = cfg.model_copy(update={"decoder": cfg.decoder.model_copy(update={"rnn": decoder_rnn})})
    model = build_model(ModelConfig.model_validate(cfg.model_dump()), SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=3, S=6, T=4)
    _check_gradients(model, src, src_len, tgt_in, 3)
    state = model.encode(src, src_len).state.rnn
    h = state[0] if decoder_rnn == "lstm" else state
    if init == "zero":
        assert (h == 0).all()
    else:
        assert (h != 0).any()


def test_bridge_maps_any_sizes_and_layer_counts():
    torch.manual_seed(3)
    cfg = ModelConfig.model_validate(
        {
            "encoder": {"hidden_size": 8, "num_layers": 2, "bidirectional": True},
            "decoder": {"hidden_size": 12, "num_layers": 3, "init": "bridge"},
            "attention": "additive",
        }
    )
    model = build_model(cfg, SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=2, S=5, T=3)
    h, c = model.encode(src, src_len).state.rnn
    assert h.shape == c.shape == (3, 2, 12)
    _check_gradients(model, src, src_len, tgt_in, 2)


def test_tied_embeddings_share_one_matrix():
    cfg = variant("dot", tie_embeddings=True, embedding_size=8)
    model = build_model(cfg, SRC_V, TGT_V)
    assert model.decoder.output.weight is model.decoder.embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert "decoder.output.weight" not in names  # counted once, as the embedding
    src, src_len, tgt_in = random_batch(B=2, S=5, T=3)
    _check_gradients(model, src, src_len, tgt_in, 2)


def test_dropout_acts_in_training_only():
    torch.manual_seed(4)
    cfg = ModelConfig.model_validate(
        {
            **variant("dot", layers=2, input_feeding=True).model_dump(),
            "dropout": {"embeddings": 0.3, "layers": 0.3, "attentional": 0.3},
        }
    )
    model = build_model(cfg, SRC_V, TGT_V)
    src, src_len, tgt_in = random_batch(B=3, S=6, T=4)
    first, _ = model(src, src_len, tgt_in)
    second, _ = model(src, src_len, tgt_in)
    assert not torch.allclose(first, second)  # a different mask each call
    model.eval()
    first, _ = model(src, src_len, tgt_in)
    second, _ = model(src, src_len, tgt_in)
    torch.testing.assert_close(first, second)


def test_the_lecture_model_draws_no_random_numbers():
    model = build_model(variant("dot"), SRC_V, TGT_V)  # training mode, dropout 0
    src, src_len, tgt_in = random_batch(B=3, S=6, T=4)
    torch.manual_seed(5)
    model(src, src_len, tgt_in)
    after_model = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after_model, torch.rand(1))


def test_bidirectional_encoder_reads_each_sentence_within_its_length():
    torch.manual_seed(6)
    model = build_model(variant("dot", bidirectional=True), SRC_V, TGT_V).eval()
    src, src_len, _ = random_batch(B=3, S=6)
    src_len[1] = 2
    with torch.no_grad():
        hs, (h, _) = model.encoder(src, src_len)
        hs_alone, (h_alone, _) = model.encoder(src[1:2, :2], src_len[1:2])
    torch.testing.assert_close(hs[1, :2], hs_alone[0])
    torch.testing.assert_close(h[:, 1], h_alone[:, 0])
    assert (hs[1, 2:] == 0).all()
    # The backward half at position 0 has read the whole sentence: it is the backward final state.
    torch.testing.assert_close(hs[1, 0, 8:], h[-1, 1, 8:])


def test_general_with_identity_equals_dot_and_scaled_dot_divides_by_sqrt_h():
    queries = torch.randn(2, 3, 5)
    hs = torch.randn(2, 4, 5)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    general = GeneralAttention(5)
    with torch.no_grad():
        general.key_proj.weight.copy_(torch.eye(5))
    for a, b in zip(general(queries, hs, mask), DotAttention()(queries, hs, mask), strict=True):
        torch.testing.assert_close(a, b)
    _, scaled = ScaledDotAttention()(queries, hs, mask)
    _, dot_of_scaled = DotAttention()(queries / 5**0.5, hs, mask)
    torch.testing.assert_close(scaled, dot_of_scaled)


@pytest.mark.parametrize("attention", ["general", "additive"])
def test_parametric_attention_rows_sum_to_one_with_zero_padding(attention):
    torch.manual_seed(2)
    model = build_model(variant(attention), SRC_V, TGT_V)
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


@pytest.mark.parametrize("feeding", [False, True])
def test_greedy_with_every_option_on(feeding):
    torch.manual_seed(7)
    cfg = ModelConfig.model_validate(
        {
            "encoder": {"hidden_size": 8, "num_layers": 2, "bidirectional": True, "rnn": "gru"},
            "decoder": {
                "embedding_size": 10,
                "hidden_size": 10,
                "num_layers": 2,
                "init": "bridge",
                "peeky": True,
                "input_feeding": feeding,
                "tie_embeddings": True,
            },
            "attention": "additive",
            "dropout": {"embeddings": 0.1, "layers": 0.1, "attentional": 0.1},
        }
    )
    model = build_model(cfg, SRC_V, TGT_V).eval()
    src, src_len, _ = random_batch(B=3, S=6)
    hyps = greedy(model, src, src_len, max_length=5)
    for h, n in zip(hyps, src_len.tolist(), strict=True):
        assert h.attention_TS.shape == (len(h.token_ids), n)


OPTION_SETS = {
    "bi-gru-bridge-feed-tied-dropout": [
        "model.encoder.rnn=gru",
        "model.encoder.bidirectional=true",
        "model.encoder.num_layers=2",
        "model.decoder.num_layers=2",
        "model.decoder.init=bridge",
        "model.decoder.input_feeding=true",
        "model.decoder.tie_embeddings=true",
        "model.decoder.embedding_size=32",
        "model.attention=additive",
        "model.dropout.embeddings=0.1",
        "model.dropout.layers=0.1",
        "model.dropout.attentional=0.1",
    ],
    "plain-peeky-zero-init": [
        "model.attention=none",
        "model.decoder.peeky=true",
        "model.decoder.init=zero",
    ],
}


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_options_work_in_train_translate_and_the_python_api(name, tmp_path, capsys):
    import jumok
    from jumok.app.cli import main
    from jumok.training.train import train

    cfg = small_config(*OPTION_SETS[name], "train.epochs=1")
    train(cfg, tmp_path / "run", log=lambda _: None, progress=False)
    translator = jumok.load(tmp_path / "run")
    [result] = translator.translate(["september 27, 1994"])
    assert result.text and (result.attention is None) == (name == "plain-peeky-zero-init")
    source = tmp_path / "in.txt"
    source.write_text("9/27/94\nSep 27, 1994\n", encoding="utf-8")
    assert main(["translate", str(tmp_path / "run"), "--input", str(source)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
