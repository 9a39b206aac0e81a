"""What a first-time user meets at the command line (issue 27, items 6, 10, 13 and 15): messages
that point the right way, "did you mean", a bare ``jumok``, ``-V``, ``jumok runs``, ``jumok
info``, grouped ``--help``, ``--device`` and ``jumok average`` refusing unrelated runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUIET, ROOT, tiny_config

from jumok.app.cli import main
from jumok.training.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder with two finished one-epoch runs of the tiny date config: a (seed 42), b (seed 7)."""
    folder = tmp_path_factory.mktemp("newcomer") / "runs"
    train(tiny_config("train.epochs=1"), folder / "a", **QUIET)
    train(tiny_config("train.epochs=1", "train.seed=7"), folder / "b", **QUIET)
    return folder


def error_line(capsys) -> str:
    """The one ``jumok: error:`` line a refused command printed (the last stderr line)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def unfinished_copy(run: Path, dest: Path, keep: tuple[str, ...]) -> Path:
    """``run`` as a run stopped before its first validation: config.yaml and ``keep`` only, and
    a resume.state that says it has not finished."""
    from jumok.training.resume import STATE_FILE, load_state, save_state

    dest.mkdir(parents=True)
    for name in ("config.yaml", "vocab.json", *keep):
        shutil.copy(run / name, dest / name)
    state = load_state(run / STATE_FILE)
    state["progress"]["finished"] = False
    save_state(dest / STATE_FILE, state)
    return dest


# --------------------------------------------------------------------- item 6 and item 10
def test_translate_on_a_config_says_train_it_first(tmp_path, capsys):
    config = tmp_path / "my.yaml"
    shutil.copy(ROOT / "examples/date.yaml", config)
    assert main(["translate", str(config), "--input", str(config)]) == 2
    line = error_line(capsys)
    assert f"{config}: a config" in line and f"jumok train {config}" in line
    assert "safetensors" not in line  # not "not a readable safetensors checkpoint"


def test_translate_on_a_demo_folder_points_at_the_run_inside(runs, tmp_path, capsys):
    demo = tmp_path / "demo-out"  # what jumok demo writes: run/, pictures, report.md
    shutil.copytree(runs / "a", demo / "run")
    (demo / "report.md").write_text("# demo\n", encoding="utf-8")
    assert main(["translate", str(demo)]) == 2
    assert f"the run is in {demo / 'run'}" in error_line(capsys)


def test_translate_on_a_folder_of_runs_names_them(runs, capsys):
    assert main(["translate", str(runs)]) == 2
    line = error_line(capsys)
    assert "holds 2 runs" in line and str(runs / "a") in line and f"jumok runs {runs}" in line


def test_translate_on_an_unfinished_run_says_so_and_how_to_resume(runs, tmp_path, capsys):
    bare = unfinished_copy(runs / "a", tmp_path / "bare", keep=())
    assert main(["translate", str(bare)]) == 2
    line = error_line(capsys)
    assert "unfinished run" in line and f"jumok train --resume {bare}" in line
    assert "is this a jumok run directory" not in line

    # stopped by a signal before its first validation: last.safetensors, no best yet
    stopped = unfinished_copy(runs / "a", tmp_path / "stopped", keep=("last.safetensors",))
    inputs = tmp_path / "in.txt"
    inputs.write_text("9/27/94\n", encoding="utf-8")
    assert main(["translate", str(stopped), "--input", str(inputs)]) == 2
    line = error_line(capsys)
    assert "no best.safetensors yet" in line and "--checkpoint last" in line
    assert f"jumok train --resume {stopped}" in line
    argv = ["translate", str(stopped), "--checkpoint", "last", "--input", str(inputs)]
    assert main(argv) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_a_folder_that_is_no_run_is_named_as_such(tmp_path, capsys):
    assert main(["translate", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "no best.safetensors" in line and "not a jumok run directory" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["tranlsate", "RUN"], "did you mean 'translate'?"),
        (["evl"], "did you mean 'eval'?"),
        (["data", "chek", "x.yaml"], "did you mean 'check'?"),
        (["translate", "RUN", "--beem", "3"], "(did you mean --beam?)"),
        (["translate", "RUN", "--beem=3", "--topk", "2"], "--beam for --beem, --top-k for --topk"),
        (["average", "A", "--out", "B", "--forse"], "(did you mean --force?)"),
    ],
)
def test_typos_get_a_did_you_mean(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("error:") == 1
    if argv[0] == "translate":
        assert "usage: jumok translate" in err  # the command's usage, not jumok's


def test_an_unknown_command_with_no_near_one_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["zzzz"])
    err = capsys.readouterr().err
    assert "unknown command 'zzzz'" in err and "did you mean" not in err and "translate" in err


def test_bare_jumok_lists_the_commands(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    for command in ("train", "translate", "eval", "average", "runs", "info", "serve"):
        assert f"\n    {command} " in captured.out
    assert captured.err == ""


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag, capsys):
    from jumok import __version__

    with pytest.raises(SystemExit) as stop:
        main([flag])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"jumok {__version__}"


# ------------------------------------------------------------------------------ item 13
def test_average_refuses_checkpoints_of_different_runs_unless_forced(runs, tmp_path, capsys):
    from jumok.checkpoint import load_checkpoint

    a, b = runs / "a" / "best.safetensors", runs / "b" / "best.safetensors"
    out = tmp_path / "mean.safetensors"
    assert main(["average", str(runs / "a"), str(runs / "b"), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert str(a) in line and str(b) in line and "different runs" in line
    assert "train.seed 42 vs 7" in line and "--force" in line
    assert not out.exists()

    argv = ["average", str(runs / "a"), str(runs / "b"), "--out", str(out), "--force"]
    assert main(argv) == 0
    mean = load_checkpoint(out).state_dict
    for key, value in load_checkpoint(a).state_dict.items():
        torch.testing.assert_close(mean[key], (value + load_checkpoint(b).state_dict[key]) / 2)


def test_average_of_one_runs_checkpoints_works(runs, tmp_path, capsys):
    out = tmp_path / "mean.safetensors"
    run = runs / "a"
    # the same run, continued under a larger budget, is still one run
    from jumok.checkpoint import load_checkpoint, save_checkpoint
    from jumok.model.seq2seq import build_model

    last = load_checkpoint(run / "last.safetensors")
    longer = last.config.model_copy(
        update={"train": last.config.train.model_copy(update={"epochs": 5, "threads": 2})}
    )
    model = build_model(last.config.model, len(last.src_vocab), len(last.tgt_vocab))
    model.load_state_dict(last.state_dict)
    resumed = tmp_path / "resumed.safetensors"
    save_checkpoint(resumed, model, longer, last.src_vocab, last.tgt_vocab, last.info, last.files)
    argv = ["average", str(run / "best.safetensors"), str(resumed), "--out", str(out)]
    assert main(argv) == 0
    assert "wrote the average of 2 checkpoints" in capsys.readouterr().out


# ------------------------------------------------------------------------------ item 15
def test_runs_lists_finished_unfinished_and_failed_runs(runs, tmp_path, capsys):
    from jumok.training.card import run_status

    folder = tmp_path / "mine"
    shutil.copytree(runs / "a", folder / "done")
    unfinished_copy(runs / "a", folder / "stopped", keep=("last.safetensors",))
    (folder / "broken").mkdir()
    shutil.copy(runs / "a" / "config.yaml", folder / "broken" / "config.yaml")
    (folder / "notes").mkdir()  # no run: not listed
    assert main(["runs", str(folder)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(str(folder))}
    assert set(lines) == {str(folder / n) for n in ("done", "stopped", "broken")}
    best = run_status(runs / "a").best_text()  # 'exact match N%'
    assert " finished " in lines[str(folder / "done")] and best in lines[str(folder / "done")]
    assert " 19 " in lines[str(folder / "done")]  # updates: one epoch of 19
    assert " unfinished " in lines[str(folder / "stopped")]
    assert " failed " in lines[str(folder / "broken")]
    assert f"jumok train --resume {folder / 'stopped'}" in out
    assert "stopped before its first save" in out


def test_runs_on_a_missing_folder_is_one_error(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in error_line(capsys)


def test_info_prints_a_model_card_and_write_card_saves_it(runs, capsys):
    import json

    from jumok import __version__
    from jumok.training.card import write_card

    run = runs / "a"
    assert main(["info", str(run)]) == 0
    card = capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for section in ("## Data", "## Model", "## Training", "## Dev scores", "## Use", "## Versions"):
        assert section in card
    assert "| status | finished |" in card
    assert "the date task, 700 pairs" in card and "`data/train.tsv`, 600 pairs" in card
    assert "hidden 16" in card and "seed 42" in card and "parameters: " in card
    assert f"{rows[-1]['train_loss']:.4f}" in card  # the validation's row
    assert f"jumok {__version__}" in card and f"torch {torch.__version__}" in card
    assert f"jumok translate {run}" in card
    path = write_card(run)
    assert path == run / "README.md"
    assert path.read_text(encoding="utf-8").split("## Versions")[0] == card.split("## Versions")[0]
    path.unlink()  # the module's other tests read the run as trained


def test_info_on_a_folder_without_a_run_is_one_error(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not a jumok run directory" in error_line(capsys)


def test_translate_help_groups_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    page = capsys.readouterr().out
    sections = ["input and output:", "model and speed:", "search:", "sampling:", "constraints:"]
    sections += ["reranking (MMI, docs/decoding.md):", "reports and pictures:"]
    places = [page.index("\n" + s + "\n") for s in sections]
    assert places == sorted(places)
    options = page[page.index("\noptions:\n") : places[0]]
    assert options.count("\n  -") == 1  # only -h: every flag has its section
    assert page.index("\n  --beam ") > page.index("\nsearch:\n")
    assert page.index("\nmodel and speed:\n") < page.index("\n  --device ") < places[2]


def test_device_cpu_decodes_and_an_absent_device_is_refused(runs, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("9/27/94\nSep 27, 1994\n", encoding="utf-8")
    refs = tmp_path / "ref.txt"
    refs.write_text("1994-09-27\n1994-09-27\n", encoding="utf-8")
    run = str(runs / "a")
    assert main(["translate", run, "--input", str(inputs)]) == 0
    default = capsys.readouterr().out
    assert main(["translate", run, "--input", str(inputs), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == default
    out = tmp_path / "eval"
    argv = ["eval", run, "--src", str(inputs), "--ref", str(refs), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert (out / "report.json").is_file()
    with pytest.raises(SystemExit) as stop:
        main(["translate", run, "--device", "tpu"])
    assert stop.value.code == 2
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["translate", run, "--device", "cuda"])
        assert "0 CUDA device(s); use --device cpu" in capsys.readouterr().err


def test_a_missing_data_file_names_the_config_and_the_field(tmp_path, capsys, monkeypatch):
    """Item 7: the message names the config file, the field, and that paths are relative to the
    config's folder; no runs/... folder is left behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "my.yaml").write_text(
        "data: {train: pairs.tsv}\nmodel: {attention: dot}\n", encoding="utf-8"
    )
    assert main(["train", "conf/my.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "jumok: error: conf/my.yaml: data.train: " in err
    assert "read from the config file's folder" in err
    assert not (tmp_path / "runs").exists()
