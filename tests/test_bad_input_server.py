"""The bad-input matrix of ``jumok serve`` (issue 26, items 4, 6 and 9): each hostile request
gets its HTTP status and one JSON message naming the field or header at fault, and leaves every
file of the served run as it was. Then what keeps one request or client from exhausting the
server: the cost budget, attention built only when asked, a timed-out decode that stops,
readiness that reports a degraded server, and (in a real uvicorn) the connection timeouts and
cap."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from conftest import budget, digest
from fastapi.testclient import TestClient

import jumok
from jumok.app.guards import allowed_hosts, host_of
from jumok.app.serve import ServeConfig, create_app, server_config
from jumok.decoding.stop import DecodingStopped

DATE = "september 27, 1994"
BIG_TEXT = ("september 27, 1994 " * 60)[:1000]  # the largest text the server takes
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def translator(matrix_run):
    return jumok.load(matrix_run)


@pytest.fixture(scope="module")
def client(translator):
    with TestClient(create_app({"run": translator}, ServeConfig())) as c:
        yield c


def refused(response, status: int, field: str | None, *says: str) -> dict:
    """The response is ``status`` with one JSON :class:`ErrorResponse` naming ``field`` and
    holding every fragment of ``says``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"detail", "field"}, body
    assert body["field"] == field, body
    for fragment in says:
        assert fragment in body["detail"], body
    return body


# --------------------------------------------------------------------------- the matrix
@dataclass
class Case:
    name: str
    body: bytes
    status: int
    field: str
    says: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def raw(text: str) -> bytes:
    return text.encode()


