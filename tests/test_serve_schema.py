"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis): whatever a
client sends, the server answers without a 5xx, and every response matches the schema."""

from __future__ import annotations

import pytest
from conftest import QUIET, small_config
from hypothesis import HealthCheck, given, settings

import jumok
from jumok.app.serve import ServeConfig, create_app
from jumok.training.train import train

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    run = tmp_path_factory.mktemp("schema") / "dates"
    overrides = ("train.epochs=1", "model.encoder.hidden_size=16", "model.decoder.hidden_size=16")
    train(small_config(*overrides), run, **QUIET)
    # Small limits so that generated requests stay cheap to decode and also cross the limits.
    limits = ServeConfig(max_texts=4, max_chars=60, max_beam=3, max_output_tokens=24)
    app = create_app({"dates": jumok.load(run)}, limits)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(
    ("method", "path", "examples"),
    [
        ("POST", "/v1/translate", 80),
        ("GET", "/v1/models", 5),
        ("GET", "/health", 5),
        ("GET", "/ready", 5),
    ],
)
def test_no_5xx_and_every_response_matches_the_schema(api_schema, method, path, examples):
    operation = api_schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case):
        # The properties: no 5xx; status, content type and body as the schema says.
        # (Not "every schema-valid request is accepted": limits set at start-up, such as
        # --max-chars, are this server's, and refusing over them with a 413 is intended.)
        response = case.call_and_validate(checks=CHECKS)
        seen.append(response.status_code)

    check()
    assert seen and all(code < 500 for code in seen)
    if path == "/v1/translate":
        assert 200 in seen, seen  # the generator also produced requests that decode
