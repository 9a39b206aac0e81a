"""The peers' benchmarks (benchmarks/peers/): reading each system's own time report, the
decoding table of medians and the training table of ratios per round, without the peers
installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import budget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))
decode = pytest.importorskip("decode")
run = pytest.importorskip("run")


def test_time_patterns_read_each_report():
    onmt = "[2026-11-26 03:00:44,444 INFO] Total translation time (s): 4.2\n"
    jumok = "translation time: 1.54 s for 1,000 inputs (650.4 inputs/s, 9,897 output tokens/s)"
    assert decode.ONMT_TIME.findall(onmt) == ["4.2"]
    assert decode.JUMOK_TIME.findall(jumok) == ["1.54"]
    assert decode.JUMOK_TIME.findall(onmt) == []


def test_table_gives_medians_and_ratios(capsys):
    def record(system, search, seconds, round_):
        return {
            "system": system,
            "search": search,
            "round": round_,
            "generation_seconds": seconds,
            "wall_seconds": seconds + 2,
            "peak_rss_mib": 500.0,
            "bleu": 30.0,
        }

    records = [
        record("OpenNMT-py", "greedy", 4.0, 1),
        record("jumok bf16", "greedy", 1.0, 1),
        record("OpenNMT-py", "greedy", 3.0, 2),
        record("jumok bf16", "greedy", 9.0, 2),
        record("OpenNMT-py", "greedy", 5.0, 3),
        record("jumok bf16", "greedy", 1.5, 3),
        {**record("jumok bf16", "beam 5", 0.0, 1), "error": "exit status 1"},
    ]
    decode.print_table(records, 3, "OpenNMT-py")
    lines = capsys.readouterr().out.splitlines()
    assert "| greedy | OpenNMT-py | 4.00 | 6.00 | 500 | 30.00 | 1.00 |" in lines
    assert "| greedy | jumok bf16 | 1.50 | 3.50 | 500 | 30.00 | 0.38 |" in lines
    assert not any("beam 5" in line for line in lines[3:])  # failed runs are left out


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no OpenNMT-py checkpoint"):
        decode.newest_checkpoint(tmp_path)
    for step in (900, 1000, 200):
        (tmp_path / f"model_step_{step}.pt").write_bytes(b"")
    assert decode.newest_checkpoint(tmp_path).name == "model_step_1000.pt"


def test_bleu_of_an_output_file(tmp_path):
    out, ref = tmp_path / "out.txt", tmp_path / "ref.txt"
    ref.write_text("ein Mann läuft .\neine Frau liest ein Buch .\n", encoding="utf-8")
    out.write_text("ein Mann läuft .\neine Frau liest ein Buch .\n", encoding="utf-8")
    assert decode.bleu(out, ref) == 100.0
    out.write_text("ein Hund .\nzwei Katzen schlafen .\n", encoding="utf-8")
    assert decode.bleu(out, ref) < 20


@pytest.mark.timing
def test_the_memory_wrapper_ends_what_a_command_leaves_behind(tmp_path):
    # OpenNMT-py's data-loader workers outlived it when it was stopped; the wrapper now ends
    # the command's whole process group
    import subprocess
    import time

    marker = tmp_path / "left.pid"
    peak = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "peak.py"
    command = ["bash", "-c", f"sleep 600 & echo $! > {marker}; exit 0"]
    done = subprocess.run(
        [sys.executable, str(peak), "--log", str(tmp_path / "log"), "--", *command],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"returncode": 0' in done.stdout
    left = int(marker.read_text())
    deadline = time.monotonic() + budget(2.5)  # the kill is asynchronous: wait for it
    while time.monotonic() < deadline:
        if not Path(f"/proc/{left}").exists() or "Z" in _state(left):
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{left}").exists() or "Z" in _state(left)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def _trained(system, label, speed, round_, rss=800.0):
    return {
        "system": system,
        "label": label,
        "model": "uni LSTM 256, dot",
        "round": round_,
        "target_tokens_per_second": speed,
        "updates": 1056,
        "peak_rss_mib": rss,
        "wall_seconds": 60.0,
    }


def test_training_table_pairs_systems_within_each_round_and_gives_the_median(capsys):
    records = [
        _trained("onmt", "OpenNMT-py", 20_000.0, 1),
        _trained("jumok-bf16", "jumok bf16", 40_000.0, 1, rss=600.0),
        _trained("jumok-bf16", "jumok bf16", 45_000.0, 2, rss=700.0),
        _trained("onmt", "OpenNMT-py", 25_000.0, 2),
        _trained("onmt", "OpenNMT-py", 22_000.0, 3),
        _trained("jumok-bf16", "jumok bf16", 48_400.0, 3, rss=640.0),
    ]
    run.print_tables("date", "3 epochs", records)
    lines = capsys.readouterr().out.splitlines()
    assert "| 2 | jumok bf16 | uni LSTM 256, dot | 45,000 | 1056 | 700 | 60 |" in lines
    # per round 2.00, 1.80 and 2.20 (never across rounds: 45,000 / 20,000 would be 2.25)
    ratio = "| jumok bf16 / OpenNMT-py | 2.00, 1.80, 2.20 | 2.00 (median) | 0.80 (median) |"
    assert ratio in lines


def test_training_table_of_one_round_keeps_its_single_ratio(capsys):
    records = [
        _trained("onmt", "OpenNMT-py", 24_000.0, 1),
        _trained("jumok-bf16", "jumok bf16", 44_000.0, 1, rss=700.0),
    ]
    run.print_tables("date", "3 epochs", records)
    lines = capsys.readouterr().out.splitlines()
    assert "| jumok bf16 | uni LSTM 256, dot | 44,000 | 1056 | 700 | 60 |" in lines
    assert "| jumok bf16 / OpenNMT-py | 1.83 | 0.88 |" in lines
