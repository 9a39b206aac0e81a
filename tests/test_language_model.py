"""A language model run (model.type: lm) is measured by its dev perplexity, not by scores of
decoded text: it has no source, so its greedy output is the same sentence for every item."""

from __future__ import annotations

import csv
import json
import logging
import math

import pytest
from conftest import ROOT

from jumok.config import load_config
from jumok.errors import ConfigError
from jumok.training import validation
from jumok.training.train import train

WORDS = "the cat dog sat ran on a mat log and saw big red small".split()


def lm_config(tmp_path, *extra: str):
    """A tiny word-level language model of 240 generated sentences (a TSV file: real text,
    where BLEU and chrF used to be computed)."""
    lines = []
    for i in range(240):
        sentence = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 5, 7))
        lines.append(f"q{i}\t{sentence}")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "lm.yaml"
    config.write_text(
        "data: {train: pairs.tsv, dev_size: 40, tokenizer: {kind: word}}\n"
        "model:\n  type: lm\n  decoder: {embedding_size: 8, hidden_size: 16}\n"
        "train: {epochs: 2, batch_size: 32, threads: 1, examples: 2}\n",
        encoding="utf-8",
    )
    return load_config(config, list(extra))


def test_lm_run_reports_perplexity_not_scores_of_decoded_text(tmp_path, monkeypatch, caplog):
    def no_sacrebleu(*_):
        raise AssertionError("a language model's validation computed BLEU or chrF")

    monkeypatch.setattr(validation, "bleu", no_sacrebleu)
    monkeypatch.setattr(validation, "chrf", no_sacrebleu)
    lines: list[str] = []
    with caplog.at_level(logging.WARNING):
        train(lm_config(tmp_path), tmp_path / "run", log=lines.append, progress=False)
    assert not [r for r in caplog.records if r.name.startswith("sacrebleu")]
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    with open(tmp_path / "run/metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(records) == len(rows) == 2
    for record, row in zip(records, rows, strict=True):
        assert record["dev_perplexity"] == pytest.approx(math.exp(record["dev_loss"]), rel=1e-12)
        assert float(row["dev_perplexity"]) == record["dev_perplexity"]
        for key in ("dev_exact_match", "dev_token_accuracy", "dev_bleu", "dev_chrf"):
            assert record[key] is None and row[key] == "", key
    logged = [line for line in lines if line.startswith("epoch ")]
    assert len(logged) == 2
    assert all("dev perplexity" in line for line in logged), logged
    assert not any("exact match" in line or "BLEU" in line for line in lines), lines
    assert not any(line.startswith("    '") for line in lines)  # no decoded examples either
    assert (tmp_path / "run/learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_lm_early_stopping_defaults_to_loss_and_refuses_scores_of_text(tmp_path):
    assert lm_config(tmp_path).train.early_stopping.metric == "loss"
    assert load_config(ROOT / "examples/chatbot-ko/lm.yaml").train.early_stopping.metric == "loss"
    for metric in ("exact_match", "bleu", "chrf"):
        with pytest.raises(ConfigError) as err:
            lm_config(tmp_path, f"train.early_stopping.metric={metric}")
        assert str(err.value) == (
            f"{tmp_path / 'lm.yaml'}: train.early_stopping.metric: '{metric}' scores decoded "
            "outputs against references, which a language model (model.type: lm) does not "
            "have: use loss (its dev perplexity, exp(loss), ranks checkpoints the same way)"
        )
    # a sequence-to-sequence run keeps its default
    seq2seq = load_config(ROOT / "examples/date.yaml")
    assert seq2seq.train.early_stopping.metric == "exact_match"


def test_metric_files_keep_their_columns_and_send_no_none_to_tensorboard(tmp_path):
    from jumok.training.rundir import MetricFiles

    class Board:
        def __init__(self):
            self.points = []

        def add_scalar(self, key, value, step):
            self.points.append((key, value, step))

        def flush(self):
            pass

    (tmp_path / "metrics.csv").write_text("epoch,step,dev_loss\n1,10,2.5\n", encoding="utf-8")
    files = MetricFiles(tmp_path)
    files.board = Board()
    # a row of a resumed run written before dev_perplexity existed: the old columns stay
    files.append({"epoch": 2, "step": 20, "dev_loss": 2.0, "dev_bleu": None, "dev_perplexity": 7.4})
    assert (tmp_path / "metrics.csv").read_text() == "epoch,step,dev_loss\n1,10,2.5\n2,20,2.0\n"
    assert files.board.points == [("dev_loss", 2.0, 20), ("dev_perplexity", 7.4, 20)]
