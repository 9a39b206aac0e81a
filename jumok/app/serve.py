"""A REST API and a web page over :meth:`jumok.decoding.translator.Translator.translate`.

``jumok serve RUN_DIR …`` loads each run once, puts a :class:`~jumok.app.batcher.DynamicBatcher` in
front of it, and serves:

- ``POST /v1/translate``: texts in, per text the n-best hypotheses (text, scores, tokens and,
  when asked, the attention matrix with its source and output tokens);
- ``GET /v1/models``, ``GET /health`` (alive), ``GET /ready`` (models loaded, batchers running,
  decodes neither failing nor stuck);
- ``GET /``: a page to type a sentence and look at the attention of each hypothesis;
- ``GET /docs``: the OpenAPI documentation.

The server is a thin layer: every decoding option is a ``decode.*`` field of the run's config
(the request schema, in :mod:`jumok.app.schemas`, is built from :class:`jumok.config.DecodeConfig`,
so it cannot drift), and the decoding is exactly ``jumok.load(RUN_DIR).translate(...)``. Models
come only from the paths given at start-up; a request can choose one by name, never by path.

The routes are module-level handlers on :data:`router`; :func:`create_app` wires them to the
models, whose state they reach through ``request.app.state`` (``served``, ``config``, ``default``).
What is refused before a route runs (Host, body size and speed, JSON) is in
:mod:`jumok.app.guards`.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.resources
import logging
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from jumok.app import serve_replies
from jumok.app.batcher import DynamicBatcher, QueueFull
from jumok.app.guards import (
    ApiError,
    BodyLimit,
    HostCheck,
    JsonRoute,
    TimedH11Protocol,
    allowed_hosts,
    field_name,
)
from jumok.app.limits import check_cost, check_prefix, check_texts, decode_options
from jumok.app.schemas import (
    SERVER_OWNED,
    ErrorResponse,
    Health,
    HypothesisOut,
    ModelInfo,
    ModelList,
    Ready,
    Result,
    ServeConfig,
    TranslateRequest,
    TranslateResponse,
)
from jumok.config import DecodeConfig
from jumok.decoding.translator import Translation, Translator
from jumok.errors import ConfigError, DataError, JumokError, RunDirError

log = logging.getLogger("jumok.serve")


# ---------------------------------------------------------------------------- served models
def _decoder(translator: Translator):
    """The batcher's decode function: ``translator.translate`` of (text, prefix) pairs (each
    text its own prefix) with a request's options and whether it wants the attention (the batch
    key), stopped when every caller has gone."""

    def decode(items: list[tuple[str, str | None]], key: tuple[DecodeConfig, bool], should_stop):
        (options, attention), (texts, prefixes) = key, zip(*items, strict=True)
        run = {"attention": attention, "should_stop": should_stop, "prefix": prefixes}
        with warnings.catch_warnings():  # unknown characters are reported per result instead
            warnings.simplefilter("ignore")
            return translator.translate(list(texts), **run, **options.model_dump())

    return decode


# Not ready after this many internal decode failures in a row (one MemoryError is enough),
# until a decode succeeds or this many seconds pass without another failure.
FAILURES_BEFORE_UNREADY = 3
RECOVERY_SECONDS = 30.0


@dataclass
class DecodeHealth:
    """A model's internal decode failures (a bug, or memory running out), for ``GET /ready``.

    A request that is refused (4xx) is not a failure. Each failure is logged as one line; the
    traceback only the first time its exception type is seen, so a failing server cannot fill
    its log with them.
    """

    failures: int = 0  # in a row
    out_of_memory: bool = False
    last_error: str = ""
    last_failure: float = 0.0
    logged: set[str] = field(default_factory=set)

    def failed(self, name: str, err: BaseException) -> None:
        self.failures += 1
        self.out_of_memory = isinstance(err, MemoryError)
        self.last_error = f"{type(err).__name__}: {err}"[:200]
        self.last_failure = time.monotonic()
        first = type(err).__name__ not in self.logged
        self.logged.add(type(err).__name__)
        log.error("%s: decoding failed: %s", name, self.last_error, exc_info=err if first else None)

    def succeeded(self) -> None:
        self.failures, self.out_of_memory = 0, False

    def problem(self) -> str | None:
        """Why the model is degraded, or None."""
        if time.monotonic() - self.last_failure > RECOVERY_SECONDS:
            return None
        if self.out_of_memory or self.failures >= FAILURES_BEFORE_UNREADY:
            return f"the last {self.failures} decode(s) failed ({self.last_error})"
        return None


@dataclass
class Served:
    """A loaded model and the batcher in front of it."""

    name: str
    translator: Translator
    batcher: DynamicBatcher[Translation]
    health: DecodeHealth = field(default_factory=DecodeHealth)

    @classmethod
    def create(cls, name: str, translator: Translator, config: ServeConfig) -> Served:
        """``translator`` behind a new batcher with the server's batching settings."""
        batcher = DynamicBatcher(
            _decoder(translator),
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            enabled=config.batching,
        )
        return cls(name, translator, batcher)

    def info(self) -> ModelInfo:
        """What ``GET /v1/models`` says about this model."""
        t, cfg = self.translator, self.translator.config
        enc, dec = cfg.model.encoder, cfg.model.decoder
        return ModelInfo(
            name=self.name,
            checkpoint=str(t.source or ""),
            attention=cfg.model.attention,
            encoder=f"{'bi' if enc.bidirectional else ''}{enc.rnn.upper()} "
            f"{enc.num_layers}x{enc.hidden_size}, embeddings {enc.embedding_size}",
            decoder=f"{dec.rnn.upper()} {dec.num_layers}x{dec.hidden_size}"
            + (", input feeding" if dec.input_feeding else "")
            + (", peeky" if dec.peeky else ""),
            tokenizer=cfg.data.tokenizer.kind,
            source_vocab_size=len(t.src_vocab),
            target_vocab_size=len(t.tgt_vocab),
            reverse_source=cfg.data.reverse_source,
            parameters=sum(p.numel() for p in t.model.parameters()),
            decode=cfg.decode.model_dump(exclude=SERVER_OWNED),
            batches=self.batcher.stats.batches,
            requests=self.batcher.stats.requests,
        )

    def problems(self, limits: ServeConfig) -> list[str]:
        """Why this model cannot serve now: its batcher stopped, its decodes fail, or a
        decode or the queue is stuck (past twice --max-decode-seconds: a decode whose callers
        all timed out stops at its next step). Empty when it is ready."""
        stuck = 2 * limits.max_decode_seconds
        found = []
        if not self.batcher.running:
            found.append("its batcher is not running")
        if problem := self.health.problem():
            found.append(problem)
        if self.batcher.busy_seconds > stuck:
            found.append(f"one decode has run {self.batcher.busy_seconds:.1f} s")
        if self.batcher.oldest_wait_seconds > stuck:
            found.append(f"a request has waited {self.batcher.oldest_wait_seconds:.1f} s")
        return [f"{self.name}: {problem}" for problem in found]


