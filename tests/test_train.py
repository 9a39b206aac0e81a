"""Training end to end: overfitting, a short date run, the run directory's guarantees."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest
import torch
from conftest import (
    MATRIX_TINY,
    QUIET,
    ROOT,
    budget,
    digest,
    small_config,
    tiny_config,
    tiny_model_config,
)

from jumok.app.cli import main
from jumok.config import load_config
from jumok.data.splits import encode_pairs, load_splits, make_batch, read_pairs, write_pairs
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


# ------------------------------------------------------------------- the splits a run used
def test_a_file_data_run_saves_the_splits_it_used(tmp_path):
    pairs = generate("date", 300, seed=4)
    write_pairs(tmp_path / "pairs.tsv", pairs[:260] + pairs[:8])  # 8 rows repeated
    write_pairs(tmp_path / "test.tsv", pairs[260:])
    cfg = tiny_config(
        "data.generate=null",
        f"data.train={tmp_path / 'pairs.tsv'}",
        f"data.test={tmp_path / 'test.tsv'}",
        "data.dev_size=40",
        "train.epochs=1",
    )
    run = tmp_path / "run"
    train(cfg, run, **QUIET)
    used = load_splits(cfg.data)
    # The automatic dev split is the one the run held out and validated on.
    assert read_pairs(run / "data/dev.tsv") == used.dev and len(used.dev) == 40
    assert (run / "data/dev.src").read_text().splitlines() == [s for s, _ in used.dev]
    assert (run / "data/dev.tgt").read_text().splitlines() == [t for _, t in used.dev]
    assert read_pairs(run / "data/test.tsv") == pairs[260:]
    assert not (run / "data/train.tsv").exists()  # a user's train file is not copied
    report = json.loads((run / "data/splits.json").read_text())
    assert report["dev"]["from"].startswith("held out of data.train: 40 distinct pairs")
    assert report["test"]["from"] == str(tmp_path / "test.tsv")
    assert (
        report["train"]["pairs"] == len(used.train) and report["train"]["dropped_over_length"] == 0
    )
    assert "held out 40 distinct train pairs as dev (data.dev_size)" in report["notes"]


def test_a_text_with_a_line_break_stays_one_line_in_the_saved_splits(tmp_path):
    from jumok.data.splits import Splits
    from jumok.training.rundir import write_splits

    dev = [("two\nlines", "a\ttab"), ("plain", "text")]
    write_splits(tmp_path, tiny_config().data, Splits([], dev, []), 0)
    assert (tmp_path / "dev.src").read_text() == "two lines\nplain\n"
    assert read_pairs(tmp_path / "dev.tsv") == [("two lines", "a tab"), ("plain", "text")]
    assert not (tmp_path / "test.tsv").exists()  # no test split, no file


# ------------------------------------------------------------- a failed start leaves nothing
def test_a_missing_data_file_names_its_field_and_leaves_no_run_folder(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/my.yaml").write_text(MATRIX_TINY, encoding="utf-8")  # train: pairs.tsv
    monkeypatch.chdir(tmp_path)
    for where in ([], ["--run-dir", "deep/er/run"]):  # jumok's runs/my-TIMESTAMP, or given
        assert main(["train", "conf/my.yaml", *where, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"data.train: {tmp_path / 'conf/pairs.tsv'}: file not found" in err[0]
        assert "relative path in a config is read from the config file's folder" in err[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no runs/, no deep/
    # A folder the user made stays (empty); a data error with the file there, the same way.
    (tmp_path / "mine").mkdir()
    (tmp_path / "conf/pairs.tsv").write_text("only\tone\n", encoding="utf-8")
    assert main(["train", "conf/my.yaml", "--run-dir", "mine", "--no-progress"]) == 2
    assert "pairs.tsv" in capsys.readouterr().err
    assert list((tmp_path / "mine").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "mine"]


def test_a_failure_after_the_folder_holds_files_takes_them_back(tmp_path, monkeypatch):
    import jumok.training.setup as setup_module

    def fails(*args, **kwargs):
        assert (tmp_path / "new/run/config.yaml").is_file()  # the run's first files are written
        raise RunDirError("train.device: 'cuda' was asked for but no CUDA device is available")

    monkeypatch.setattr(setup_module, "count_updates", fails)
    with pytest.raises(RunDirError, match="no CUDA device"):
        train(small_config(), tmp_path / "new" / "run", **QUIET)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- progress outside a terminal
def test_outside_a_terminal_progress_is_plain_lines_without_carriage_returns(
    tmp_path, monkeypatch, capsys
):
    import jumok.training.train as train_module

    monkeypatch.setattr(train_module, "PROGRESS_EVERY_SECONDS", 0.0)  # a line every update
    for progress in (True, False):  # --no-progress prints the lines too
        train(tiny_config("train.epochs=1"), tmp_path / f"run-{progress}", progress=progress)
        out, err = capsys.readouterr()
        assert "\r" not in out + err
        lines = [line for line in out.splitlines() if line.startswith("epoch 1/1  update ")]
        assert len(lines) == 19, out
        assert re.fullmatch(
            r"epoch 1/1  update 1/19 \(step 1\)  loss \d\.\d{4}  tok/s [\d,]+  lr 1\.00e-03  "
            r"elapsed \d+:\d\d  left \d+:\d\d",
            lines[0],
        ), lines[0]
    # At a terminal: the bar, updated in place, and no plain lines.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    train(tiny_config("train.epochs=1"), tmp_path / "tty", progress=True)
    out, err = capsys.readouterr()
    assert "\r" in err and "epoch 1/1  update " not in out


def test_the_time_left_is_the_whole_run_s_whichever_budget_ends_first(monkeypatch):
    from types import SimpleNamespace

    from jumok.training.train import ProgressShown

    def eta(**train_cfg) -> str:
        t = SimpleNamespace(**{"epochs": 2, "max_steps": None, "max_seconds": None, **train_cfg})
        run = SimpleNamespace(
            cfg=SimpleNamespace(train=t),
            progress=SimpleNamespace(step=0),
            updates_per_epoch=100,
            start=990.0,  # the run began 10 s before this process's first update
        )
        monkeypatch.setattr(time, "perf_counter", lambda: 1000.0)
        shown = ProgressShown(run, print, progress=False)
        run.progress.step = 20  # 20 updates in 20 s: 1 s each
        return shown.eta(1020.0)

    assert eta() == "3:00"  # 180 updates left of 2 epochs x 100
    assert eta(epochs=100) == "2:46:20"  # 9,980 updates
    assert eta(max_steps=50) == "0:30"  # max_steps ends first
    assert eta(max_seconds=60.0) == "0:30"  # 60 s budget, 30 s spent (preparation included)
