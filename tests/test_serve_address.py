"""Where ``jumok serve`` listens: the address is bound before it is announced, a busy port is one
error line with exit 2, and ``--port 0`` takes any free port and prints it."""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import QUIET, TINY, budget, small_config

from jumok.app.cli import main
from jumok.app.serve import AddressError, bind
from jumok.training.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("address") / "dates"
    train(small_config(*TINY), path, **QUIET)
    return path


@pytest.fixture
def busy_port():
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_busy_port_is_one_error_line_and_exit_2(run_dir, busy_port, capsys):
    assert main(["serve", str(run_dir), "--port", str(busy_port)]) == 2
    out, err = capsys.readouterr()
    assert err == f"jumok: error: port {busy_port} is in use; choose --port\n"
    assert "serving" not in out


def test_bind_names_what_is_wrong_with_the_address(busy_port):
    with pytest.raises(AddressError, match=f"^port {busy_port} is in use; choose --port$"):
        bind("127.0.0.1", busy_port)
    with pytest.raises(AddressError, match="^--host 203.0.113.9: cannot listen there"):
        bind("203.0.113.9", 0)  # TEST-NET-3: an address of no interface here
    with bind("127.0.0.1", 0) as sock:  # port 0: the system picks one
        assert sock.getsockname()[1] != 0


def _first_line(process: subprocess.Popen, seconds: float) -> str:
    """The first line ``process`` prints, within ``seconds``."""
    ready, _, _ = select.select([process.stdout], [], [], budget(seconds))
    assert ready, "jumok serve printed nothing"
    return process.stdout.readline()


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow
def test_port_0_serves_on_a_free_port_and_prints_it(run_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "jumok", "serve", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = _first_line(process, 60)
        found = re.fullmatch(
            r"jumok: serving dates on http://127\.0\.0\.1:(\d+)/ \(API docs at /docs\)\n", line
        )
        assert found, line
        port = int(found[1])
        assert port != 0
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + budget(30)
        while True:  # bound and listening already; answered once the app has started
            try:
                assert _get(f"{base}/health") == (200, b'{"status":"ok"}')
                break
            except OSError:
                assert time.monotonic() < deadline, "no answer on the printed port"
                time.sleep(0.1)
        # the Host check knows the names of the address, whatever port was picked
        assert _get(f"{base}/health", host=f"localhost:{port}")[0] == 200
        status, body = _get(f"{base}/health", host="evil.example")
        assert status == 400 and b"not a name of this server" in body
    finally:
        process.terminate()
        process.wait(timeout=20)