def _result(t: Translation, with_attention: bool) -> Result:
    """One input's :class:`Result`, with the attention matrices when ``with_attention``."""
    return Result(
        source=t.source,
        source_tokens=t.source_tokens,
        text=t.text,
        abstained=t.abstained,
        skipped=t.skipped,
        unknown=t.unknown,
        hypotheses=[
            HypothesisOut(
                text=c.text,
                score=c.score,
                normalized_score=c.normalized_score,
                confidence=c.confidence,
                tokens=c.tokens,
                token_logprobs=c.token_logprobs,
                finished=c.finished,
                attention=(
                    [[round(w, 5) for w in row] for row in c.attention]
                    if with_attention and c.attention is not None
                    else None
                ),
            )
            for c in t.hypotheses
        ],
    )


# ---------------------------------------------------------------------------------- errors
def _field_of(loc: tuple) -> str:
    """A validation error's location as a request field name: ``("body", "texts", 2)`` ->
    ``texts[2]``."""
    return field_name(tuple(p for p in loc if p != "body"))


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------ error handlers
async def api_error(request: Request, err: ApiError) -> JSONResponse:
    """A refused request (:class:`ApiError`): its status and its :class:`ErrorResponse`."""
    return JSONResponse(
        ErrorResponse(detail=err.detail, field=err.field).model_dump(), status_code=err.status
    )


