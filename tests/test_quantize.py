"""int8 dynamic quantization for decoding (``decode.quantize: int8``, ``--quantize int8``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import QUIET, SRC_V, TGT_V, random_batch, small_config, tiny_model_config
from fastapi.testclient import TestClient
from torch import nn

import jumok
from jumok.app.cli import main
from jumok.app.serve import ServeConfig, create_app
from jumok.config import DecodeConfig
from jumok.data.vocab import EOS_ID
from jumok.errors import ConfigError
from jumok.fast.quantize import check_supported, float_modules, quantize_int8, quantized_modules
from jumok.model.seq2seq import build_model
from jumok.training.train import train

DATES = [
    "september 27, 1994",
    "9/27/94",
    "Jan 1, 2001",
    "TUESDAY, MAY 3, 1983",
    "12 march 1975",
    "7/4/09",
    "saturday, august 19, 2017",
    "Oct 30, 1961",
    "1 feb 2020",
    "thursday, december 25, 1986",
    "5/16/78",
    "NOV 11, 1918",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantize") / "run"
    # trained until its outputs are dates (not all of them right yet): about 4 s
    train(small_config("train.epochs=4", "train.lr=0.01"), path, **QUIET)
    return path


def _every_variant_model():
    """Bidirectional GRU encoder, bridge, general attention, input feeding, tied output."""
    cfg = tiny_model_config(hidden=8, embedding=8)
    cfg = cfg.model_validate(
        {
            **cfg.model_dump(),
            "attention": "general",
            "encoder": {**cfg.encoder.model_dump(), "rnn": "gru", "bidirectional": True},
            "decoder": {
                **cfg.decoder.model_dump(),
                "init": "bridge",
                "input_feeding": True,
                "tie_embeddings": True,
            },
        }
    )
    torch.manual_seed(3)
    return build_model(cfg, SRC_V, TGT_V).eval()


# ------------------------------------------------------------------------------- the copy
def test_every_lstm_gru_and_linear_becomes_int8_and_the_original_stays_float():
    model = _every_variant_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    floats = float_modules(model)
    q = quantize_int8(model)
    # and the input-feeding LSTM's layer 0 as one product (InputFeedingLSTM.join_layer0)
    assert set(quantized_modules(q)) == set(floats) | {"decoder.rnn.joined0"}
    assert set(floats) >= {
        "encoder.forward_rnns.0",
        "encoder.backward_rnns.0",
        "decoder.rnn.inputs.0",  # input feeding: the LSTM's products are Linear layers
        "decoder.rnn.feed",
        "decoder.rnn.recurrent.0",
        "decoder.bridge",
        "decoder.attention.key_proj",
        "decoder.attentional",
        "decoder.output",
    }
    assert float_modules(q) == []  # nothing left behind
    assert quantized_modules(q)["decoder.rnn.recurrent.0"] == "DynamicQuantizedLinear"
    assert quantized_modules(q)["encoder.forward_rnns.0"] == "DynamicQuantizedGRU"
    assert q.decoder.output.weight().dtype == torch.qint8
    assert q.decoder.output.weight().int_repr().dtype == torch.int8
    rnn_weights = q.encoder.forward_rnns[0].get_weight()
    assert rnn_weights and all(w.dtype == torch.qint8 for w in rnn_weights.values())
    assert q.decoder.rnn.feed.weight().dtype == torch.qint8
    # embeddings stay float32 (a tied output layer has its own int8 copy)
    assert q.decoder.embedding.weight.dtype == torch.float32
    # the model quantized from is untouched
    assert type(model.decoder.rnn.feed) is nn.Linear and type(model.decoder.output) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer0_joined_is_the_three_products():
    """The int8 copy's single layer-0 product, in float32: the same gates as the three
    separate products, and the one the decoding steps use."""
    import copy

    model = _every_variant_model()
    joined = copy.deepcopy(model)
    joined.decoder.rnn.join_layer0()
    with torch.no_grad():  # the separate products are no longer read
        joined.decoder.rnn.feed.weight.zero_()
        joined.decoder.rnn.inputs[0].weight.zero_()
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5, seed=4)
    with torch.no_grad():
        want = model(src, src_len, tgt_in)[0]
        got = joined(src, src_len, tgt_in)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # with gradients (training) the separate products are used, the joined one is not
    assert not torch.allclose(joined(src, src_len, tgt_in)[0], want, atol=1e-3)


def test_int8_logits_stay_close_to_float32():
    model = _every_variant_model()
    q = quantize_int8(model)
    src, src_len, tgt_in = random_batch(B=4, S=7, T=5, seed=4)
    with torch.no_grad():
        ref = model(src, src_len, tgt_in)[0].log_softmax(-1)
        got = q(src, src_len, tgt_in)[0].log_softmax(-1)
    assert got.shape == ref.shape and got.dtype == torch.float32
    difference = (got - ref).abs().max().item()
    assert 0 < difference < 0.08, difference  # quantized (not identical), but close


def test_int8_needs_the_cpu_and_does_not_combine_with_bf16():
    with pytest.raises(ConfigError, match="CPU only"):
        check_supported(torch.device("cuda"))
    check_supported(torch.device("cpu"))
    with pytest.raises(ValueError, match="cannot be combined with decode.precision: bf16"):
        DecodeConfig(quantize="int8", precision="bf16")
    with pytest.raises(ValueError, match="quantize"):
        DecodeConfig(quantize="int4")


# ------------------------------------------------------------------------------- end to end
def test_int8_translations_agree_with_float32(run_dir):
    translator = jumok.load(run_dir)
    for beam in (1, 3):
        fp32 = translator.translate(DATES, beam=beam)
        int8 = translator.translate(DATES, beam=beam, quantize="int8")
        assert any(a.score != b.score for a, b in zip(fp32, int8, strict=True))  # int8 ran
        agree = sum(a.text == b.text for a, b in zip(fp32, int8, strict=True))
        assert agree >= len(DATES) - 2, [(a.text, b.text) for a, b in zip(fp32, int8, strict=True)]
        for a, b in zip(fp32, int8, strict=True):
            if a.tokens == b.tokens:
                assert b.score == pytest.approx(a.score, abs=0.02 * len(a.tokens))
                for x, y in zip(a.attention, b.attention, strict=True):
                    assert max(abs(u - v) for u, v in zip(x, y, strict=True)) < 0.1
    assert type(translator.model.decoder.rnn) is nn.LSTM  # decoding left the model float32


def test_int8_copy_is_kept_and_follows_weights_changed_in_place_after_refresh(run_dir):
    translator = jumok.load(run_dir)
    first = translator._decoding_model("fp32", "int8")
    assert quantized_modules(first)["decoder.output"] == "DynamicQuantizedLinear"
    assert translator._decoding_model("fp32", "int8") is first
    plain = translator._decoding_model("fp32", "none")  # the model, or a packed view of it
    assert all(
        a is b for a, b in zip(plain.parameters(), translator.model.parameters(), strict=True)
    )
    assert translator.translate(["9/27/94"], quantize="int8")[0].tokens != ["</s>"]
    with torch.no_grad():
        translator.model.decoder.output.bias[EOS_ID] += 1e4  # eos first, whatever the input
    assert translator._decoding_model("fp32", "int8") is first  # kept until refresh()
    translator.refresh()
    [result] = translator.translate(["9/27/94"], quantize="int8")
    assert result.tokens == ["</s>"]
    assert translator._decoding_model("fp32", "int8") is not first


def test_int8_decodes_an_ensemble(run_dir):
    ensemble = jumok.load([run_dir, run_dir])
    single = jumok.load(run_dir)
    got = ensemble.translate(DATES[:4], quantize="int8")
    want = single.translate(DATES[:4], quantize="int8")
    assert [t.text for t in got] == [t.text for t in want]


def test_quantize_flag_end_to_end_and_its_error(run_dir, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(DATES[:4]) + "\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(inputs), "--quantize", "int8"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = jumok.load(run_dir).translate(DATES[:4], quantize="int8")
    assert out == [t.text for t in expected]
    code = main(
        [
            "translate",
            str(run_dir),
            "--input",
            str(inputs),
            "--quantize",
            "int8",
            "--precision",
            "bf16",
        ]
    )
    assert code == 2
    assert "cannot be combined with decode.precision: bf16" in capsys.readouterr().err


def test_a_served_request_can_ask_for_int8(run_dir):
    translator = jumok.load(run_dir)
    with TestClient(create_app({"dates": translator}, ServeConfig())) as client:
        response = client.post("/v1/translate", json={"texts": DATES[:3], "quantize": "int8"})
        assert response.status_code == 200, response.text
        expected = translator.translate(DATES[:3], quantize="int8")
        assert [r["text"] for r in response.json()["results"]] == [t.text for t in expected]
        bad = client.post(
            "/v1/translate", json={"texts": DATES[:1], "quantize": "int8", "precision": "bf16"}
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["field"] == "quantize" and "bf16" in bad.json()["detail"]


def test_eval_flag_records_int8_in_the_report(run_dir, tmp_path, capsys):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(DATES[:4]) + "\n", encoding="utf-8")
    expected = jumok.load(run_dir).translate(DATES[:4], quantize="int8")
    ref.write_text("\n".join(t.text for t in expected) + "\n", encoding="utf-8")
    out = tmp_path / "eval"
    args = ["eval", str(run_dir), "--src", str(src), "--ref", str(ref), "--out", str(out)]
    assert main([*args, "--quantize", "int8"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["decoding"]["quantize"] == "int8"
    assert report["scores"]["exact_match"] == 100.0  # the int8 outputs, scored against themselves
