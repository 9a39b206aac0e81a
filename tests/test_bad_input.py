"""The bad-input matrix: every mistake a user can make with a config, a data file, a checkpoint or
an input gets a non-zero exit (or a 4xx from the server) and one message that names the file,
line or field and says what was expected, and nothing already on disk changes (checked by hash).

Each case builds its mistake inside a work folder that also holds a finished run; the folder's
hashes are taken before the command and compared after it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import MATRIX_PAIRS as PAIRS
from conftest import MATRIX_TINY as TINY
from conftest import QUIET, ROOT, Case, assert_refused, digest, small_config
from fastapi.testclient import TestClient
from safetensors.torch import save_file

import jumok
from jumok.app.cli import main
from jumok.app.serve import ServeConfig, create_app
from jumok.training.resume import load_state, save_state
from jumok.training.train import train


def config(text: str, name: str = "bad.yaml"):
    def make(w: Path) -> list[str]:
        (w / name).write_text(text, encoding="utf-8")
        return ["train", str(w / name), "--run-dir", str(w / "new")]

    return make


def tiny_with(old: str, new: str):
    return config(TINY.replace(old, new))


def data(content: bytes, name: str = "pairs.tsv", extra: str = ""):
    def make(w: Path) -> list[str]:
        (w / name).write_bytes(content)
        text = TINY.replace("train: pairs.tsv", f"train: {name}{extra}")
        (w / "d.yaml").write_text(text, encoding="utf-8")
        return ["train", str(w / "d.yaml"), "--run-dir", str(w / "new")]

    return make


def parallel(src_lines: int, tgt_lines: int):
    def make(w: Path) -> list[str]:
        (w / "a.src").write_text("".join(f"s{i}\n" for i in range(src_lines)), encoding="utf-8")
        (w / "a.tgt").write_text("".join(f"t{i}\n" for i in range(tgt_lines)), encoding="utf-8")
        text = TINY.replace("train: pairs.tsv", "train: [a.src, a.tgt]")
        (w / "p.yaml").write_text(text, encoding="utf-8")
        return ["train", str(w / "p.yaml"), "--run-dir", str(w / "new")]

    return make


def checkpoint(write: Callable[[Path, Path], None]):
    """A run folder 'broken' whose best.safetensors ``write(path, good_checkpoint)`` makes."""

    def make(w: Path) -> list[str]:
        broken = w / "broken"
        broken.mkdir()
        write(broken / "best.safetensors", w / "run" / "best.safetensors")
        (w / "in.txt").write_text("Jan 2, 2003\n", encoding="utf-8")
        return ["translate", str(broken), "--input", str(w / "in.txt")]

    return make


def truncated(path: Path, good: Path) -> None:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def torch_pickle(path: Path, good: Path) -> None:
    torch.save({"weight": torch.zeros(2)}, path)


def foreign_safetensors(path: Path, good: Path) -> None:
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})


def future_version(path: Path, good: Path) -> None:
    payload = good.read_bytes()
    size = struct.unpack("<Q", payload[:8])[0]
    header = json.loads(payload[8 : 8 + size])
    header["__metadata__"]["format_version"] = "999"
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload[8 + size :])


def text_file(path: Path, good: Path) -> None:
    path.write_text("this is not a checkpoint\n", encoding="utf-8")


def translate_input(content: bytes, *flags: str):
    def make(w: Path) -> list[str]:
        (w / "in.txt").write_bytes(content)
        return ["translate", str(w / "run"), "--input", str(w / "in.txt"), *flags]

    return make


def ensemble_of_different_vocabularies(w: Path) -> list[str]:
    other = w / "other"
    train(
        small_config("train.epochs=1", "data.generate.task=addition", "decode.max_length=6"),
        other,
        **QUIET,
    )
    (w / "in.txt").write_text("12+3\n", encoding="utf-8")
    return ["translate", str(w / "run"), str(other), "--input", str(w / "in.txt")]


def eval_lengths(w: Path) -> list[str]:
    (w / "src.txt").write_text("Jan 2, 2003\nMar 3, 1999\n", encoding="utf-8")
    (w / "ref.txt").write_text("2003-01-02\n", encoding="utf-8")
    return [
        "eval",
        str(w / "run"),
        "--src",
        str(w / "src.txt"),
        "--ref",
        str(w / "ref.txt"),
        "--out",
        str(w / "report"),
    ]


def forged_state(change: Callable[[dict], dict]):
    """The run's resume.state rewritten by ``change`` with a valid checksum (a forgery)."""

    def make(w: Path) -> list[str]:
        path = w / "run" / "resume.state"
        state = load_state(path)
        state["progress"]["finished"] = False
        save_state(path, change(state))
        return ["train", "--resume", str(w / "run"), "--no-progress"]

    return make