CASES = [
    # item 6: JSON numbers Python reads but JSON does not have
    Case("alpha Infinity", raw(f'{{"texts": ["{DATE}"], "beam": 2, "alpha": Infinity}}'), 422,
         "alpha", ("Infinity", "finite")),
    Case("coverage_penalty NaN", raw(f'{{"texts": ["{DATE}"], "coverage_penalty": NaN}}'), 422,
         "coverage_penalty", ("NaN", "finite")),
    Case("temperature -Infinity", raw(f'{{"texts": ["{DATE}"], "temperature": -Infinity}}'),
         422, "temperature", ("-Infinity",)),
    Case("alpha 1e999 overflows", raw(f'{{"texts": ["{DATE}"], "alpha": 1e999}}'), 422, "alpha",
         ("finite",)),
    # item 6: values that crashed sampling (a plain-text 500 before)
    Case("temperature 1e-45", raw(f'{{"texts": ["{DATE}"], "sample": true, '
         '"temperature": 1e-45}'), 422, "temperature", ("temperature",)),
    Case("seed 2**70", raw(f'{{"texts": ["{DATE}"], "sample": true, "seed": {2**70}}}'), 422,
         "seed", ("seed",)),
    # item 9: bodies that are not JSON, each named
    Case("deep nesting", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 422, "body",
         ("nested",)),
    Case("nesting the parser takes", b'{"texts": ' + b"[" * 100 + b"]" * 100 + b"}", 422,
         "body", ("nested more than 32",)),
    Case("invalid UTF-8", b'{"texts": ["\xff\xfe sept"]}', 422, "body", ("UTF-8", "byte 12")),
    Case("invalid JSON", b'{"texts": [', 422, "body", ("invalid JSON",)),
    Case("text/plain", raw(f'{{"texts": ["{DATE}"]}}'), 415, "Content-Type",
         ("text/plain", "application/json"), {"content-type": "text/plain"}),
    Case("curl's form default", raw(f'{{"texts": ["{DATE}"]}}'), 415, "Content-Type",
         ("x-www-form-urlencoded",), {"content-type": "application/x-www-form-urlencoded"}),
    Case("no Content-Type", raw(f'{{"texts": ["{DATE}"]}}'), 415, "Content-Type", ("missing",),
         {}),
    # item 4: DNS rebinding
    Case("foreign Host", raw(f'{{"texts": ["{DATE}"]}}'), 400, "Host",
         ("evil.example", "localhost", "--allowed-hosts"), {**JSON, "host": "evil.example"}),
    Case("Host with a user part", raw(f'{{"texts": ["{DATE}"]}}'), 400, "Host",
         ("evil@127.0.0.1",), {**JSON, "host": "evil@127.0.0.1"}),
    Case("empty Host", raw(f'{{"texts": ["{DATE}"]}}'), 400, "Host", ("missing",),
         {**JSON, "host": ""}),
    # item 4: one request within the other limits that would exhaust the server
    Case("the issue's 36.9 MB request",
         json.dumps({"texts": [BIG_TEXT], "beam": 16, "n_best": 16, "max_length": 400,
                     "attention": True}).encode(), 413, "texts",
         ("6,400,000", "beam 16", "max_length 400", "1,000 source tokens", "--max-request-cost")),
    Case("16 such texts", json.dumps({"texts": [BIG_TEXT] * 16, "beam": 16, "n_best": 16,
                                      "max_length": 400}).encode(), 413, "texts",
         ("102,400,000", "16 text(s)")),
    Case("16 samples of one text", json.dumps({"texts": [BIG_TEXT], "sample": True,
                                               "n_best": 16, "max_length": 400}).encode(), 413,
         "texts", ("n_best 16",)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_hostile_request_is_refused_by_name_and_changes_nothing(case, client, matrix_run):
    before = digest(matrix_run)
    response = client.post("/v1/translate", content=case.body, headers=case.headers)
    refused(response, case.status, case.field, *case.says)
    assert digest(matrix_run) == before
    assert client.get("/ready").status_code == 200


def test_the_cost_budget_admits_a_full_text_at_beam_5(client):
    body = {"texts": [BIG_TEXT], "beam": 5, "max_length": 400, "attention": True}
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["hypotheses"][0]["attention"]


# ------------------------------------------------------------------------------- hosts
def test_the_host_names_a_server_accepts():
    assert allowed_hosts("127.0.0.1", "") == ["127.0.0.1", "localhost", "::1"]
    assert allowed_hosts("::1", "api.example.com") == [
        "api.example.com",
        "127.0.0.1",
        "localhost",
        "::1",
    ]
    assert allowed_hosts("0.0.0.0", "") is None  # every interface: any Host
    assert allowed_hosts("0.0.0.0", "api.example.com, *.example.org") == [
        "api.example.com",
        "*.example.org",
    ]
    assert allowed_hosts("192.168.1.5", "") == ["192.168.1.5"]
    assert allowed_hosts("127.0.0.1", "*") is None
    assert host_of("LOCALHOST:8000") == "localhost"
    assert host_of("[::1]:8000") == "::1"
    assert host_of("evil@127.0.0.1") is None
    assert host_of("127.0.0.1:80/x") is None


@pytest.mark.parametrize(
    ("config", "host", "status"),
    [
        ({}, "127.0.0.1:8000", 200),
        ({}, "localhost", 200),
        ({}, "[::1]:8000", 200),
        ({}, "api.example.com", 400),
        ({"allowed_hosts": "api.example.com"}, "api.example.com:443", 200),
        ({"allowed_hosts": "*.example.com"}, "api.example.com", 200),
        ({"allowed_hosts": "*.example.com"}, "example.com.evil", 400),
        ({"host": "0.0.0.0"}, "anything.example", 200),
        ({"host": "0.0.0.0", "allowed_hosts": "api.example.com"}, "other.example", 400),
    ],
)
def test_the_host_check(translator, config, host, status):
    with TestClient(create_app({"run": translator}, ServeConfig(**config))) as c:
        response = c.get("/health", headers={"host": host})
    assert response.status_code == status, response.text
    if status == 400:
        refused(response, 400, "Host", host)


# --------------------------------------------------------------------- attention on demand
def test_attention_lists_are_built_only_when_asked(translator, client):
    texts = [DATE, "Jan 2, 2003"]
    plain = translator.translate(texts, beam=3, n_best=2, attention=False)
    full = translator.translate(texts, beam=3, n_best=2)
    for a, b in zip(plain, full, strict=True):
        assert a.attention is None and all(c.attention is None for c in a.hypotheses)
        assert [c.text for c in a.hypotheses] == [c.text for c in b.hypotheses]
        assert [c.score for c in a.hypotheses] == [c.score for c in b.hypotheses]
        assert all(c.attention for c in b.hypotheses)
    body = client.post("/v1/translate", json={"texts": texts, "beam": 3, "n_best": 2}).json()
    assert all(h["attention"] is None for r in body["results"] for h in r["hypotheses"])


# --------------------------------------------------------------------- stopping a decode
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"beam": 4, "min_length": 5},  # this model's beam otherwise ends at once, empty
        {"beam": 4, "min_length": 5, "no_repeat_ngram": 2},
        {"sample": True, "n_best": 3},
    ],
    ids=["greedy", "beam", "beam, whole batches", "sampling"],
)
def test_every_search_stops_when_asked(translator, options):
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(DecodingStopped):
        translator.translate([DATE] * 4, should_stop=should_stop, **options)
    assert len(asked) == 3  # asked once per step; stopped at the first True


