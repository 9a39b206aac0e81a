"""A REST API and a web page over :meth:`jumok.decoding.translator.Translator.translate`.

``jumok serve RUN_DIR …`` loads each run once, puts a :class:`~jumok.app.batcher.DynamicBatcher` in
front of it, and serves:

- ``POST /v1/translate``: texts in, per text the n-best hypotheses (text, scores, tokens and,
  when asked, the attention matrix with its source and output tokens);
- ``GET /v1/models``, ``GET /health`` (alive), ``GET /ready`` (models loaded, batchers running);
- ``GET /``: a page to type a sentence and look at the attention of each hypothesis;
- ``GET /docs``: the OpenAPI documentation.

The server is a thin layer: every decoding option is a ``decode.*`` field of the run's config
(the request schema, in :mod:`jumok.app.schemas`, is built from :class:`jumok.config.DecodeConfig`,
so it cannot drift), and the decoding is exactly ``jumok.load(RUN_DIR).translate(...)``. Models
come only from the paths given at start-up; a request can choose one by name, never by path.

The routes are module-level handlers on :data:`router`; :func:`create_app` wires them to the
models, whose state they reach through ``request.app.state`` (``served``, ``config``, ``default``).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jumok.app.batcher import DynamicBatcher, QueueFull
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
from jumok.data.inputs import text_problem
from jumok.decoding.translator import Translation, Translator
from jumok.errors import ConfigError, DataError, JumokError, RunDirError


class ApiError(Exception):
    """A refused request: its HTTP status and the :class:`ErrorResponse` it is answered with."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


# ---------------------------------------------------------------------------- served models
def _decoder(translator: Translator):
    """The batcher's decode function: ``translator.translate`` with a request's options."""

    def decode(texts: list[str], options: DecodeConfig) -> list[Translation]:
        with warnings.catch_warnings():  # unknown characters are reported per result instead
            warnings.simplefilter("ignore")
            return translator.translate(texts, **options.model_dump())

    return decode


@dataclass
class Served:
    """A loaded model and the batcher in front of it."""

    name: str
    translator: Translator
    batcher: DynamicBatcher[Translation]

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
            decode=cfg.decode.model_dump(mode="json"),
            batches=self.batcher.stats.batches,
            requests=self.batcher.stats.requests,
        )


# ------------------------------------------------------------------------------------- checks
def check_text(index: int, text: str, limits: ServeConfig, translator: Translator) -> None:
    """Reject what cannot be one sentence, naming ``texts[index]``."""
    field = f"texts[{index}]"
    if len(text) > limits.max_chars:
        raise ApiError(
            413,
            f"{field}: {len(text)} characters; this server takes at most {limits.max_chars} "
            "per text (--max-chars)",
            field,
        )
    problem = text_problem(text)
    if problem is None and not translator.src_tok.tokenize(text):
        problem = "the text is empty; expected at least one character"
    if problem:
        raise ApiError(422, f"{field}: {problem}", field)


def decode_options(request: BaseModel, translator: Translator, limits: ServeConfig):
    """The request's options merged over the run's decode section, validated and bounded."""
    asked = {
        name: getattr(request, name)
        for name in DecodeConfig.model_fields
        if name not in SERVER_OWNED and getattr(request, name) is not None
    }
    try:
        options = DecodeConfig.model_validate({**translator.config.decode.model_dump(), **asked})
    except ValidationError as err:
        problem = err.errors()[0]
        message = problem["msg"].removeprefix("Value error, ").replace("decode.", "")
        # A check across fields (n_best <= beam) has no location: name the first field it cites.
        cited = [name for name in DecodeConfig.model_fields if re.search(rf"\b{name}\b", message)]
        field = ".".join(str(p) for p in problem["loc"]) or min(
            cited, key=message.index, default="decode"
        )
        raise ApiError(422, f"{field}: {message}", field) from None
    if options.beam > limits.max_beam or options.n_best > limits.max_beam:
        name = "beam" if options.beam > limits.max_beam else "n_best"
        raise ApiError(
            422,
            f"{name}: {getattr(options, name)}; this server allows at most {limits.max_beam} "
            "(--max-beam)",
            name,
        )
    if options.max_length > limits.max_output_tokens:
        raise ApiError(
            422,
            f"max_length: {options.max_length}; this server allows at most "
            f"{limits.max_output_tokens} (--max-output-tokens)",
            "max_length",
        )
    if options.replace_unk and not translator.has_attention:
        raise ApiError(
            422,
            "replace_unk: this model has no attention to point at a source token",
            "replace_unk",
        )
    return options


