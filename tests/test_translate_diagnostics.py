"""Attention diagnostics in translations: jsonl records carry them, stderr gets the summary."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import small_config

from jumok.app.cli import main
from jumok.checkpoint import save_checkpoint
from jumok.data.synthetic import generate
from jumok.data.vocab import Vocab, tokenize_chars
from jumok.decoding.diagnostics import diagnose
from jumok.decoding.translator import Translation
from jumok.model.seq2seq import build_model

KEYS = {"entropy", "mean_entropy", "coverage", "monotonicity", "final_share", "collapsed"}


def untrained_run(path, *overrides: str):
    """A run directory holding a randomly initialised model: instant, and its attention is real."""
    cfg = small_config("model.encoder.hidden_size=16", "model.decoder.hidden_size=16", *overrides)
    pairs = generate("date", 200, seed=0)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in pairs)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in pairs)
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
    path.mkdir(parents=True)
    save_checkpoint(path / "best.safetensors", model, cfg, src_vocab, tgt_vocab)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("diag") / "run")  # reverse_source: true


@pytest.fixture
def inputs(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("september 27, 1994\n9/27/94\nJan 3, 2001\n", encoding="utf-8")
    return path


def test_jsonl_records_carry_diagnostics_in_range(run_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    argv = ["translate", str(run_dir), "--input", str(inputs), "--output", str(out)]
    assert main([*argv, "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3
    for r in records:
        d = r["diagnostics"]
        T, S = len(r["tokens"]), len(r["source_tokens"])
        assert set(d) == KEYS and r["source_reversed"] is True
        assert len(d["entropy"]) == T == len(r["attention"])
        assert all(0.0 <= e <= math.log(S) + 1e-4 for e in d["entropy"])
        assert 0.0 <= d["mean_entropy"] <= math.log(S) + 1e-4
        assert 0.0 < d["coverage"] <= 1.0
        assert 1 / T - 1e-4 <= d["monotonicity"] <= 1.0
        assert 0.0 <= d["final_share"] <= 1.0
        assert d["collapsed"] is (d["final_share"] > 0.5)
        # the model read the source reversed: the last token it read is column 0
        assert d == diagnose(r["attention"], collapse_positions=[0]).to_dict()
    err = capsys.readouterr().err
    assert err.startswith("attention over 3 sentences: entropy ")


def test_summary_goes_to_stderr_and_stdout_stays_jsonl(run_dir, inputs, capsys):
    assert main(["translate", str(run_dir), "--input", str(inputs), "--format", "jsonl"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["diagnostics"] for line in lines)
    assert "attention over" not in captured.out and "attention over 3 sentences" in captured.err
    # text output is unchanged: no summary
    assert main(["translate", str(run_dir), "--input", str(inputs)]) == 0
    assert capsys.readouterr().err == ""


def test_a_model_without_attention_has_no_diagnostics(tmp_path, inputs, capsys):
    run = untrained_run(tmp_path / "plain", "model.attention=none", "data.reverse_source=false")
    assert main(["translate", str(run), "--input", str(inputs), "--format", "jsonl"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["diagnostics"] for r in records] == [None] * 3
    assert [r["attention"] for r in records] == [None] * 3
    assert captured.err == ""


def translation(attention, source_reversed: bool) -> Translation:
    return Translation(
        source="abc",
        text="x",
        score=-1.0,
        tokens=["x", "</s>"],
        token_logprobs=[-0.5, -0.5],
        source_tokens=list("abc"),
        attention=attention,
        unknown=0,
        source_reversed=source_reversed,
    )


def test_the_collapse_position_follows_the_reading_order():
    on_first = [[0.8, 0.1, 0.1], [0.9, 0.05, 0.05]]  # original order: column 0 = 'a'
    assert translation(on_first, source_reversed=True).to_dict()["diagnostics"]["collapsed"]
    assert not translation(on_first, source_reversed=False).to_dict()["diagnostics"]["collapsed"]
    on_last = [row[::-1] for row in on_first]
    assert translation(on_last, source_reversed=False).diagnostics().collapsed
    assert not translation(on_last, source_reversed=True).diagnostics().collapsed
    assert translation(None, source_reversed=True).to_dict()["diagnostics"] is None
    # the field defaults to False: code that builds a Translation by hand keeps working
    plain = Translation("a", "x", -1.0, ["x"], [-1.0], ["a", "b"], [[0.2, 0.8]], 0)
    assert plain.source_reversed is False and plain.diagnostics().collapsed
