"""Calibrated abstain: the threshold and ECE on hand-computed tables, ``jumok calibrate`` on a
tiny date run, ``--abstain-below auto`` and the server's ``--calibrated-abstain``."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import digest
from fastapi.testclient import TestClient

import jumok
from jumok.app.calibrate import (
    calibrate,
    calibrated_threshold,
    expected_calibration_error,
    reliability_bins,
)
from jumok.app.cli import main
from jumok.data.synthetic import generate
from jumok.errors import RunDirError

# Eight lines, most confident first, worked out by hand (kept = confidence >= t):
#   t     0.95  0.90  0.85  0.70  0.60  0.55  0.30  0.15
#   good   T     T     F     T     T     F     F     F
#   prec  1/1   2/2   2/3   3/4   4/5   4/6   4/7   4/8
# For P = 0.75 the smallest t with precision >= 0.75 is 0.60 (4/5 = 0.8, coverage 5/8), though
# 0.85 in between fails: precision is not monotonic and every candidate is checked.
# ECE, 10 bins: bin 9 holds 0.95 and 0.90 (mean 0.925, accuracy 1: gap 0.075, two lines);
# 0.85 (gap 0.85), 0.70 (0.30), 0.60 (0.40), 0.55 (0.55), 0.30 (0.30), 0.15 (0.15) one each:
# (2 x 0.075 + 0.85 + 0.30 + 0.40 + 0.55 + 0.30 + 0.15) / 8 = 2.70 / 8 = 0.3375.
CONF = [0.95, 0.90, 0.85, 0.70, 0.60, 0.55, 0.30, 0.15]
GOOD = [True, True, False, True, True, False, False, False]


def test_threshold_and_ece_on_a_hand_computed_table():
    found = calibrate(CONF, GOOD, 0.75)
    assert found.threshold == 0.60
    assert found.precision == pytest.approx(0.8)
    assert found.coverage == pytest.approx(5 / 8)
    assert found.ece == pytest.approx(0.3375)
    assert [b.count for b in found.bins] == [0, 1, 0, 1, 0, 1, 1, 1, 1, 2]
    assert found.bins[9].confidence == pytest.approx(0.925)
    assert calibrate(CONF, GOOD, 1.0).threshold == 0.90  # the two most confident are good
    assert calibrate(CONF, GOOD, 0.5).threshold == 0.15  # 4/8 = 0.5: every line is kept


def test_ties_are_kept_together_and_an_unreachable_target_has_no_threshold():
    # t = 0.9 keeps both lines at 0.9 (precision 1/2); t = 0.5 keeps all three (2/3)
    found = calibrate([0.9, 0.9, 0.5], [True, False, True], 0.6)
    assert found.threshold == 0.5 and found.coverage == 1.0
    found = calibrate([0.9, 0.9, 0.5], [False, False, True], 0.9)
    assert found.threshold is None and found.coverage == 0.0


def test_bins_put_a_confidence_of_one_in_the_last_bin_and_ece_of_a_perfect_table_is_zero():
    bins = reliability_bins([1.0, 0.0], [True, False])
    assert bins[9].count == 1 and bins[0].count == 1
    assert expected_calibration_error(bins) == 0.0


@pytest.fixture
def calibrated(tmp_path, matrix_run):
    """A copy of the session's date run, and a 60-line date file with references."""
    run = tmp_path / "run"
    shutil.copytree(matrix_run, run)
    pairs = generate("date", 60, seed=11)
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return run, tmp_path / "src.txt", tmp_path / "ref.txt"


def test_calibrate_writes_calibration_json_and_the_diagram_and_auto_reads_it(
    calibrated, tmp_path, capsys
):
    run, src, ref = calibrated
    from jumok.app.calibrate import mark_good

    # the session's run is barely trained: a low chrF bar, and as target the precision of the
    # more confident half, so that the threshold falls inside the data
    results = jumok.load(run).translate(src.read_text().splitlines())
    good = mark_good([r.text for r in results], ref.read_text().splitlines(), "chrf", 9)
    top = sorted(range(60), key=lambda i: -results[i].confidence)[:30]
    target = int(10_000 * sum(good[i] for i in top) / 30) / 10_000
    expected = calibrate([r.confidence for r in results], good, target)
    before = digest(run)
    argv = ["calibrate", str(run), "--src", str(src), "--ref", str(ref)]
    code = main([*argv, "--target-precision", str(target), "--good", "chrf", "--min-chrf", "9"])
    assert code == 0, capsys.readouterr().err
    assert "expected calibration error" in capsys.readouterr().out
    record = json.loads((run / "calibration.json").read_text())
    assert (run / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = digest(run)
    assert {k: v for k, v in after.items() if "calibration" not in k} == before  # nothing else
    assert record["threshold"] == pytest.approx(expected.threshold)
    assert record["coverage"] == pytest.approx(expected.coverage)
    assert record["ece"] == pytest.approx(expected.ece)
    assert record["lines"] == 60 and record["good_by"] == "chrf >= 9.0"
    # --abstain-below auto: abstains exactly below that threshold
    out = tmp_path / "out.jsonl"
    code = main(["translate", str(run), "--input", str(src), "--output", str(out),
                 "--format", "jsonl", "--abstain-below", "auto"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["abstained"] for r in rows] == [r["confidence"] < record["threshold"] for r in rows]
    assert sum(not r["abstained"] for r in rows) == round(record["coverage"] * 60)


def test_auto_without_calibration_is_one_error_naming_the_file_and_the_command(calibrated, capsys):
    run, src, _ = calibrated
    code = main(["translate", str(run), "--input", str(src), "--abstain-below", "auto"])
    err = capsys.readouterr().err
    assert code == 2
    assert "calibration.json does not exist" in err and "jumok calibrate" in err
    with pytest.raises(RunDirError, match="calibration.json"):
        calibrated_threshold(run)


def test_a_bad_abstain_value_is_refused(calibrated, capsys):
    run, src, _ = calibrated
    with pytest.raises(SystemExit):
        main(["translate", str(run), "--input", str(src), "--abstain-below", "often"])
    assert "expected a confidence (e.g. 0.6) or auto" in capsys.readouterr().err


def test_the_server_abstains_below_the_calibrated_threshold(calibrated):
    from jumok.app.serve import ServeConfig, create_app, load_models

    run, src, _ = calibrated
    (run / "calibration.json").write_text(json.dumps({"threshold": 0.999}))
    models = load_models({"dates": run})
    client = TestClient(create_app(models, ServeConfig(calibrated_abstain=True)))
    with client:
        info = client.get("/v1/models").json()["models"][0]
        assert info["decode"]["abstain_below"] == 0.999
        body = client.post("/v1/translate", json={"texts": ["Sep 27, 1994"]}).json()
        assert body["results"][0]["abstained"] is True  # a tiny model is never 99.9 % sure
        body = client.post(
            "/v1/translate", json={"texts": ["Sep 27, 1994"], "abstain_below": 0.0}
        ).json()
        assert body["results"][0]["abstained"] is False  # the request's own value wins
    (run / "calibration.json").unlink()
    with pytest.raises(RunDirError, match="calibration.json does not exist"):
        create_app(load_models({"dates": run}), ServeConfig(calibrated_abstain=True))
