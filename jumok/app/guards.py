"""What ``jumok serve`` refuses before a request reaches a route, each answered with an
:class:`~jumok.app.schemas.ErrorResponse` that names the field or header at fault.

- :class:`HostCheck`: a ``Host`` header that is not a name of the bound address (400), the
  defence against DNS rebinding: a web page on ``evil.example``, re-pointed at 127.0.0.1, may
  make the browser call this server, but with ``Host: evil.example``;
- :class:`BodyLimit`: a body over ``--max-body-bytes`` (413) or slower than
  ``--read-timeout-seconds`` (408);
- :class:`JsonRoute`: a route whose body must be JSON, read strictly: the wrong
  ``Content-Type`` (415), invalid UTF-8, nesting past Python's recursion limit, ``NaN`` or
  ``Infinity`` (422), each named;
- :class:`TimedH11Protocol`: uvicorn's HTTP/1.1 protocol with a deadline for a request's
  headers, so that a client that connects and sends nothing, or one byte a second, does not
  hold its connection for ever.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from uvicorn.protocols.http.h11_impl import H11Protocol

from jumok.app.schemas import ErrorResponse


class ApiError(Exception):
    """A refused request: its HTTP status and the :class:`ErrorResponse` it is answered with."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


async def send_error(send, status: int, detail: str, field: str | None, close: bool = False):
    """Answer a raw ASGI request with an :class:`ErrorResponse`; ``close`` ends the
    connection after it (the rest of the request is not read)."""
    body = ErrorResponse(detail=detail, field=field).model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------- hosts
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def allowed_hosts(bound: str, extra: str) -> list[str] | None:
    """The host names a request may address: those of the ``bound`` address (all three
    loopback names for a loopback one) and the comma-separated ``extra`` names; None (any)
    for a server bound to every interface with no ``extra``, or with ``*`` among them."""
    names = [n.strip().lower().strip("[]") for n in extra.split(",") if n.strip()]
    if "*" in names or (bound in ANY_ADDRESS and not names):
        return None
    if bound in LOOPBACK_NAMES:
        names += LOOPBACK_NAMES
    elif bound not in ANY_ADDRESS:
        names.append(bound.lower().strip("[]"))
    return list(dict.fromkeys(names))


HOST_HEADER = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[^\[\]:/@\s]+)(:[0-9]{1,5})?", re.IGNORECASE)


def host_of(header: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lowercase and
    without brackets; None when the header is not one of these."""
    match = HOST_HEADER.fullmatch(header)
    return match["name"].strip("[]").lower() if match else None


def _shown(name: str) -> str:
    return f"[{name}]" if ":" in name else name


class HostCheck:
    """ASGI middleware: 400 for a request whose ``Host`` header names none of ``allowed``.

    A ``Host`` naming the address the request reached (``scope["server"]``) is also accepted:
    a client that connects to an address by number cannot be a rebinding attack. Patterns are
    exact names or ``*.example.com``.
    """

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        host = host_of(header)
        server = (scope.get("server") or ("",))[0]
        if host is not None and (host == server or self._matches(host)):
            return await self.app(scope, receive, send)
        expected = ", ".join(_shown(name) for name in self.allowed)
        detail = (
            f"Host: {header!r} is not a name of this server; expected one of {expected} "
            "(any port; add names with --allowed-hosts)"
            if header
            else f"Host: the header is missing; expected one of {expected}"
        )
        await send_error(send, 400, detail, "Host", close=True)

    def _matches(self, host: str) -> bool:
        return any(
            host == name or (name.startswith("*.") and host.endswith(name[1:]))
            for name in self.allowed
        )


# -------------------------------------------------------------------------------------- body
class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, declared or as it arrives, and 408
    for a body that takes longer than ``timeout`` seconds to arrive.

    The body is read here (it is small: at most ``limit``) and replayed to the app, so a
    chunked upload without a content-length is cut off at the limit too, and a client that
    sends a byte a second holds its connection for ``timeout`` seconds, not for ever.
    """

    def __init__(self, app, limit: int, timeout: float = math.inf):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_error(send, 413, self._too_large(int(declared)), "body", close=True)
        try:
            async with asyncio.timeout(None if math.isinf(self.timeout) else self.timeout):
                body = await self._read(receive)
        except TimeoutError:
            detail = (
                f"body: not received within {self.timeout:g} s (--read-timeout-seconds); "
                "send the whole body at once"
            )
            return await send_error(send, 408, detail, "body", close=True)
        if body is None:  # the client went away
            return
        if len(body) > self.limit:
            return await send_error(send, 413, self._too_large(len(body)), "body", close=True)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive) -> bytes | None:
        """The body, stopping once it is past the limit; None if the client disconnects."""
        body, more = b"", True
        while more and len(body) <= self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return body

    def _too_large(self, size: int) -> str:
        return (
            f"body: {size} bytes or more; this server takes at most {self.limit} bytes "
            "(--max-body-bytes)"
        )