async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and wrong methods: the same error shape as every other 4xx."""
    return JSONResponse(
        ErrorResponse(detail=str(err.detail), field=None).model_dump(),
        status_code=err.status_code,
        headers=getattr(err, "headers", None),
    )


async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    """A body that does not fit the schema: 422 naming the first field at fault. (A body that
    is not JSON is refused before, by :class:`~jumok.app.guards.JsonRoute`.)"""
    problems = err.errors()
    error = ErrorResponse(
        detail=_describe_problems(problems), field=_field_of(tuple(problems[0].get("loc", ())))
    )
    return JSONResponse(error.model_dump(), 422)


async def internal_error(request: Request, err: Exception) -> JSONResponse:
    """Anything else that went wrong: 500 with the same body shape, never plain text."""
    return JSONResponse(
        ErrorResponse(
            detail=f"internal error ({type(err).__name__}); the server logged it", field=None
        ).model_dump(),
        status_code=500,
    )


def _describe_problems(problems: Sequence[dict[str, Any]]) -> str:
    """The first three validation problems, ``field: message (got value)``, then how many more."""
    detail = "; ".join(
        f"{_field_of(tuple(p.get('loc', ())))}: {p.get('msg', 'invalid')}"
        + (f" (got {_short(p['input'])})" if "input" in p and p.get("type") != "missing" else "")
        for p in problems[:3]
    )
    if len(problems) > 3:
        detail += f"; and {len(problems) - 3} more"
    return detail


# ---------------------------------------------------------------------------------- the routes
# The route handlers carry comments, not docstrings: FastAPI would publish a docstring as the
# operation's description in the OpenAPI schema. They reach the served models through
# request.app.state, which create_app fills: served (name -> Served), default (a name), config.
router = APIRouter(route_class=JsonRoute)

WEB = importlib.resources.files("jumok") / "resources" / "web"
STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}

# The error answers of POST /v1/translate, as the OpenAPI schema lists them.
ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "a Host header that is not a name of this server",
        404: "unknown model name",
        408: "decoding took longer than --max-decode-seconds, or the body arrived too slowly",
        413: "too many texts, a text too long, a body too large, or past --max-request-cost",
        415: "a Content-Type other than application/json",
        422: "a malformed request: the field and what was expected",
        429: "the queue is full; retry later",
        500: "the decoding failed (a bug, or memory ran out); the server logged it",
    }.items()
}


# Alive: answers as soon as the process does.
@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health()


# Ready: every model's batcher runs and none is degraded (503 with the reasons otherwise,
# until start-up ends, after shutdown begins, while decodes fail or one is stuck).
@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "not ready, and why"}},
    summary="Models are loaded, their batchers run, and decodes neither fail nor stick",
)
async def ready(request: Request):
    state = request.app.state
    running = [name for name, s in state.served.items() if s.batcher.running]
    reasons = [r for s in state.served.values() for r in s.problems(state.config)]
    body = Ready(ready=not reasons, models=running, reasons=reasons)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


# The served models, their settings and how much each has decoded.
@router.get("/v1/models", response_model=ModelList, summary="The served models")
async def list_models(request: Request) -> ModelList:
    state = request.app.state
    return ModelList(models=[s.info() for s in state.served.values()], default=state.default)


# Check the request against the server's limits, decode it in a batch, and answer per text.
@router.post(
    "/v1/translate",
    response_model=TranslateResponse,
    responses=ERRORS,
    summary="Translate texts; n-best, scores and attention",
)
async def translate(
    body: TranslateRequest,  # type: ignore[valid-type]
    request: Request,
) -> TranslateResponse:
    started = time.perf_counter()
    state = request.app.state
    name = body.model or state.default
    served = _served_model(state.served, name)
    check_texts(body.texts, served.translator, state.config)
    options = decode_options(body, served.translator, state.config)
    check_cost(body.texts, options, served.translator, state.config)
    prefixes = check_prefix(body, served.translator, options, state.config)
    items = list(zip(body.texts, prefixes, strict=True))
    found = await _decode(served, items, (options, body.attention), state.config)
    return TranslateResponse(
        model=name,
        results=[_result(t, body.attention) for t in found],
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def _served_model(served: Mapping[str, Served], name: str) -> Served:
    """The model a request names; 404 for a name that is not served."""
    if name not in served:
        raise ApiError(
            404, f"model: unknown model {name!r}; expected one of {', '.join(served)}", "model"
        )
    return served[name]


async def _decode(
    served: Served, texts: list, key: tuple[DecodeConfig, bool], limits: ServeConfig
) -> list[Translation]:
    """Decode ``texts`` ((text, prefix) pairs) through the model's batcher with ``key`` (the options, and whether to
    build the attention): 429 when its queue is full, 408 past --max-decode-seconds (the
    decoding then stops), 422 when the decoding refuses the input, 500 when it fails."""
    try:
        found = await asyncio.wait_for(served.batcher.submit(texts, key), limits.max_decode_seconds)
    except QueueFull as err:
        raise ApiError(429, f"texts: the server is busy ({err}); retry later", "texts") from None
    except TimeoutError:
        raise ApiError(
            408,
            f"texts: decoding took longer than {limits.max_decode_seconds:g} s "
            "(--max-decode-seconds); send fewer or shorter texts or a smaller beam",
            "texts",
        ) from None
    except (DataError, ConfigError) as err:
        raise ApiError(422, str(err), "texts") from None
    except Exception as err:  # noqa: BLE001 - a bug or no memory: a JSON 500, counted, logged
        served.health.failed(served.name, err)
        raise ApiError(
            500,
            f"decoding failed ({type(err).__name__}); the server logged it. Retry, or ask for "
            "less (fewer or shorter texts, a smaller beam or max_length)",
        ) from None
    served.health.succeeded()
    return found


# The web page: index.html and its own two files, never a path taken from a request.
@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(str(WEB / "index.html"), media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    if name not in STATIC_TYPES:
        raise ApiError(404, f"static: no file {name!r}", "name")
    return FileResponse(str(WEB / name), media_type=STATIC_TYPES[name])


# ------------------------------------------------------------------------------------ the app
@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start every model's batcher before the first request, and stop them at shutdown."""
    served = app.state.served
    for s in served.values():
        s.batcher.start()
    yield
    for s in served.values():
        await s.batcher.stop()


