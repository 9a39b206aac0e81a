"""Writing an output file (``translate --output``, ``data check --json``): a regular file is
replaced whole and keeps its permissions; a symlink, a FIFO or a device is written, never
replaced; a directory is refused before any work."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from conftest import QUIET, small_config

from jumok.app import outputs
from jumok.app.cli import main
from jumok.app.outputs import check_output, make_output_dir, remove_if_empty, write_output
from jumok.errors import WriteError
from jumok.training.train import train


def test_a_regular_file_is_replaced_and_keeps_its_mode(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    out.chmod(0o644)
    write_output(out, "new\n", "--output")
    assert out.read_text() == "new\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left


def test_a_new_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_output(tmp_path / "new.txt", "x\n", "--output")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to("real.txt")
    write_output(link, "new\n", "--output")
    assert link.is_symlink() and os.readlink(link) == "real.txt"
    assert target.read_text() == "new\n"


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to("later.txt")
    write_output(link, "x\n", "--output")
    assert link.is_symlink() and (tmp_path / "later.txt").read_text() == "x\n"


def test_a_fifo_is_written_as_a_stream(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_output(fifo, "through the pipe\n", "--output")
    reader.join(timeout=10)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_device_node_is_written_not_replaced(tmp_path):
    """A private copy of /dev/null (the same device numbers): as root, a rename over the real
    one would replace the system's /dev/null."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    write_output(null, "gone\n", "--output")
    assert stat.S_ISCHR(null.stat().st_mode)
    assert null.stat().st_rdev == os.makedev(1, 3)


def test_a_directory_or_a_missing_folder_is_refused_before_the_work(tmp_path):
    with pytest.raises(WriteError, match="is a directory"):
        check_output(tmp_path, "--output")
    with pytest.raises(WriteError, match="does not exist"):
        check_output(tmp_path / "no" / "out.txt", "--output")
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(WriteError, match="cannot follow the link"):
        check_output(loop, "--output")


def test_partial_writes_are_completed(monkeypatch, tmp_path):
    """os.write may write less than asked (a pipe, unbuffered output): the rest follows."""
    sizes = []
    real_write = os.write

    def short_write(fd, data):
        sizes.append(len(data))
        return real_write(fd, bytes(data[:1000]))

    monkeypatch.setattr(outputs.os, "write", short_write)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    payload = "".join(f"line {i}\n" for i in range(2000))
    write_output(fifo, payload, "--output")
    reader.join(timeout=10)
    assert received == [payload.encode()] and len(sizes) > 10


def test_make_output_dir_takes_back_what_it_made(tmp_path):
    top = make_output_dir(tmp_path / "a" / "b" / "c", "--out")
    assert top == tmp_path / "a" and (tmp_path / "a" / "b" / "c").is_dir()
    remove_if_empty(top)
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot create the folder"):
        make_output_dir(tmp_path / "file" / "sub", "--out")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("outputs") / "run"
    train(small_config("train.epochs=1"), run, **QUIET)
    return run


def test_translate_output_through_a_symlink(run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("Jan 2, 2003\n")
    (tmp_path / "real.txt").write_text("")
    (tmp_path / "real.txt").chmod(0o640)
    (tmp_path / "out.txt").symlink_to("real.txt")
    code = main(["translate", str(run), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "out.txt")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out.txt").is_symlink()
    assert len((tmp_path / "real.txt").read_text().splitlines()) == 1
    assert stat.S_IMODE((tmp_path / "real.txt").stat().st_mode) == 0o640


def test_data_check_json_into_a_fifo(tmp_path, capsys):
    from conftest import MATRIX_PAIRS, MATRIX_TINY

    (tmp_path / "tiny.yaml").write_text(MATRIX_TINY)
    (tmp_path / "pairs.tsv").write_text(MATRIX_PAIRS)
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert main(["data", "check", str(tmp_path / "tiny.yaml"), "--json", str(fifo)]) == 0
    reader.join(timeout=10)
    assert received and received[0].startswith(b"{") and stat.S_ISFIFO(fifo.stat().st_mode)


def test_everything_a_run_writes_honours_the_umask(tmp_path):
    """Checkpoints, config, metrics, curve and state were 0600 whatever the umask (mkstemp's
    mode), so another user (a colleague, a server) could not read a run."""
    old = os.umask(0o022)
    try:
        train(small_config("train.epochs=1"), tmp_path / "r", **QUIET)
    finally:
        os.umask(old)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r").rglob("*") if p.is_file()
    }
    assert "best.safetensors" in modes and "resume.state" in modes
    assert set(modes.values()) == {0o644}, modes


def test_an_atomic_replacement_keeps_the_files_mode(tmp_path):
    from jumok.checkpoint import atomic_write_text

    path = tmp_path / "f.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640