@pytest.mark.timing
def test_a_request_that_times_out_stops_decoding(translator):
    """The issue's 16 texts at beam 16 kept decoding for minutes after their 408: now the
    decode stops at its next step."""
    limits = ServeConfig(max_decode_seconds=0.5, max_request_cost=10**9)
    ended: dict[str, float | BaseException] = {}
    translate = translator.translate

    def recording(*args, **kwargs):
        try:
            return translate(*args, **kwargs)
        except BaseException as err:
            ended["error"] = err
            raise
        finally:
            ended["at"] = time.monotonic()

    body = {"texts": [BIG_TEXT] * 16, "beam": 16, "n_best": 16, "max_length": 400}
    translator.translate = recording
    try:
        with TestClient(create_app({"run": translator}, limits)) as c:
            response = c.post("/v1/translate", json=body)
            answered = time.monotonic()
            refused(response, 408, "texts", "--max-decode-seconds")
            while "at" not in ended and time.monotonic() < answered + budget(30):
                time.sleep(0.01)
            assert c.get("/ready").status_code == 200
    finally:
        del translator.translate
    assert isinstance(ended.get("error"), DecodingStopped), ended
    assert ended["at"] - answered < budget(1.0)  # not the ~30 s the whole decode takes


# ---------------------------------------------------------------- degraded -> not ready
@contextmanager
def failing(translator, error: BaseException | None = None, gate: threading.Event | None = None):
    """``translator.translate`` raises ``error``, or first waits for ``gate``."""

    def broken(*args, **kwargs):
        if gate is not None:
            gate.wait(timeout=30)
        if error is not None:
            raise error
        return translate(*args, **kwargs)

    translate = translator.translate
    translator.translate = broken
    try:
        yield
    finally:
        del translator.translate


def test_a_failing_decode_is_a_json_500_and_memory_errors_make_it_not_ready(translator):
    with TestClient(create_app({"run": translator}, ServeConfig())) as c:
        with failing(translator, MemoryError("no memory for the attention")):
            response = c.post("/v1/translate", json={"texts": [DATE]})
            refused(response, 500, None, "MemoryError", "logged")
            ready = c.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert "MemoryError" in ready.json()["reasons"][0], ready.json()
        assert c.post("/v1/translate", json={"texts": [DATE]}).status_code == 200
        assert c.get("/ready").json() == {"ready": True, "models": ["run"], "reasons": []}


def test_three_failures_in_a_row_make_it_not_ready(translator):
    with TestClient(create_app({"run": translator}, ServeConfig())) as c:
        with failing(translator, RuntimeError("a bug")):
            for attempt in range(3):
                assert c.get("/ready").status_code == 200, attempt
                refused(c.post("/v1/translate", json={"texts": [DATE]}), 500, None, "Runtime")
            assert c.get("/ready").json()["reasons"] == [
                "run: the last 3 decode(s) failed (RuntimeError: a bug)"
            ]
        assert c.post("/v1/translate", json={"texts": [DATE]}).status_code == 200
        assert c.get("/ready").status_code == 200