def create_app(models: Mapping[str, Translator], config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> loaded translator), first one the default."""
    import jumok

    config = config or ServeConfig()
    if not models:
        raise RunDirError("serve: no model given")
    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from files
    # installed with it, not from a CDN (this machine, and many servers, cannot reach one).
    app = FastAPIOffline(
        title="jumok",
        version=jumok.__version__,
        description="Attention-based sequence-to-sequence models: translate, and see what the "
        "model attends to. Every error body is an ErrorResponse naming the field.",
        lifespan=lifespan,
    )
    app.state.served = {name: Served.create(name, t, config) for name, t in models.items()}
    app.state.default = next(iter(models))
    app.state.config = config
    app.state.reply_sets = serve_replies.prepare(models, config)  # --reply-set, calibration
    # The last added runs first: the Host check, then the body's size and speed.
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout=config.read_timeout_seconds)
    hosts = allowed_hosts(config.host, config.allowed_hosts)
    if hosts is not None:
        app.add_middleware(HostCheck, allowed=hosts)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, internal_error)
    app.include_router(router)
    app.include_router(serve_replies.router_for(_result, _served_model))
    return app


# ---------------------------------------------------------------------------------- start-up
def model_names(run_dirs: list[str]) -> dict[str, Path]:
    """``NAME=RUN_DIR`` or ``RUN_DIR`` (named after its folder) -> {name: path}, names unique."""
    named: dict[str, Path] = {}
    for item in run_dirs:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            name = Path(item.rstrip("/")).name
            if name.endswith(".safetensors"):
                name = Path(item).parent.name
        if not name:
            raise RunDirError(f"serve: {item!r}: expected RUN_DIR or NAME=RUN_DIR")
        if name in named:
            raise RunDirError(
                f"serve: two models are named {name!r} ({named[name]} and {path}); name them "
                "apart with NAME=RUN_DIR"
            )
        named[name] = Path(path)
    return named


def load_models(paths: Mapping[str, Path], which: str = "best", device: str = "cpu"):
    """Load each run once, refusing language models (they have no source to translate)."""
    from jumok.decoding.translator import load

    models: dict[str, Translator] = {}
    for name, path in paths.items():
        translator = load(path, which=which, device=device)
        translator.source = str(path)
        if translator.model_type == "lm":
            raise RunDirError(
                f"serve: {path} is a language model (model.type: lm); serve decodes "
                "sequence-to-sequence runs (sample from a language model with jumok generate)"
            )
        translator.prepare()  # its default decoding copy, before the first request
        models[name] = translator
    return models


def server_config(app: FastAPI, config: ServeConfig, log_level: str = "info"):
    """The uvicorn settings for ``app``: the address (for its logs; :func:`run` binds it), the
    access log, and the connection limits (keep-alive, the header deadline of
    :class:`~jumok.app.guards.TimedH11Protocol`, the connection cap)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=config.access_log,
        timeout_keep_alive=config.keep_alive_seconds,
        limit_concurrency=config.max_connections,
        http=TimedH11Protocol.with_timeout(config.read_timeout_seconds),
    )


