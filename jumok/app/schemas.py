"""The typed shapes of ``jumok serve``: its start-up options and every request and response body.

Pydantic models only (no FastAPI, no torch), so that the command line can build the ``serve``
flags from :class:`ServeConfig` without loading the server. The request schema is built from
:class:`jumok.config.DecodeConfig`, so a decoding option cannot drift from the config;
``docs/api.md`` is generated from these models (``python -m jumok.app.docgen``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from jumok.config import DecodeConfig


class ServeConfig(BaseModel):
    """How ``jumok serve`` listens, batches and limits requests (one flag per field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1",
        description="Address to bind. The default answers only this machine; use 0.0.0.0 to "
        "listen on every interface (put a proxy with authentication in front).",
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    allowed_hosts: str = Field(
        "",
        description="More names a request's Host header may give, comma-separated (e.g. "
        "api.example.com,*.example.org; * = any). Always accepted: the --host address, and "
        "127.0.0.1, localhost and [::1] for a loopback --host. With --host 0.0.0.0 and no "
        "names here, any Host is accepted. Others get 400 (DNS rebinding).",
    )
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
        allow_inf_nan=False,
        description="A request whose decoding (queue wait included) takes longer gets 408, "
        "and its decoding stops.",
    )
    max_request_cost: int = Field(
        2_000_000,
        ge=1,
        description="Most decoding work one request may ask (413 beyond): hypotheses (beam, "
        "or n_best when sampling) x max_length x source tokens, summed over its texts. The "
        "default takes one 1,000-token text at beam 5 and max_length 400.",
    )
    read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        allow_inf_nan=False,
        description="A client must send a request's headers within this many seconds of "
        "connecting (or of its previous response), then its body within as many again; "
        "otherwise the connection is closed (408 for a slow body).",
    )
    keep_alive_seconds: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="Close a kept-alive connection idle this long after a response.",
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open connections (or requests in progress) at which a new request gets "
        "503 at once instead of being served.",
    )
    access_log: bool = Field(
        True,
        description="Log one line per request (--no-access-log: none; warnings and errors "
        "are still logged).",
    )
    reply_set: str = Field(
        "",
        description="A file of candidate replies, one per line: POST /v1/reply answers each "
        "text with the ones the model scores highest (docs/steering.md, Reply sets).",
    )
    calibrated_abstain: bool = Field(
        False,
        description="Abstain below the threshold in each run's calibration.json (written by "
        "jumok calibrate) unless a request gives abstain_below.",
    )


# ---------------------------------------------------------------------------------- requests
# Every decode.* field except batch_size (the server batches) is a request option with the same
# type, bounds and description; left out, the run's own decode setting applies.
SERVER_OWNED = {"batch_size"}


def _optional(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """A config field as a request field: same type, bounds and description, default None."""
    field = FieldInfo.merge_field_infos(info, default=None)
    return info.annotation | None, field


TranslateRequest = create_model(
    "TranslateRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Texts to translate, and any decoding option (the run's decode section otherwise).",
    texts=(
        list[str],
        Field(
            min_length=1,
            description="The texts, one sentence each (at most --max-texts texts of at most "
            "--max-chars characters; no line breaks; control characters are removed; a blank "
            "text gets an empty result marked skipped).",
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
    prefix=(
        str | list[str | None] | None,
        Field(
            None,
            description="What each output must start with: its target tokens are decoded "
            "first (scored, with attention rows), then the model goes on freely. One string for "
            "every text, or a list with one entry per text (null or '': none). 422 naming "
            "prefix or prefix[i] when a token is outside the target vocabulary or the prefix "
            "leaves no room for eos within max_length.",
            examples=["Zwei"],
        ),
    ),
    **{
        name: _optional(info)
        for name, info in DecodeConfig.model_fields.items()
        if name not in SERVER_OWNED
    },
)


# --------------------------------------------------------------------------------- responses
# HypothesisOut in Python, so that it is not mistaken for jumok.decoding.hypothesis.Hypothesis;
# "Hypothesis" in the OpenAPI schema and docs/api.md, as clients have always seen it. (A class
# statement would name the schema after the class: create_model names it separately.)
HypothesisOut = create_model(
    "Hypothesis",
    __doc__="One decoded output.",
    text=(str, Field(description="The output, detokenized.")),
    score=(float, Field(description="Sum of the tokens' log-probabilities.")),
    normalized_score=(
        float | None,
        Field(
            description="The score the search ranked by (length penalty applied), when it has one."
        ),
    ),
    confidence=(float, Field(description="exp(mean token log-probability), in (0, 1].")),
    tokens=(list[str], Field(description="Output tokens (rows of the attention).")),
    token_logprobs=(list[float], Field(description="Log-probability of each output token.")),
    finished=(bool, Field(description="False when the output was cut at max_length.")),
    attention=(
        list[list[float]] | None,
        Field(
            None,
            description="Attention weights, one row per output token, one column per source "
            "token (present when the request asked for attention and the model has it).",
        ),
    ),
)


class Result(BaseModel):
    """The hypotheses of one input text."""

    source: str = Field(description="The input text.")
    source_tokens: list[str] = Field(description="Source tokens (columns of the attention).")
    text: str = Field(description="The best hypothesis ('' when abstained).")
    abstained: bool = Field(description="The best confidence was under abstain_below.")
    skipped: bool = Field(
        False,
        description="The text was blank (once control characters were removed): nothing was "
        "decoded, text is '' and hypotheses is empty.",
    )
    unknown: int = Field(description="Source tokens outside the vocabulary (read as <unk>).")
    hypotheses: list[HypothesisOut] = Field(description="The n-best, best first.")


class TranslateResponse(BaseModel):
    """Per input text, in order, its hypotheses."""

    model: str = Field(description="The model that decoded.")
    results: list[Result]
    elapsed_ms: float = Field(description="Time in the server, queue wait included.")


# The request's decoding options, each with the value a served model uses when a request leaves
# it out (its run's decode section), for GET /v1/models and the page's controls.
DecodeDefaults = create_model(
    "DecodeDefaults",
    __doc__="A served model's decode settings: what each decoding option of a request is when "
    "left out.",
    **{
        name: (info.annotation, info)
        for name, info in DecodeConfig.model_fields.items()
        if name not in SERVER_OWNED
    },
)


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
    decode: DecodeDefaults = Field(  # type: ignore[valid-type]
        description="The run's decode section, one field per decoding option of the request: "
        "the value it takes when a request leaves it out. The web page's beam, n-best and max "
        "length start here."
    )
    batches: int = Field(description="Batches decoded since start.")
    requests: int = Field(description="Requests decoded since start.")


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str = Field(description="The model used when a request names none.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    models: list[str] = Field(description="The models whose batchers run.")
    reasons: list[str] = Field(
        default_factory=list,
        description="Why the server is not ready (a batcher stopped, decodes failing, a "
        "decode or the queue stuck); empty when ready.",
    )


class ErrorResponse(BaseModel):
    """Every error, 4xx and 500: one message naming the field or header at fault."""

    detail: str = Field(description="What was wrong and what was expected.")
    field: str | None = Field(None, description="The request field at fault, e.g. texts[2].")