def _result(t: Translation, with_attention: bool) -> Result:
    """One input's :class:`Result`, with the attention matrices when ``with_attention``."""
    return Result(
        source=t.source,
        source_tokens=t.source_tokens,
        text=t.text,
        abstained=t.abstained,
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


# ---------------------------------------------------------------------------------------- app
class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, declared or as it arrives.

    The body is read here (it is small: at most ``limit``) and replayed to the app, so a
    chunked upload without a content-length is cut off at the limit too.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, self._message(int(declared)))
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _send_error(send, 413, self._message(len(body)))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int) -> str:
        return (
            f"body: {size} bytes or more; this server takes at most {self.limit} bytes "
            "(--max-body-bytes)"
        )


async def _send_error(send, status: int, detail: str) -> None:
    """Answer a raw ASGI request with an :class:`ErrorResponse` for the ``body`` field."""
    body = ErrorResponse(detail=detail, field="body").model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _field_of(loc: tuple) -> str:
    """A validation error's location as a request field name: ``("body", "texts", 2)`` ->
    ``texts[2]``."""
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


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
    """A body that is not JSON or does not fit the schema: 422 naming the first field at fault."""
    problems = err.errors()
    first = problems[0]
    if first.get("type") == "json_invalid":
        error = ErrorResponse(detail=_invalid_json(first), field="body")
    else:
        error = ErrorResponse(
            detail=_describe_problems(problems), field=_field_of(tuple(first.get("loc", ())))
        )
    return JSONResponse(error.model_dump(), 422)


def _invalid_json(problem: dict[str, Any]) -> str:
    """The message for a body that is not JSON: where it broke, and what was expected."""
    where = problem["loc"][-1] if len(problem.get("loc", ())) > 1 else "?"
    reason = (problem.get("ctx") or {}).get("error", "not JSON")
    return (
        f"body: invalid JSON at character {where} ({reason}); expected an object like "
        '{"texts": ["a sentence"]}'
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
router = APIRouter()

WEB = importlib.resources.files("jumok") / "resources" / "web"
STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}

# The 4xx answers of POST /v1/translate, as the OpenAPI schema lists them.
ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        404: "unknown model name",
        408: "decoding took longer than --max-decode-seconds",
        413: "too many texts, a text too long, or a body too large",
        422: "a malformed request: the field and what was expected",
        429: "the queue is full; retry later",
    }.items()
}


# Alive: answers as soon as the process does.
@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health()


# Ready: every model's batcher runs (503 until then, and after shutdown begins).
@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "not ready"}},
    summary="Models are loaded and their batchers run",
)
async def ready(request: Request):
    served = request.app.state.served
    running = [name for name, s in served.items() if s.batcher.running]
    body = Ready(ready=len(running) == len(served), models=running)
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
    _check_texts(body.texts, served.translator, state.config)
    options = decode_options(body, served.translator, state.config)
    found = await _decode(served, body.texts, options, state.config)
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


def _check_texts(texts: list[str], translator: Translator, limits: ServeConfig) -> None:
    """Refuse an empty list, more than --max-texts texts, or a text that is not one sentence."""
    if not texts:
        raise ApiError(422, "texts: the list is empty; expected at least one text", "texts")
    if len(texts) > limits.max_texts:
        raise ApiError(
            413,
            f"texts: {len(texts)} texts; this server takes at most "
            f"{limits.max_texts} per request (--max-texts)",
            "texts",
        )
    for i, text in enumerate(texts):
        check_text(i, text, limits, translator)


async def _decode(
    served: Served, texts: list[str], options: DecodeConfig, limits: ServeConfig
) -> list[Translation]:
    """Decode ``texts`` through the model's batcher: 429 when its queue is full, 408 past
    --max-decode-seconds, 422 when the decoding refuses the input."""
    try:
        return await asyncio.wait_for(
            served.batcher.submit(texts, options), limits.max_decode_seconds
        )
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
        "model attends to. Every 4xx body is an ErrorResponse naming the field.",
        lifespan=lifespan,
    )
    app.state.served = {name: Served.create(name, t, config) for name, t in models.items()}
    app.state.default = next(iter(models))
    app.state.config = config
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.include_router(router)
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


def run(models: Mapping[str, Translator], config: ServeConfig, log_level: str = "info") -> None:
    """Serve until interrupted."""
    import uvicorn

    app = create_app(models, config)
    print(
        f"jumok: serving {', '.join(models)} on http://{config.host}:{config.port}/ "
        f"(API docs at /docs)",
        flush=True,
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level)


__all__ = [
    "ApiError",
    "ErrorResponse",
    "JumokError",
    "ServeConfig",
    "TranslateRequest",
    "TranslateResponse",
    "create_app",
    "load_models",
    "model_names",
    "run",
]
