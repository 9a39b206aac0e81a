"""The server's reply sets and calibrated abstain (``jumok serve --reply-set FILE``,
``--calibrated-abstain``).

One reply set per server, read and tokenized once per served model at start-up; requests choose
from it at ``POST /v1/reply`` (a request cannot send its own set: the set is the operator's list
of approved replies, and scoring it is the cost the operator sized). With
``--calibrated-abstain`` each model's default ``abstain_below`` is the threshold of its run's
``calibration.json`` (``jumok calibrate``); a request's own ``abstain_below`` still wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from jumok.app.calibrate import calibrated_threshold
from jumok.app.guards import ApiError
from jumok.app.limits import check_texts
from jumok.app.schemas import ServeConfig, TranslateResponse
from jumok.decoding.replies import ReplySet
from jumok.decoding.translator import Translator
from jumok.errors import ConfigError, DataError, RunDirError


class ReplyRequest(BaseModel):
    """Texts to answer from the server's reply set (``jumok serve --reply-set FILE``)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="The messages to answer (as translate's).")
    model: str | None = Field(None, description="Name of a served model; default: the first.")
    n_best: int = Field(3, ge=1, description="Replies per text, best first (<= --max-beam).")
    diversity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Skip a reply whose chrF similarity (0-1) to one already chosen is >= this.",
    )
    attention: bool = Field(False, description="Return each reply's attention matrix.")
    abstain_below: float | None = Field(
        None, ge=0, le=1, description="No reply when the best one's confidence is below this."
    )


def prepare(models: Mapping[str, Translator], config: ServeConfig) -> dict[str, ReplySet]:
    """At start-up: set each model's calibrated abstain threshold (``--calibrated-abstain``) and
    build its reply set (``--reply-set``); {} without one."""
    if config.calibrated_abstain:
        for translator in models.values():
            if translator.source is None:
                raise RunDirError("--calibrated-abstain: a model was not loaded from a run")
            decode = translator.config.decode.model_copy(
                update={"abstain_below": calibrated_threshold(translator.source)}
            )
            translator.config = translator.config.model_copy(update={"decode": decode})
    if not config.reply_set:
        return {}
    from jumok.app.replies import read_reply_set

    texts = read_reply_set(config.reply_set)
    return {name: ReplySet.build(t, texts, config.reply_set) for name, t in models.items()}


def router_for(result, served_model) -> APIRouter:
    """The ``POST /v1/reply`` route; ``result`` and ``served_model`` are :mod:`jumok.app.serve`'s
    own (one Result per translation, the model a request names), passed in because serve
    imports this module."""
    router = APIRouter()

    @router.post("/v1/reply", response_model=TranslateResponse, summary="Answer from the reply set")
    async def reply(body: ReplyRequest, request: Request) -> TranslateResponse:
        return await _reply(body, request, result, served_model)

    return router


async def _reply(body: ReplyRequest, request: Request, result, served_model) -> TranslateResponse:
    """Score the server's reply set for each text, in a worker thread, within the limits."""
    started = time.perf_counter()
    state = request.app.state
    name = body.model or state.default
    served = served_model(state.served, name)
    replies = state.reply_sets.get(name)
    if replies is None:
        raise ApiError(404, "this server has no reply set; start it with --reply-set FILE")
    check_texts(body.texts, served.translator, state.config)
    if body.n_best > state.config.max_beam:
        raise ApiError(422, f"n_best: this server allows at most {state.config.max_beam}", "n_best")
    work = asyncio.to_thread(
        served.translator.reply,
        body.texts,
        replies,
        body.diversity,
        attention=body.attention,
        n_best=body.n_best,
        abstain_below=body.abstain_below,
    )
    try:
        found = await asyncio.wait_for(work, state.config.max_decode_seconds)
    except TimeoutError:
        raise ApiError(408, "texts: scoring the reply set took too long", "texts") from None
    except (DataError, ConfigError) as err:
        raise ApiError(422, str(err), "texts") from None
    return TranslateResponse(
        model=name,
        results=[result(t, body.attention) for t in found],
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
