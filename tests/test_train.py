"""Training end to end: overfitting, a short date run, the run directory's guarantees."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from conftest import QUIET, ROOT, budget, digest, small_config, tiny_model_config

from jumok.config import load_config
from jumok.data.splits import encode_pairs, make_batch
from jumok.data.synthetic import generate
from jumok.data.vocab import Vocab, tokenize_chars
from jumok.decoding.translator import load
from jumok.errors import RunDirError
from jumok.model.seq2seq import build_model
from jumok.training.train import loss_fn, train


def test_overfits_a_small_batch():
    torch.manual_seed(0)
    pairs = generate("date", 12, seed=3)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in pairs)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in pairs)
    data = encode_pairs(pairs, src_vocab, tgt_vocab, reverse_source=True)
    batch = make_batch(data, torch.arange(len(pairs)))
    model = build_model(tiny_model_config(hidden=32, embedding=16), len(src_vocab), len(tgt_vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        logits, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
        loss = loss_fn(logits, batch.tgt_out_BT)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01


@pytest.mark.slow
@pytest.mark.timing
def test_short_date_run_reaches_99_percent_in_under_a_minute(tmp_path):
    # 9,000 training dates, the lecture's architecture at hidden 128, 3 epochs.
    cfg = load_config(
        ROOT / "examples/date.yaml",
        [
            "data.generate.size=10000",
            "data.generate.dev_size=500",
            "data.generate.test_size=500",
            "model.encoder.hidden_size=128",
            "model.decoder.hidden_size=128",
            "train.epochs=3",
            "train.batch_size=64",
            "train.lr=0.003",
        ],
    )
    start = time.perf_counter()
    result = train(cfg, tmp_path / "run", **QUIET)
    seconds = time.perf_counter() - start
    assert result.history[-1].dev_exact_match >= 0.99, [r.dev_exact_match for r in result.history]
    assert seconds < budget(60)
    translator = load(tmp_path / "run")
    outputs = translator.translate([s for s, _ in result.test_pairs])
    correct = sum(o.text == t for o, (_, t) in zip(outputs, result.test_pairs, strict=True))
    assert correct / len(outputs) >= 0.98


@pytest.mark.slow
def test_run_directory_contents_and_determinism(tmp_path):
    a = train(small_config(), tmp_path / "a", **QUIET)
    b = train(small_config(), tmp_path / "b", **QUIET)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    for name in (
        "config.yaml",
        "vocab.json",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
        "data/train.tsv",
        "data/dev.tsv",
        "data/test.tsv",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "dev_loss", "dev_exact_match", "train_tokens_per_second"} <= set(rows[0])
    assert load_config(tmp_path / "a/config.yaml") == small_config()


def test_a_run_directory_that_holds_a_run_is_refused_and_untouched(tmp_path):
    train(small_config("train.epochs=1"), tmp_path / "run", **QUIET)
    before = digest(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"already holds a run .*nothing was changed"):
        train(small_config("train.epochs=1"), tmp_path / "run", **QUIET)
    assert digest(tmp_path / "run") == before


@pytest.mark.timing
def test_max_seconds_stops_cleanly_and_keeps_a_checkpoint(tmp_path):
    cfg = small_config("train.epochs=50", "train.max_seconds=2")
    start = time.perf_counter()
    result = train(cfg, tmp_path / "run", **QUIET)
    assert time.perf_counter() - start < budget(20)
    assert result.stopped_by_budget and len(result.history) < 50
    assert load(tmp_path / "run", which="last").translate(["9/27/94"])[0].tokens


def test_kernel_cache_is_set_before_the_first_update(monkeypatch, tmp_path):
    import jumok.training.train as train_module

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
    seen = []
    real = train_module.accumulated_update

    def spy(*args, **kwargs):
        seen.append(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "accumulated_update", spy)
    cfg = small_config("train.kernel_cache=77", "train.max_steps=1")
    train(cfg, tmp_path / "run", **QUIET)
    assert seen == ["77"]


def test_kernel_cache_null_leaves_the_environment_alone(monkeypatch):
    from jumok.fast import runtime

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "40")
    monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    runtime.configure(None)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "40"  # the user's value is kept
    assert os.environ["LRU_CACHE_CAPACITY"] == "32"  # jumok's default where none was set
    runtime.configure(256)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"


def test_importing_jumok_writes_nothing_to_the_environment():
    import subprocess
    import sys

    code = (
        "import os; before = dict(os.environ); import jumok, jumok.app.cli, jumok.training.train, "
        "jumok.decoding.translator; print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    env = {k: v for k, v in os.environ.items() if "CACHE_CAPACITY" not in k}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
