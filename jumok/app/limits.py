"""What a request to ``jumok serve`` may ask: texts that are one sentence each, decoding options
within the server's limits, and a cost budget (hypotheses x output tokens x source tokens).

Every refusal is an :class:`~jumok.app.guards.ApiError` naming the request field.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ValidationError

from jumok.app.guards import ApiError
from jumok.app.schemas import SERVER_OWNED, ServeConfig
from jumok.config import DecodeConfig
from jumok.data.inputs import remove_controls, text_problem
from jumok.decoding.prefix import prefix_ids
from jumok.decoding.translator import Translator
from jumok.errors import DataError


def check_texts(texts: list[str], translator: Translator, limits: ServeConfig) -> None:
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


def check_text(index: int, text: str, limits: ServeConfig, translator: Translator) -> None:
    """Reject what cannot be one sentence (a line break inside, more than --max-chars),
    naming ``texts[index]``; a blank text passes (its result is ``skipped``)."""
    field = f"texts[{index}]"
    if len(text) > limits.max_chars:
        raise ApiError(
            413,
            f"{field}: {len(text)} characters; this server takes at most {limits.max_chars} "
            "per text (--max-chars)",
            field,
        )
    if not remove_controls(text)[0].strip():
        return  # a blank text is answered with an empty, skipped result, as jumok translate does
    problem = text_problem(text)
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


def check_prefix(
    body: BaseModel, translator: Translator, options: DecodeConfig, limits: ServeConfig
) -> list[str | None]:
    """Each text's prefix (``prefix``: one string for all, or one entry per text), each
    checked as :meth:`Translator.translate <jumok.decoding.translator.Translator.translate>`
    would check it, naming ``prefix`` or ``prefix[i]``."""
    prefix, count = body.prefix, len(body.texts)
    if prefix is None or isinstance(prefix, str):
        named = [("prefix", prefix)]
        prefixes = [prefix] * count
    elif len(prefix) != count:
        raise ApiError(
            422, f"prefix: {len(prefix)} prefixes for {count} texts; expected one each", "prefix"
        )
    else:
        named = [(f"prefix[{i}]", text) for i, text in enumerate(prefix)]
        prefixes = list(prefix)
    for field, text in named:
        if text and len(text) > limits.max_chars:
            raise ApiError(
                413,
                f"{field}: {len(text)} characters; this server takes at most "
                f"{limits.max_chars} (--max-chars)",
                field,
            )
        try:
            prefix_ids(text, translator.tgt_tok, translator.tgt_vocab, options.max_length, field)
        except DataError as err:
            raise ApiError(422, str(err), field) from None
    return prefixes


def check_cost(
    texts: list[str], options: DecodeConfig, translator: Translator, limits: ServeConfig
) -> None:
    """413 for a request asking more decoding than --max-request-cost: hypotheses (beam, or
    n_best samples) x max_length x source tokens, summed over the texts. Time and memory grow
    with it (the attention alone is hypotheses x output x source weights per text)."""
    width, width_name = (options.n_best, "n_best") if options.sample else (options.beam, "beam")
    source = sum(len(translator.src_tok.tokenize(text)) for text in texts)
    cost = width * options.max_length * source
    if cost > limits.max_request_cost:
        raise ApiError(
            413,
            f"texts: this request costs {cost:,} ({width_name} {width} x max_length "
            f"{options.max_length} x {source:,} source tokens in {len(texts)} text(s)); this "
            f"server takes at most {limits.max_request_cost:,} (--max-request-cost): lower "
            f"{width_name} or max_length, or send fewer or shorter texts",
            "texts",
        )
