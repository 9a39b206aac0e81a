"""`jumok ladder --quick` runs every rung and writes its table, json and pictures."""

from __future__ import annotations

import json

import pytest

from jumok.app.cli import main
from jumok.app.ladder import RUNGS, refresh_report, rung_config


@pytest.mark.slow
def test_ladder_quick_writes_one_entry_per_rung(tmp_path, capsys):
    out = tmp_path / "ladder"
    assert main(["ladder", "--task", "addition", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "ladder.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in summary["rungs"]] == [name for name, _ in RUNGS]
    for rung in summary["rungs"]:
        assert len(rung["exact_match_per_epoch"]) == 2 == len(rung["seconds_per_epoch"])
        assert 0.0 <= rung["test_exact_match"] <= 1.0
        diagnostics = rung["attention_diagnostics"]
        if rung["config"]["model"]["attention"] == "none":
            assert diagnostics is None
        else:
            assert diagnostics["count"] == 100 and 0 < diagnostics["coverage"] <= 1
    table = (out / "ladder.md").read_text(encoding="utf-8")
    assert table.count("\n| ") == len(RUNGS) + 1  # header + one row per rung
    for name in ("ladder.png", "attention.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert main(["ladder", "--quick", "--out", str(out)]) == 2  # never reuses a directory
    assert "not empty" in capsys.readouterr().err
    before = json.loads((out / "ladder.json").read_text(encoding="utf-8"))
    refreshed = refresh_report(out)
    assert [r["test_exact_match"] for r in refreshed["rungs"]] == [
        r["test_exact_match"] for r in before["rungs"]
    ]


def test_rungs_follow_the_books_argument():
    configs = [rung_config("addition", overrides, 25, False) for _, overrides in RUNGS]
    assert [c.model.attention for c in configs] == [
        "none",
        "none",
        "none",
        "dot",
        "general",
        "additive",
    ]
    assert [c.data.reverse_source for c in configs] == [False, True, True, True, True, True]
    assert [c.model.decoder.peeky for c in configs] == [False, False, True, False, False, False]
    assert all(c.model.encoder.hidden_size == 128 and c.train.epochs == 25 for c in configs)
    # the book's weights, decoder start and data layout (docs/ladder.md says why)
    for c in configs:
        assert (c.model.init, c.model.decoder.init) == ("book", "last_h")
        assert c.data.shared_vocab and c.data.fill_source_to == 7
    assert rung_config("date", {}, 10, False).data.fill_source_to == 29
    # --set reaches every rung, after the rung's own settings
    lecun = rung_config("date", dict(RUNGS)["plain"], 10, False, None, ["model.init=lecun"])
    assert lecun.model.init == "lecun" and lecun.model.attention == "none"


def test_ladder_reads_the_books_own_file(tmp_path):
    import random

    from jumok.app.ladder import run_ladder

    rng = random.Random(0)
    lines = []
    for _ in range(1300):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        lines.append(f"{f'{a}+{b}':<7}_{a + b:<4}\n")
    (tmp_path / "addition.txt").write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "ladder"
    summary = run_ladder(
        "addition", out, epochs=1, quick=True, log=lambda _: None, book_data=tmp_path
    )
    assert summary["data"].startswith("the book's addition.txt: 1300 lines")
    train = (out / "data" / "train.tsv").read_text(encoding="utf-8").splitlines()
    test = (out / "data" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert len(test) == 100 and not {r.split("\t")[0] for r in train} & {
        r.split("\t")[0] for r in test
    }
    assert "Data: the book's addition.txt" in (out / "ladder.md").read_text(encoding="utf-8")
