"""Faster paths of training and the command line that must not change a result: the dev
loss (output layer and loss in slices), BLEU and chrF only where they mean something,
padding, unknown counts, and the jumok program's quick exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, small_config

from jumok.data.splits import encode_pairs, iterate_batches, pad
from jumok.data.synthetic import generate
from jumok.data.vocab import UNK, UNK_ID, Vocab, tokenize_chars
from jumok.fast import sliced_loss as loss_module
from jumok.model.seq2seq import build_model
from jumok.training import train as train_module
from jumok.training import validation


def _dev(cfg):
    pairs = generate("date", 120, seed=5)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in pairs)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in pairs)
    data = encode_pairs(pairs, src_vocab, tgt_vocab, reverse_source=True)
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
    detok = lambda ids: "".join(tgt_vocab.decode(i for i in ids if i > 3))  # noqa: E731
    return model, data, pairs, detok


def test_the_dev_loss_is_the_plain_cross_entropy_in_any_slices(monkeypatch):
    cfg = small_config("train.eval_batch_size=50")
    model, data, pairs, detok = _dev(cfg)
    whole = train_module.evaluate(model, data, pairs, detok, cfg, torch.device("cpu"))
    plain_sum, tokens = 0.0, 0
    with torch.no_grad():
        for batch in iterate_batches(data, 50):
            logits_BTV, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
            plain_sum += float(train_module.loss_fn(logits_BTV, batch.tgt_out_BT, reduction="sum"))
            tokens += batch.n_target_tokens
    assert whole.loss == pytest.approx(plain_sum / tokens, rel=1e-5)
    monkeypatch.setattr(loss_module, "SLICE_LOGITS", 1)  # one row per slice
    monkeypatch.setattr(validation, "LOSS_POSITIONS", 1)  # one sentence per pass
    sliced = train_module.evaluate(model, data, pairs, detok, cfg, torch.device("cpu"))
    assert sliced.loss == pytest.approx(whole.loss, rel=1e-5)
    assert sliced.hyps == whole.hyps


def test_bleu_and_chrf_on_text_or_when_early_stopping_reads_them():
    generated = small_config()
    model, data, pairs, detok = _dev(generated)
    cpu = torch.device("cpu")
    scores = train_module.evaluate(model, data, pairs, detok, generated, cpu)
    assert scores.bleu is None and scores.chrf is None  # a toy task: exact match decides
    asked = small_config("train.early_stopping.metric=chrf")
    scores = train_module.evaluate(model, data, pairs, detok, asked, cpu)
    assert 0.0 <= scores.bleu <= 100.0 and 0.0 <= scores.chrf <= 100.0


def test_pad_and_unknown_counts():
    assert pad([[5, 6, 7], [8], []]).tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert pad([[5]], width=3).tolist() == [[5, 0, 0]] and pad([], width=2).shape == (0, 2)
    vocab = Vocab.build([["a", "b"]])
    encoded = vocab.encode(["a", "z", UNK, "y", "b"])
    assert encoded.ids.count(UNK_ID) == 3
    assert encoded.unknown == 2  # the unk token written out is known; z and y are not


def test_the_program_exits_with_its_status_and_output_intact(tmp_path):
    missing = tmp_path / "nothing.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "jumok", "train", str(missing), "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "nothing.yaml" in done.stderr
    config = str(ROOT / "examples/date.yaml")
    report = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, "-m", "jumok", "data", "check", config, "--json", str(report)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and report.stat().st_size > 0  # printed and written in full


def test_validation_after_a_fused_adam_step_sees_the_new_weights():
    # fused Adam updates parameters without bumping their version counters, so caches keyed
    # on them went stale: the second validation decoded with the first one's layer-0 weights
    cfg = small_config("model.decoder.input_feeding=true")
    model, data, pairs, detok = _dev(cfg)
    cpu = torch.device("cpu")
    train_module.evaluate(model, data, pairs, detok, cfg, cpu)  # builds the decoding caches
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    model.train()
    batch = next(iter(train_module.iterate_batches(data, 32)))
    logits, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
    train_module.loss_fn(logits, batch.tgt_out_BT).backward()
    optimizer.step()
    again = train_module.evaluate(model, data, pairs, detok, cfg, cpu)
    fresh = build_model(cfg.model, *_sizes(model))
    fresh.load_state_dict(model.state_dict())
    expected = train_module.evaluate(fresh, data, pairs, detok, cfg, cpu)
    assert again.loss == pytest.approx(expected.loss, rel=1e-6)
    assert again.hyps == expected.hyps
    model.train()  # and training holds no decoding cache between validations
    assert not {"_table", "_fused"} & set(model.decoder.rnn.__dict__)


def _sizes(model) -> tuple[int, int]:
    return model.encoder.embedding.num_embeddings, model.decoder.embedding.num_embeddings


def test_validation_decodes_without_token_tables_and_gets_the_same_output():
    # a validation builds no token-gate table (it would sit on top of training's memory); its
    # outputs are those of decoding with the table
    from jumok.decoding.greedy import greedy_stream

    cfg = small_config("model.decoder.input_feeding=true")
    model, data, pairs, detok = _dev(cfg)
    scores = train_module.evaluate(model, data, pairs, detok, cfg, torch.device("cpu"))
    assert "_table" not in model.decoder.rnn.__dict__
    batches = list(iterate_batches(data, 50, bucketing=True))
    max_length = int(data.tgt_len_N.max()) + 5
    with torch.no_grad():
        found = greedy_stream(model, [(b.src_BS, b.src_len_B) for b in batches], max_length, 50)
    assert "_table" in model.decoder.rnn.__dict__  # decoding outside a validation uses it
    hyps = [""] * len(pairs)
    for batch, hyps_B in zip(batches, found, strict=True):
        for i, hyp in zip(batch.index_B.tolist(), hyps_B, strict=True):
            hyps[i] = detok(hyp.token_ids)
    assert hyps == scores.hyps