# -------------------------------------------------------------------------------------- JSON
JSON_EXAMPLE = '{"texts": ["a sentence"]}'


def read_json(content_type: str | None, body: bytes) -> Any:
    """A request body as JSON, or an :class:`ApiError` that names what is wrong.

    Stricter than ``json.loads``: the body must say it is JSON and be UTF-8 (RFC 8259), and
    ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``), which Python reads
    but JSON does not have, are refused with the field they were given for.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        got = repr(content_type) if content_type else "missing"
        raise ApiError(
            415,
            f"Content-Type: {got}; expected application/json (curl: -H 'content-type: "
            "application/json')",
            "Content-Type",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(
            422, f"body: invalid UTF-8 at byte {err.start}; expected JSON text in UTF-8", "body"
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(
            422,
            f"body: invalid JSON at character {err.pos} ({err.msg}); expected an object like "
            f"{JSON_EXAMPLE}",
            "body",
        ) from None
    except RecursionError:  # deeper than Python's recursion limit (about 1,000)
        raise ApiError(422, _too_deep(), "body") from None
    for path, item in _walk(value):
        if len(path) > MAX_DEPTH:
            raise ApiError(422, _too_deep(), "body")
        if isinstance(item, float) and not math.isfinite(item):
            field = field_name(path)
            token = "NaN" if math.isnan(item) else ("-" if item < 0 else "") + "Infinity"
            raise ApiError(
                422, f"{field}: got {token}; expected a finite number (JSON has no {token})", field
            )
    return value


MAX_DEPTH = 32  # a request is an object of lists of strings: depth 2


def _too_deep() -> str:
    return f"body: JSON nested more than {MAX_DEPTH} deep; expected an object like {JSON_EXAMPLE}"


def _walk(value: Any) -> Iterator[tuple[tuple, Any]]:
    """Every value inside ``value`` with its path, parents first (a loop, not recursion: the
    body may be nested as deep as the JSON parser allows)."""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if isinstance(item, dict):
            stack.extend(((*path, key), child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))


def field_name(path: tuple) -> str:
    """A location in the body as a request field name: ``("texts", 2)`` -> ``texts[2]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.removeprefix(".") or "body"


class JsonRequest(Request):
    """A request whose :meth:`json` is :func:`read_json`'s (read once, then kept)."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = read_json(self.headers.get("content-type"), await self.body())
        return self._strict_json


class JsonRoute(APIRoute):
    """A route that reads its JSON body with :func:`read_json` before FastAPI does, so that a
    body that is not JSON is refused by an :class:`ApiError` naming what is wrong (FastAPI
    answers some of these with a generic 400 and a wrong Content-Type with a 422 about the
    body). FastAPI's "Custom Request and APIRoute class" pattern."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request):
            request = JsonRequest(request.scope, request.receive)
            await request.json()  # raises ApiError here, outside FastAPI's own parsing
            return await handler(request)

        return strict


# ------------------------------------------------------------------------------- connections
class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline of ``read_timeout`` seconds for each
    request's headers: from the moment the client connects, or from the end of the previous
    response on a kept-alive connection. A connection that misses it is closed.

    uvicorn times a connection only while it idles after a response (``timeout_keep_alive``),
    and any byte resets that: a client that connects and sends nothing, or sends its headers
    one byte at a time, holds its socket for ever. A request under way is never cut here; its
    body has its own deadline (:class:`BodyLimit`). Uses one attribute of uvicorn's protocol,
    ``cycle`` (the request under way); ``tests/test_bad_input_server.py`` runs it in a real
    uvicorn.
    """

    read_timeout = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # these bytes completed a request's headers
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        if self.cycle is before:  # no pipelined request started: wait for the next one
            self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        under_way = self.cycle is not None and not self.cycle.response_complete
        if not under_way and not self.transport.is_closing():
            self.transport.close()

    @classmethod
    def with_timeout(cls, seconds: float) -> type[TimedH11Protocol]:
        """This protocol with ``read_timeout`` set (uvicorn takes a class, and makes one
        instance per connection)."""
        return type(cls.__name__, (cls,), {"read_timeout": seconds})
