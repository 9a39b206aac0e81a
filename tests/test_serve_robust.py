"""A real `jumok serve` process keeps serving when clients misbehave: a client that disconnects
mid-body or mid-decode, and a client that sends its body slowly, do not stop anyone else."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from conftest import QUIET, ServeProcess, budget, small_config

from jumok.training.train import train


def translate(base: str, texts: list[str], timeout: float = 30, **options) -> dict:
    request = urllib.request.Request(
        f"{base}/v1/translate",
        data=json.dumps({"texts": texts, **options}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tmp_path_factory.mktemp("robust") / "dates"
    train(small_config("train.epochs=1"), run, **QUIET)
    served = ServeProcess(run, tmp_path_factory.getbasetemp() / "serve-robust.log")
    yield served.base, served.port, served.process
    served.stop()
    assert "Traceback" not in served.log()


def raw_request(body: bytes, declared: int | None = None) -> bytes:
    head = (
        "POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if declared is None else declared}\r\n\r\n"
    )
    return head.encode() + body


def test_clients_that_hang_up_do_not_hurt_the_others(server):
    base, port, process = server
    body = json.dumps({"texts": ["september 27, 1994"] * 16, "beam": 3}).encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as s:  # hangs up mid-body
            s.sendall(raw_request(body[:20], declared=len(body)))
        with socket.create_connection(("127.0.0.1", port)) as s:  # hangs up mid-decode
            s.sendall(raw_request(body))
            time.sleep(0.01)
    result = translate(base, ["Jan 2, 2003"])
    assert len(result["results"]) == 1
    assert process.poll() is None


@pytest.mark.timing
def test_a_slow_sender_does_not_block_other_requests(server):
    base, port, _ = server
    body = json.dumps({"texts": ["TUESDAY, MARCH 5, 1991"]}).encode()
    slow: dict[str, object] = {}

    def slow_client():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(raw_request(b"", declared=len(body)))
            for i in range(0, len(body), 2):  # two bytes every 100 ms (x the factor): over 2 s
                s.sendall(body[i : i + 2])
                time.sleep(budget(0.1))
            slow["sent"] = time.monotonic()
            s.settimeout(budget(30))
            slow["answer"] = s.recv(65536)

    thread = threading.Thread(target=slow_client)
    thread.start()
    time.sleep(0.2)
    for _ in range(3):
        translate(base, ["Jan 2, 2003"], timeout=budget(10))
    quick_done = time.monotonic()
    thread.join(timeout=budget(60))
    assert slow["answer"].startswith(b"HTTP/1.1 200"), slow
    assert quick_done < slow["sent"]  # answered while the slow body was still arriving