class AddressError(JumokError):
    """The address ``jumok serve`` was asked to listen on cannot be bound."""


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free one), before anything is announced.

    Binding here rather than inside uvicorn turns a busy port into one :class:`AddressError`
    (exit 2, as every other error) instead of a "serving on ..." line followed by uvicorn's
    failure, and tells the caller which port ``--port 0`` got.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # SO_REUSEADDR, as uvicorn sets it: a restart need not wait out the old connections.
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise AddressError(f"port {port} is in use; choose --port") from None
        if err.errno == errno.EACCES:
            raise AddressError(
                f"port {port}: permission denied (ports under 1024 need privileges); choose --port"
            ) from None
        reason = err.strerror or str(err)
        raise AddressError(f"--host {host}: cannot listen there ({reason})") from None


def address(sock: socket.socket) -> str:
    """The URL a bound socket answers on: ``http://HOST:PORT/`` with the real port."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(
    models: Mapping[str, Translator],
    config: ServeConfig,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Say where the server answers and serve until interrupted, on ``sock`` (from :func:`bind`,
    so that a caller can refuse a busy port before loading models) or on a socket bound here."""
    import uvicorn

    app = create_app(models, config)
    with sock or bind(config.host, config.port) as listening:
        print(
            f"jumok: serving {', '.join(models)} on {address(listening)} (API docs at /docs)",
            flush=True,
        )
        server = uvicorn.Server(server_config(app, config, log_level))
        server.run(sockets=[listening])
    if not server.started:  # as uvicorn.run does; uvicorn has logged why
        raise SystemExit(3)


__all__ = [
    "AddressError",
    "ApiError",
    "ErrorResponse",
    "JumokError",
    "ServeConfig",
    "TranslateRequest",
    "TranslateResponse",
    "address",
    "bind",
    "create_app",
    "load_models",
    "model_names",
    "run",
    "server_config",
]