def test_a_stuck_decode_makes_it_not_ready_until_it_ends(translator):
    gate = threading.Event()
    with TestClient(create_app({"run": translator}, ServeConfig(max_decode_seconds=0.2))) as c:
        with failing(translator, gate=gate):
            refused(c.post("/v1/translate", json={"texts": [DATE]}), 408, "texts")
            time.sleep(0.3)  # the decode has now run past twice --max-decode-seconds
            ready = c.get("/ready")
            assert ready.status_code == 503
            assert "run: one decode has run" in ready.json()["reasons"][0]
            gate.set()
            deadline = time.monotonic() + budget(5)
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, c.get("/ready").json()
                time.sleep(0.02)


# ------------------------------------------------------------- connections (real uvicorn)
@contextmanager
def real_server(translator, **limits) -> Iterator[int]:
    """``jumok serve``'s uvicorn, with ``limits``, in a thread on a free port."""
    import uvicorn

    config = ServeConfig(**limits)
    server = uvicorn.Server(server_config(create_app({"run": translator}, config), config, "error"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + budget(10)
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def closed_within(s: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sent before closing ``s``, and how long that took."""
    start, got = time.monotonic(), b""
    s.settimeout(seconds)
    while chunk := s.recv(65536):
        got += chunk
    return got, time.monotonic() - start


def read_response(s: socket.socket, seconds: float) -> bytes:
    """One whole response (head and content-length body) from ``s``, leaving it open."""
    s.settimeout(seconds)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def trickled_until_closed(s: socket.socket, seconds: float) -> float:
    """Send a request's headers a byte every 50 ms until the server closes ``s``: how long
    that took (``seconds`` at most)."""
    start = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    while time.monotonic() - start < seconds:
        if select.select([s], [], [], 0.05)[0] and s.recv(1) == b"":
            break
        try:
            s.sendall(b"a")
        except OSError:
            break
    return time.monotonic() - start


def request_head(length: int, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST /v1/translate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.slow
@pytest.mark.timing
def test_idle_slow_and_kept_alive_connections_are_closed(translator):
    with real_server(translator, read_timeout_seconds=0.5, keep_alive_seconds=0.3) as port:
        with socket.create_connection(("127.0.0.1", port)) as idle:  # connects, sends nothing
            got, took = closed_within(idle, budget(5))
            assert got == b"" and 0.4 < took < budget(2)

        with socket.create_connection(("127.0.0.1", port)) as trickle:  # a header, byte by byte
            assert 0.4 < trickled_until_closed(trickle, budget(5)) < budget(2)

        body = json.dumps({"texts": [DATE]}).encode()
        with socket.create_connection(("127.0.0.1", port)) as slow_body:
            slow_body.sendall(request_head(len(body)) + body[:5])
            got, took = closed_within(slow_body, budget(5))
            assert got.startswith(b"HTTP/1.1 408"), got
            detail = json.loads(got.split(b"\r\n\r\n", 1)[1])
            assert detail["field"] == "body" and "--read-timeout-seconds" in detail["detail"]

        with socket.create_connection(("127.0.0.1", port)) as kept:  # one request, then idle
            kept.sendall(request_head(len(body)) + body)
            assert read_response(kept, budget(10)).startswith(b"HTTP/1.1 200")
            got, took = closed_within(kept, budget(5))
            assert got == b"" and took < budget(1)


@pytest.mark.slow
def test_the_connection_cap_and_the_host_check_in_a_real_server(translator):
    body = json.dumps({"texts": [DATE]}).encode()
    with real_server(translator, max_connections=3, read_timeout_seconds=30) as port:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request_head(len(body), host="evil.example") + body)
            got = read_response(s, budget(10))
            assert got.startswith(b"HTTP/1.1 400"), got
            assert b'"field":"Host"' in got
        holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request_head(len(body)) + body)
                assert read_response(s, budget(10)).startswith(b"HTTP/1.1 503")
        finally:
            for h in holders:
                h.close()
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request_head(len(body)) + body)
            assert read_response(s, budget(10)).startswith(b"HTTP/1.1 200")
