"""The command line: translate in both formats, the demo, and one clear error per bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUIET, ROOT, digest, small_config

from jumok.app.cli import main
from jumok.training.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    train(small_config("train.epochs=1"), path, **QUIET)
    return path


def test_translate_text_and_jsonl(run_dir, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("september 27, 1994\n9/27/94\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(inputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "translate",
                str(run_dir),
                "--input",
                str(inputs),
                "--output",
                str(out),
                "--format",
                "jsonl",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == lines
    first = records[0]
    assert first["source_tokens"] == list("september 27, 1994")  # original order, not reversed
    assert len(first["attention"]) == len(first["tokens"])
    assert all(len(row) == len(first["source_tokens"]) for row in first["attention"])
    assert all(abs(sum(row) - 1) < 1e-5 for row in first["attention"])
    assert isinstance(first["score"], float)


def test_report_time(run_dir, tmp_path, capsys):
    """--report-time prints the translation time and rates on stderr; stdout is unchanged."""
    import re

    inputs = tmp_path / "in.txt"
    inputs.write_text("september 27, 1994\n9/27/94\n1/2/03\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(inputs)]) == 0
    plain = capsys.readouterr().out
    assert main(["translate", str(run_dir), "--input", str(inputs), "--report-time"]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain
    found = re.search(
        r"translation time: ([0-9.]+) s for 3 inputs \(([0-9.,]+) inputs/s, ([0-9,]+) output "
        r"tokens/s\); model load ([0-9.]+) s",
        captured.err,
    )
    assert found, captured.err
    seconds, per_second = float(found[1]), float(found[2].replace(",", ""))
    assert seconds > 0 and float(found[4]) > 0
    # the rate is 3 inputs over the time, which is printed rounded to 0.01 s (the 0.1 of the
    # rate's own rounding is added)
    assert abs(per_second * seconds - 3) <= per_second * 0.005 + 0.1 * seconds


def test_python_api_echoes_the_source_and_gives_one_attention_row_per_token(run_dir):
    import jumok

    result = jumok.load(run_dir).translate(["Sep 27, 1994"])[0]
    assert result.source == "Sep 27, 1994" and len(result.attention) == len(result.tokens)


def test_unknown_characters_are_counted_in_a_warning(run_dir):
    import jumok
    from jumok.decoding.translator import UnknownTokenWarning

    with pytest.warns(UnknownTokenWarning, match=r"2 unknown source characters in 1 of 2 inputs"):
        jumok.load(run_dir).translate(["9/27/94", "9€27€94"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["translate", "{run}", "--input", "{tmp}/missing.txt"],
            r"missing\.txt: input file not found",
        ),
        (
            ["translate", "{run}", "--input", "{tmp}/empty_line.txt", "--strict"],
            r"empty_line\.txt:2: empty line",
        ),
        (["translate", "{tmp}/no_run"], r"no_run: no such run directory"),
        (
            ["train", "{tmp}/bad.yaml"],
            r"bad\.yaml: train\.epoch: unknown field \(did you mean epochs\?\)",
        ),
        (
            ["train", "{tmp}/pairs.yaml"],
            r"pairs\.tsv:2: found 1 tab-separated column; expected at least 2",
        ),
        (["train", "{root}/examples/date.yaml", "--run-dir", "{run}"], r"already holds a run"),
    ],
)
def test_bad_input_gives_one_clear_message_and_exit_2(run_dir, tmp_path, capsys, args, expected):
    (tmp_path / "empty_line.txt").write_text("9/27/94\n\n", encoding="utf-8")
    (tmp_path / "bad.yaml").write_text("data:\n  generate: {task: date}\ntrain:\n  epoch: 3\n")
    (tmp_path / "pairs.tsv").write_text("a\tb\nbroken line\n", encoding="utf-8")
    (tmp_path / "pairs.yaml").write_text("data:\n  train: pairs.tsv\n")
    before = digest(run_dir)
    argv = [a.format(run=run_dir, tmp=tmp_path, root=ROOT) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jumok: error: ")
    assert __import__("re").search(expected, err[0]), err[0]
    assert digest(run_dir) == before


@pytest.mark.slow
def test_demo_writes_run_pictures_and_report(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "jumok",
        "demo",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "data.generate.size=1500",
        "--set",
        "data.generate.test_size=100",
        "--set",
        "data.generate.dev_size=100",
        "--set",
        "train.epochs=1",
        "--set",
        "model.encoder.hidden_size=32",
        "--set",
        "model.decoder.hidden_size=32",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "dev exact match" in done.stdout and "test exact match" in done.stdout
    for name in (
        "run/best.safetensors",
        "attention.png",
        "attention-1.png",
        "learning_curve.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Test exact match" in report and "![attention](attention.png)" in report
    # a second demo into the same directory is refused
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path"])
def test_translate_refuses_to_write_its_own_input(run_dir, tmp_path, capsys, monkeypatch, how):
    # `--input X --output X` once exited 0 with X emptied (the sources gone, mode 644 -> 600)
    source = tmp_path / "same.txt"
    source.write_text("september 27, 1994\n9/27/94\n", encoding="utf-8")
    source.chmod(0o644)
    output = {
        "same path": source,
        "symlink": tmp_path / "link.txt",
        "hard link": tmp_path / "hard.txt",
        "relative path": Path("same.txt"),
    }[how]
    if how == "symlink":
        output.symlink_to(source.name)
    elif how == "hard link":
        output.hardlink_to(source)
    monkeypatch.chdir(tmp_path)
    before = digest(tmp_path)
    code = main(["translate", str(run_dir), "--input", str(source), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "is the same file as --input" in err and str(output) in err
    assert digest(tmp_path) == before and _mode(source) == 0o644
    if how == "symlink":
        assert output.is_symlink()


def test_every_command_that_reads_one_file_and_writes_another_refuses_the_same_file(
    run_dir, tmp_path, capsys
):
    src = tmp_path / "src.txt"
    src.write_text("september 27, 1994\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("1994-09-27\n", encoding="utf-8")
    config = tmp_path / "date.yaml"
    config.write_bytes((ROOT / "examples/date.yaml").read_bytes())
    runs = digest(run_dir)
    before = digest(tmp_path)
    best = run_dir / "best.safetensors"
    cases = [
        (["eval", str(run_dir), "--src", str(src), "--ref", str(ref), "--out", str(src)], "--src"),
        (["eval", str(run_dir), "--src", str(src), "--ref", str(ref), "--out", str(ref)], "--ref"),
        (["average", str(best), str(run_dir), "--out", str(best)], "checkpoint 1"),
        (["data", "check", str(config), "--json", str(config)], "config"),
    ]
    for argv, flag in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"is the same file as {flag}" in err and err.count("\n") == 1, err
    assert digest(tmp_path) == before and digest(run_dir) == runs


def test_translate_warns_when_the_input_has_no_lines(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["translate", str(run_dir), "--input", str(empty), "--output", str(out)]) == 0
    assert "has no lines" in capsys.readouterr().err
    assert out.read_text() == ""


def test_every_command_spells_the_checkpoint_choice_the_same_way(monkeypatch):
    from jumok.app import serve
    from jumok.app.cli import build_parser

    parser = build_parser()
    for command in (
        ["translate", "run"],
        ["eval", "run", "--src", "s.txt", "--ref", "r.txt"],
        ["average", "run", "--out", "avg.safetensors"],
        ["serve", "run"],
    ):
        assert parser.parse_args(command).checkpoint == "best"
        assert parser.parse_args([*command, "--checkpoint", "last"]).checkpoint == "last"
    # serve's old spelling still works, and reaches the models' loading
    assert parser.parse_args(["serve", "run", "--which", "last"]).checkpoint == "last"
    seen = {}
    monkeypatch.setattr(serve, "load_models", lambda paths, which, device: seen.update(w=which))
    monkeypatch.setattr(serve, "bind", lambda host, port: None)  # no real socket in this test
    monkeypatch.setattr(serve, "run", lambda models, config, log_level, sock: None)
    assert main(["serve", "run", "--which", "last"]) == 0
    assert seen == {"w": "last"}


@pytest.mark.parametrize("command", ["demo", "ladder", "eval"])
@pytest.mark.parametrize("taken", ["a folder with a file", "a file"])
def test_every_output_folder_is_refused_when_taken_and_nothing_changes(
    run_dir, tmp_path, capsys, command, taken
):
    # one guard (training.rundir.refuse_nonempty_dir) for every command that writes a folder
    out = tmp_path / "out"
    if taken == "a file":
        out.write_text("mine\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    src = tmp_path / "src.txt"
    src.write_text("september 27, 1994\n", encoding="utf-8")
    argv = {
        "demo": ["demo", "--out", str(out)],
        "ladder": ["ladder", "--task", "date", "--quick", "--out", str(out)],
        "eval": ["eval", str(run_dir), "--src", str(src), "--ref", str(src), "--out", str(out)],
    }[command]
    before = digest(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "nothing was changed" in err.lower()
    assert digest(tmp_path) == before
