"""A REST API and a web page over :meth:`jumok.decoding.translator.Translator.translate`.

``jumok serve RUN_DIR …`` loads each run once, puts a :class:`~jumok.app.batcher.DynamicBatcher` in
front of it, and serves:

- ``POST /v1/translate``: texts in, per text the n-best hypotheses (text, scores, tokens and,
  when asked, the attention matrix with its source and output tokens);
- ``GET /v1/models``, ``GET /health`` (alive), ``GET /ready`` (models loaded, batchers running);
- ``GET /``: a page to type a sentence and look at the attention of each hypothesis;
- ``GET /docs``: the OpenAPI documentation.

The server is a thin layer: every decoding option is a ``decode.*`` field of the run's config
(the request schema is built from :class:`jumok.config.DecodeConfig`, so it cannot drift), and
the decoding is exactly ``jumok.load(RUN_DIR).translate(...)``. Models come only from the paths
given at start-up; a request can choose one by name, never by path.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
import warnings
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo

from jumok.app.batcher import DynamicBatcher, QueueFull
from jumok.config import DecodeConfig
from jumok.data.readers import text_problem
from jumok.decoding.translator import Translation, Translator
from jumok.errors import ConfigError, DataError, JumokError, RunDirError


class ServeConfig(BaseModel):
    """How ``jumok serve`` listens, batches and limits requests (one flag per field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1",
        description="Address to bind. The default answers only this machine; use 0.0.0.0 to "
        "listen on every interface (put a proxy with authentication in front).",
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    batching: bool = Field(
        True,
        description="Decode requests that arrive within --max-wait-ms of each other as one "
        "batch (--no-batching decodes each request alone).",
    )
    max_batch_size: int = Field(64, ge=1, description="Most texts in one dynamic batch.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the first request of a batch waits for others (ms)."
    )
    max_queue: int = Field(
        4096, ge=1, description="Most texts waiting to be decoded; beyond it requests get 429."
    )
    max_texts: int = Field(64, ge=1, description="Most texts in one request (413 beyond).")
    max_chars: int = Field(1000, ge=1, description="Most characters in one text (413 beyond).")
    max_body_bytes: int = Field(
        1_000_000, ge=1, description="Largest request body in bytes (413 beyond)."
    )
    max_beam: int = Field(16, ge=1, description="Largest beam (and n-best) a request may ask.")
    max_output_tokens: int = Field(
        400, ge=1, description="Largest max_length a request may ask (output tokens)."
    )
    max_decode_seconds: float = Field(
        60.0,
        gt=0,
        description="A request whose decoding (queue wait included) takes longer gets 408.",
    )


# ------------------------------------------------------------------------------------ schemas
# Every decode.* field except batch_size (the server batches) is a request option with the same
# type, bounds and description; left out, the run's own decode setting applies.
_SERVER_OWNED = {"batch_size"}


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    field = FieldInfo.merge_field_infos(info, default=None)
    return info.annotation | None, field


TranslateRequest = create_model(
    "TranslateRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Texts to translate, and any decoding option (the run's decode section otherwise).",
    texts=(
        list[Annotated[str, StringConstraints(min_length=1)]],
        Field(
            min_length=1,
            description="The texts, one sentence each (at most --max-texts texts of at most "
            "--max-chars characters; no line breaks or control characters).",
            examples=[["Two dogs run."]],
        ),
    ),
    model=(
        str | None,
        Field(None, description="Name of a served model (GET /v1/models); default: the first."),
    ),
    attention=(
        bool,
        Field(
            False,
            description="Return each hypothesis's attention matrix (output tokens x source "
            "tokens).",
        ),
    ),
    **{
        name: _optional(info)
        for name, info in DecodeConfig.model_fields.items()
        if name not in _SERVER_OWNED
    },
)


class Hypothesis(BaseModel):
    """One decoded output."""

    text: str = Field(description="The output, detokenized.")
    score: float = Field(description="Sum of the tokens' log-probabilities.")
    normalized_score: float | None = Field(
        description="The score the search ranked by (length penalty applied), when it has one."
    )
    confidence: float = Field(description="exp(mean token log-probability), in (0, 1].")
    tokens: list[str] = Field(description="Output tokens (rows of the attention).")
    token_logprobs: list[float] = Field(description="Log-probability of each output token.")
    finished: bool = Field(description="False when the output was cut at max_length.")
    attention: list[list[float]] | None = Field(
        None,
        description="Attention weights, one row per output token, one column per source token "
        "(present when the request asked for attention and the model has it).",
    )


class Result(BaseModel):
    """The hypotheses of one input text."""

    source: str = Field(description="The input text.")
    source_tokens: list[str] = Field(description="Source tokens (columns of the attention).")
    text: str = Field(description="The best hypothesis ('' when abstained).")
    abstained: bool = Field(description="The best confidence was under abstain_below.")
    unknown: int = Field(description="Source tokens outside the vocabulary (read as <unk>).")
    hypotheses: list[Hypothesis] = Field(description="The n-best, best first.")


class TranslateResponse(BaseModel):
    """Per input text, in order, its hypotheses."""

    model: str = Field(description="The model that decoded.")
    results: list[Result]
    elapsed_ms: float = Field(description="Time in the server, queue wait included.")


class ModelInfo(BaseModel):
    """A served model."""

    name: str
    checkpoint: str = Field(description="The file it was loaded from.")
    attention: str = Field(description="model.attention of the run.")
    encoder: str
    decoder: str
    tokenizer: str
    source_vocab_size: int
    target_vocab_size: int
    reverse_source: bool
    parameters: int
    decode: dict[str, Any] = Field(description="The run's decode settings (request defaults).")
    batches: int = Field(description="Batches decoded since start.")
    requests: int = Field(description="Requests decoded since start.")


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str = Field(description="The model used when a request names none.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    models: list[str]


class ErrorResponse(BaseModel):
    """Every 4xx: one message that names the field and what was expected."""

    detail: str = Field(description="What was wrong and what was expected.")
    field: str | None = Field(None, description="The request field at fault, e.g. texts[2].")


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


# ---------------------------------------------------------------------------- served models
@dataclass
class Served:
    """A loaded model and the batcher in front of it."""

    name: str
    translator: Translator
    batcher: DynamicBatcher[Translation]

    def info(self) -> ModelInfo:
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


def _decoder(translator: Translator):
    def decode(texts: list[str], options: DecodeConfig) -> list[Translation]:
        with warnings.catch_warnings():  # unknown characters are reported per result instead
            warnings.simplefilter("ignore")
            return translator.translate(texts, **options.model_dump())

    return decode


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
        if name not in _SERVER_OWNED and getattr(request, name) is not None
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
    return Result(
        source=t.source,
        source_tokens=t.source_tokens,
        text=t.text,
        abstained=t.abstained,
        unknown=t.unknown,
        hypotheses=[
            Hypothesis(
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
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


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


def create_app(models: Mapping[str, Translator], config: ServeConfig | None = None):
    """The FastAPI app serving ``models`` (name -> loaded translator), first one the default."""
    # fastapi is imported here so that `jumok --help` and the schemas above stay light.
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException

    import jumok

    config = config or ServeConfig()
    if not models:
        raise RunDirError("serve: no model given")
    served = {
        name: Served(
            name,
            translator,
            DynamicBatcher(
                _decoder(translator),
                max_batch_size=config.max_batch_size,
                max_wait_ms=config.max_wait_ms,
                max_queue=config.max_queue,
                enabled=config.batching,
            ),
        )
        for name, translator in models.items()
    }
    default = next(iter(served))

    @asynccontextmanager
    async def lifespan(app):
        for s in served.values():
            s.batcher.start()
        yield
        for s in served.values():
            await s.batcher.stop()

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from files
    # installed with it, not from a CDN (this machine, and many servers, cannot reach one).
    app = FastAPIOffline(
        title="jumok",
        version=jumok.__version__,
        description="Attention-based sequence-to-sequence models: translate, and see what the "
        "model attends to. Every 4xx body is an ErrorResponse naming the field.",
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.config = config
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse(
            ErrorResponse(detail=err.detail, field=err.field).model_dump(), status_code=err.status
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err):  # unknown paths, wrong methods: the same error shape
        return JSONResponse(
            ErrorResponse(detail=str(err.detail), field=None).model_dump(),
            status_code=err.status_code,
            headers=getattr(err, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err):
        problems = err.errors()
        first = problems[0]
        if first.get("type") == "json_invalid":
            where = first["loc"][-1] if len(first.get("loc", ())) > 1 else "?"
            reason = (first.get("ctx") or {}).get("error", "not JSON")
            detail = (
                f"body: invalid JSON at character {where} ({reason}); expected an object like "
                '{"texts": ["a sentence"]}'
            )
            return JSONResponse(ErrorResponse(detail=detail, field="body").model_dump(), 422)
        field = _field_of(tuple(first.get("loc", ())))
        detail = "; ".join(
            f"{_field_of(tuple(p.get('loc', ())))}: {p.get('msg', 'invalid')}"
            + (
                f" (got {_short(p['input'])})"
                if "input" in p and p.get("type") != "missing"
                else ""
            )
            for p in problems[:3]
        )
        if len(problems) > 3:
            detail += f"; and {len(problems) - 3} more"
        return JSONResponse(ErrorResponse(detail=detail, field=field).model_dump(), 422)

    @app.get("/health", response_model=Health, summary="The process is alive")
    async def health() -> Health:
        return Health()

    @app.get(
        "/ready",
        response_model=Ready,
        responses={503: {"model": Ready, "description": "not ready"}},
        summary="Models are loaded and their batchers run",
    )
    async def ready():
        running = [name for name, s in served.items() if s.batcher.running]
        body = Ready(ready=len(running) == len(served), models=running)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/v1/models", response_model=ModelList, summary="The served models")
    async def list_models() -> ModelList:
        return ModelList(models=[s.info() for s in served.values()], default=default)

    @app.post(
        "/v1/translate",
        response_model=TranslateResponse,
        responses=ERRORS,
        summary="Translate texts; n-best, scores and attention",
    )
    async def translate(request: TranslateRequest) -> TranslateResponse:  # type: ignore[valid-type]
        started = time.perf_counter()
        name = request.model or default
        if name not in served:
            raise ApiError(
                404, f"model: unknown model {name!r}; expected one of {', '.join(served)}", "model"
            )
        s = served[name]
        if not request.texts:
            raise ApiError(422, "texts: the list is empty; expected at least one text", "texts")
        if len(request.texts) > config.max_texts:
            raise ApiError(
                413,
                f"texts: {len(request.texts)} texts; this server takes at most "
                f"{config.max_texts} per request (--max-texts)",
                "texts",
            )
        for i, text in enumerate(request.texts):
            check_text(i, text, config, s.translator)
        options = decode_options(request, s.translator, config)
        try:
            found = await asyncio.wait_for(
                s.batcher.submit(request.texts, options), config.max_decode_seconds
            )
        except QueueFull as err:
            raise ApiError(
                429, f"texts: the server is busy ({err}); retry later", "texts"
            ) from None
        except TimeoutError:
            raise ApiError(
                408,
                f"texts: decoding took longer than {config.max_decode_seconds:g} s "
                "(--max-decode-seconds); send fewer or shorter texts or a smaller beam",
                "texts",
            ) from None
        except (DataError, ConfigError) as err:
            raise ApiError(422, str(err), "texts") from None
        return TranslateResponse(
            model=name,
            results=[_result(t, request.attention) for t in found],
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    web = importlib.resources.files("jumok") / "resources" / "web"

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(web / "index.html"), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:  # only the page's own two files: no path from a request
            raise ApiError(404, f"static: no file {name!r}", "name")
        return FileResponse(str(web / name), media_type=types[name])

    return app


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