def symlink_loop(w: Path) -> list[str]:
    (w / "l1.tsv").symlink_to("l2.tsv")
    (w / "l2.tsv").symlink_to("l1.tsv")
    return _retarget(w, "l1.tsv")


def _retarget(w: Path, name: str) -> list[str]:
    """A config like tiny.yaml whose train file is ``name``."""
    (w / "r.yaml").write_text(TINY.replace("train: pairs.tsv", f"train: {name}"), encoding="utf-8")
    return ["train", str(w / "r.yaml"), "--run-dir", str(w / "new")]


CASES = [
    # --------------------------------------------------------------------------- config
    Case("unknown key", tiny_with("hidden_size: 16}", "hiden_size: 16}"), ("hiden_size",)),
    Case("wrong type", tiny_with("epochs: 1", "epochs: many"), ("train.epochs", "integer")),
    Case("bad choice", tiny_with("attention: dot", "attention: dotty"), ("model.attention",)),
    Case("negative size", tiny_with("batch_size: 4", "batch_size: -4"), ("train.batch_size",)),
    Case(
        "zero size",
        tiny_with(
            "{embedding_size: 8, hidden_size: 16}\n  decoder",
            "{embedding_size: 0, hidden_size: 16}\n  decoder",
        ),
        ("model.encoder.embedding_size",),
    ),
    Case(
        "incompatible options",
        tiny_with(
            "decoder: {embedding_size: 8, hidden_size: 16}",
            "decoder: {embedding_size: 8, hidden_size: 32}",
        ),
        ("dot attention", "hidden_size"),
    ),
    Case("YAML syntax error", config("data:\n  train: [a, b\nmodel: {}\n"), ("bad.yaml:3",)),
    Case(
        "missing config file",
        lambda w: ["train", str(w / "nope.yaml"), "--run-dir", str(w / "new")],
        ("nope.yaml", "not found"),
    ),
    Case(
        "bad --set",
        lambda w: ["train", str(w / "tiny.yaml"), "--set", "train.lr", "--run-dir", str(w / "n")],
        ("--set", "KEY.PATH=VALUE"),
    ),
    Case(
        "run dir already holds a run",
        lambda w: ["train", str(w / "tiny.yaml"), "--run-dir", str(w / "run")],
        ("already holds a run",),
    ),
    Case(
        "--set on a value",
        lambda w: [
            "train",
            str(w / "tiny.yaml"),
            "--set",
            "train.lr.x=1",
            "--run-dir",
            str(w / "n"),
        ],
        ("train.lr", "number"),
    ),
    # ----------------------------------------------------------------------------- data
    Case("missing data file", data(b"", name="x.tsv", extra="_missing"), ("x.tsv_missing",)),
    Case("empty data file", data(b"", name="empty.tsv"), ("empty.tsv", "no sentence pairs")),
    Case("malformed TSV row", data(b"a\tb\nno tab here\nc\td\n"), ("pairs.tsv:2", "column")),
    Case("bad UTF-8", data(b"a\tb\n\xff\xfe\tc\n"), ("pairs.tsv:2", "UTF-8")),
    Case(
        "stray tab (different column counts)",
        data(b"a\tb\nc\td\te\n"),
        ("pairs.tsv:2", "columns"),
    ),
    Case("parallel files of different lengths", parallel(12, 10), ("a.src", "12", "10")),
    Case(
        "CSV without the named column",
        data(
            b"Q,A\nhi,there\n", name="c.csv", extra="\n  source_field: question\n  target_field: A"
        ),
        ("c.csv", "question"),
    ),
    Case(
        "unclosed CSV quote",
        data(b'Q,A\n"hi,there\n', name="q.csv", extra="\n  source_field: Q\n  target_field: A"),
        ("q.csv:2", "quote"),
    ),
    Case(
        "invalid JSONL",
        data(
            b'{"s": "a", "t": "b"}\n{"s": "a",\n',
            name="j.jsonl",
            extra="\n  source_field: s\n  target_field: t",
        ),
        ("j.jsonl:2", "JSON"),
    ),
    Case(
        "JSONL field not a string",
        data(
            b'{"s": "a", "t": 3}\n', name="k.jsonl", extra="\n  source_field: s\n  target_field: t"
        ),
        ("k.jsonl:1", "'t'", "string"),
    ),
    Case(
        "every pair over the length limits",
        data(b"".join(b"x" * 300 + b"%d\ty%d\n" % (i, i) for i in range(12))),
        ("pairs.tsv", "all 10 train pairs", "data.max_source_length (200)"),
    ),
    # ------------------------------------------------------------------------ checkpoints
    Case("truncated checkpoint", checkpoint(truncated), ("best.safetensors", "truncated")),
    Case("PyTorch pickle", checkpoint(torch_pickle), ("best.safetensors", "torch.save")),
    Case("foreign safetensors", checkpoint(foreign_safetensors), ("not a jumok checkpoint",)),
    Case("future format version", checkpoint(future_version), ("'999'", "version")),
    Case("text file as checkpoint", checkpoint(text_file), ("best.safetensors",)),
    Case(
        "run dir without a checkpoint",
        lambda w: ["translate", str(w), "--input", str(w / "pairs.tsv")],
        ("no best.safetensors",),
    ),
    Case("vocabulary mismatch (ensemble)", ensemble_of_different_vocabularies, ("vocabular",)),
    # ---------------------------------------------------------------------- translate input
    Case(
        "--strict: empty input line",
        translate_input(b"Jan 2, 2003\n\nMar 3\n", "--strict"),
        ("in.txt:2", "empty"),
    ),
    Case(
        "--strict: a line of control characters only",
        translate_input(b"\x00\x1b\n", "--strict"),
        ("in.txt:1", "empty"),
    ),
    Case(
        "very long input line",
        translate_input(b"x" * 20_000 + b"\n", "--strict"),
        ("in.txt:1", "20000 characters", "--max-input-chars"),
    ),
    Case(
        "--strict: input bad UTF-8",
        translate_input(b"Jan \xc3\x28 2\n", "--strict"),
        ("in.txt:1", "UTF-8"),
    ),
    Case(
        "n-best over beam",
        translate_input(b"Jan 2, 2003\n", "--beam", "2", "--n-best", "3"),
        ("n_best", "beam"),
    ),
    Case(
        "missing input file",
        lambda w: ["translate", str(w / "run"), "--input", str(w / "none.txt")],
        ("none.txt", "not found"),
    ),
    Case("eval files of different lengths", eval_lengths, ("src.txt", "ref.txt")),
    # ---------------------------------------------------------- outputs, folders, data paths
    Case(
        "--output is a directory",
        lambda w: (
            (w / "outdir").mkdir()
            or translate_input(b"Jan 2, 2003\n")(w) + ["--output", str(w / "outdir")]
        ),
        ("--output", "outdir", "is a directory"),
    ),
    Case(
        "--output in a missing folder",
        lambda w: translate_input(b"Jan 2, 2003\n")(w) + ["--output", str(w / "no" / "o.txt")],
        ("--output", "does not exist"),
    ),
    Case(
        "data check --json is a directory",
        lambda w: ["data", "check", str(w / "tiny.yaml"), "--json", str(w / "run")],
        ("--json", "is a directory"),
    ),
    Case(
        "forged resume.state without its fields",
        forged_state(lambda state: {"progress": state["progress"]}),
        ("resume.state", "not a state jumok train wrote", "model"),
    ),
    Case(
        "forged resume.state with weights of another model",
        forged_state(lambda state: {**state, "model": {"w": torch.zeros(3)}}),
        ("resume.state", "does not fit this run"),
    ),
    Case("a symlink loop as a data path", symlink_loop, ("l1.tsv", "loop of symbolic links")),
    Case(
        "a directory as a data path",
        lambda w: (w / "folder.tsv").mkdir() or _retarget(w, "folder.tsv"),
        ("folder.tsv", "is a directory"),
    ),
    Case(
        "run dir that cannot be created",
        lambda w: ["train", str(w / "tiny.yaml"), "--run-dir", str(w / "pairs.tsv" / "r")],
        ("pairs.tsv", "cannot create the run directory"),
    ),
    Case(
        "eval --out that cannot be created",
        lambda w: eval_lengths(w)[:-1] + [str(w / "pairs.tsv" / "report")],
        ("--out", "cannot create the folder"),
    ),
    Case(
        "more generated pairs than the task has",
        lambda w: [
            "train",
            str(ROOT / "examples" / "date.yaml"),
            "--set",
            "data.generate.size=2000000",
            "--run-dir",
            str(w / "new"),
        ],
        ("data.generate.size", "only 170,856 distinct inputs"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_message_and_changes_nothing(case, work, capsys):
    assert_refused(case, work, capsys)


def test_the_matrix_has_at_least_thirty_cases():
    assert len(CASES) >= 30


# --------------------------------------------------------------------------- accepted inputs
def test_bom_and_crlf_are_read_not_refused(work, capsys):
    """Not mistakes: a BOM and CRLF line ends are read as plain UTF-8 lines."""
    (work / "pairs.tsv").write_bytes(b"\xef\xbb\xbf" + PAIRS.replace("\n", "\r\n").encode())
    assert main(["data", "check", str(work / "tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "\\r" not in out and "\ufeff" not in out
    (work / "in.txt").write_bytes(b"\xef\xbb\xbfJan 2, 2003\r\nMar 3, 1999\r\n")
    assert main(["translate", str(work / "run"), "--input", str(work / "in.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_a_bad_line_gets_an_empty_output_and_the_rest_is_translated(work, capsys):
    """Without --strict, one blank, over-long or undecodable line no longer fails the whole
    input: its output line is empty (the outputs stay aligned), and each but a blank line is
    named on stderr."""
    good = b"Jan 2, 2003\n"
    (work / "in.txt").write_bytes(good + b"\n" + b"x" * 300 + b"\n" + b"\xff\xfe\n" + good)
    argv = ["translate", str(work / "run"), "--input", str(work / "in.txt")]
    assert main([*argv, "--max-input-chars", "100"]) == 0
    captured = capsys.readouterr()
    first, blank, long, undecodable, last = captured.out.split("\n")[:5]
    assert first == last and first and not blank and not long and not undecodable
    assert (
        "in.txt:3: 300 characters" in captured.err and "in.txt:4: not valid UTF-8" in captured.err
    )
    assert "in.txt:2" not in captured.err


def test_the_python_api_keeps_empty_inputs_aligned(matrix_run):
    model = jumok.load(matrix_run)
    with pytest.warns(jumok.decoding.translator.ControlCharacterWarning):
        plain, empty, noise = model.translate(["Jan 2, 2003", "", "\x00 \x1b"])
    assert plain.text and not plain.skipped
    assert empty.skipped and noise.skipped and empty.text == "" and empty.hypotheses == []
    with pytest.raises(jumok.errors.DataError, match="input 2: the text is empty"):
        model.translate(["Jan 2, 2003", " "], strict=True)


def test_control_characters_are_removed_and_reported_as_in_training_data(work, capsys):
    """NUL and escape are removed (the training data readers remove them too), with a warning."""
    (work / "in.txt").write_bytes(b"Jan\x00 2, 2003\x1b\nJan 2, 2003\n")
    with pytest.warns(jumok.decoding.translator.ControlCharacterWarning, match="removed 2"):
        assert main(["translate", str(work / "run"), "--input", str(work / "in.txt")]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second


def test_unknown_characters_are_read_as_unk_and_reported(work, capsys):
    (work / "in.txt").write_text("Jan 2, 2003 ✓\n", encoding="utf-8")
    with pytest.warns(jumok.decoding.translator.UnknownTokenWarning, match="'✓'"):
        assert main(["translate", str(work / "run"), "--input", str(work / "in.txt")]) == 0


# ----------------------------------------------------------------------------- server input
@pytest.fixture(scope="module")
def client(matrix_run):
    app = create_app({"run": jumok.load(matrix_run)}, ServeConfig(max_chars=100))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(
    ("texts", "status", "field", "says"),
    [
        (["x" * 101], 413, "texts[0]", "at most 100"),
        (["a\ud800b"], 422, "texts[0]", "unpaired surrogate"),
        (["two\nlines"], 422, "texts[0]", "line break"),
    ],
)
def test_server_input_gets_a_4xx_naming_the_text(client, matrix_run, texts, status, field, says):
    before = digest(matrix_run)
    # ensure_ascii: a lone surrogate travels as the escape \ud800, as a client would send it
    body = json.dumps({"texts": texts}, ensure_ascii=True).encode()
    response = client.post(
        "/v1/translate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and says in body["detail"]
    assert digest(matrix_run) == before


def test_server_answers_blank_texts_with_skipped_results(client):
    """As jumok translate: a blank text (or one of control characters only) gets an empty
    result marked skipped, and the other texts of the request are translated."""
    response = client.post("/v1/translate", json={"texts": ["", "Jan 2, 2003", " \t ", "\u001b"]})
    assert response.status_code == 200, response.text
    empty, plain, blank, control = response.json()["results"]
    assert plain["text"] and not plain["skipped"]
    for skipped in (empty, blank, control):
        assert skipped["skipped"] and skipped["text"] == "" and skipped["hypotheses"] == []


def test_server_removes_control_characters(client):
    plain = client.post("/v1/translate", json={"texts": ["Jan 2, 2003"]})
    noisy = client.post("/v1/translate", json={"texts": ["Jan\u0000 2, 2003\u001b"]})
    assert noisy.status_code == 200, noisy.text
    assert noisy.json()["results"][0]["text"] == plain.json()["results"][0]["text"]


def test_server_reads_unknown_characters_as_unk_and_counts_them(client):
    response = client.post("/v1/translate", json={"texts": ["Jan 2, 2003 ✓✓"]})
    assert response.status_code == 200
    assert response.json()["results"][0]["unknown"] == 2


def test_max_input_chars_is_bounded(work, capsys):
    """A 1 MB line once reached the kernels ("could not create a primitive"); the flag stops at
    100,000 characters, with argparse's one-line error."""
    (work / "in.txt").write_text("x" * 1_000_000 + "\n", encoding="utf-8")
    argv = ["translate", str(work / "run"), "--input", str(work / "in.txt")]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--max-input-chars", "2000000"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--max-input-chars: expected 1 to 100,000" in err
    assert "Traceback" not in err
