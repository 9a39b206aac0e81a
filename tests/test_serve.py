"""The REST API: happy path, n-best, attention, every limit's 4xx, dynamic batching."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from conftest import QUIET, budget, small_config
from fastapi.testclient import TestClient

import jumok
from jumok.app.batcher import DynamicBatcher, QueueFull
from jumok.app.cli import main
from jumok.app.serve import ServeConfig, create_app, load_models, model_names
from jumok.errors import RunDirError
from jumok.training.train import train

DATES = ["september 27, 1994", "Jan 2, 2003", "TUESDAY, MARCH 5, 1991"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "dates"
    train(small_config("train.epochs=2"), path, **QUIET)
    return path


@pytest.fixture(scope="module")
def translator(run_dir):
    return jumok.load(run_dir)


def client_for(translator, **limits) -> TestClient:
    return TestClient(create_app({"dates": translator}, ServeConfig(**limits)))


@pytest.fixture(scope="module")
def client(translator):
    with client_for(translator) as c:
        yield c


# ------------------------------------------------------------------------------- happy paths
def test_health_ready_and_models(client, translator):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "models": ["dates"], "reasons": []}
    body = client.get("/v1/models").json()
    assert body["default"] == "dates"
    [info] = body["models"]
    assert info["name"] == "dates" and info["attention"] == "dot"
    assert info["source_vocab_size"] == len(translator.src_vocab)
    assert info["target_vocab_size"] == len(translator.tgt_vocab)
    assert info["decode"]["beam"] == 1


def test_translate_is_the_python_api(client, translator):
    response = client.post("/v1/translate", json={"texts": DATES})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "dates"
    expected = translator.translate(DATES)
    assert [r["text"] for r in body["results"]] == [t.text for t in expected]
    for result, t in zip(body["results"], expected, strict=True):
        assert result["source"] == t.source
        [best] = result["hypotheses"]
        assert best["score"] == pytest.approx(t.score, abs=1e-5)
        assert best["tokens"] == t.tokens
        assert best["attention"] is None  # not asked for


def test_n_best_are_distinct_and_sorted(client, translator):
    body = client.post(
        "/v1/translate", json={"texts": DATES[:2], "beam": 4, "n_best": 3, "attention": True}
    ).json()
    for result, t in zip(
        body["results"], translator.translate(DATES[:2], beam=4, n_best=3), strict=True
    ):
        hyps = result["hypotheses"]
        assert len(hyps) == 3
        assert len({tuple(h["tokens"]) for h in hyps}) == 3
        ranked = [h["normalized_score"] for h in hyps]
        assert ranked == sorted(ranked, reverse=True)
        assert [h["text"] for h in hyps] == [c.text for c in t.hypotheses]


def test_attention_has_one_row_per_output_token_and_one_column_per_source_token(client):
    body = client.post("/v1/translate", json={"texts": DATES, "attention": True}).json()
    for result in body["results"]:
        for h in result["hypotheses"]:
            assert len(h["attention"]) == len(h["tokens"])
            for row in h["attention"]:
                assert len(row) == len(result["source_tokens"])
                assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_decoding_options_reach_the_search(client):
    body = client.post("/v1/translate", json={"texts": DATES[:1], "max_length": 3}).json()
    [h] = body["results"][0]["hypotheses"]
    assert len(h["tokens"]) <= 3 and not h["finished"]


def test_openapi_schema_names_every_decoding_option(client):
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["TranslateRequest"]["properties"]
    for name in ("texts", "model", "attention", "beam", "n_best", "max_length", "top_p"):
        assert name in request
    assert "batch_size" not in request  # the server batches
    assert request["beam"]["anyOf"][0]["minimum"] == 1
    assert (
        "/v1/translate" in schema["paths"]
        and "422" in schema["paths"]["/v1/translate"]["post"]["responses"]
    )


def test_models_publish_the_runs_decode_settings_as_a_schema(client, translator):
    # The page starts its controls from them, and a client can tell what a request left out gets.
    [info] = client.get("/v1/models").json()["models"]
    assert info["decode"] == translator.config.decode.model_dump(exclude={"batch_size"})
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ModelInfo"]["properties"]["decode"]["$ref"] == (
        "#/components/schemas/DecodeDefaults"
    )
    defaults = schemas["DecodeDefaults"]["properties"]
    request = schemas["TranslateRequest"]["properties"]
    assert set(defaults) == set(request) - {"texts", "model", "attention", "prefix"}
    assert defaults["beam"]["description"] == request["beam"]["description"]


def test_openapi_names_the_hypotheses_as_clients_know_them(client):
    # The Python class is HypothesisOut (not to be confused with the search's Hypothesis); the
    # schema keeps the name the API has always published.
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "Hypothesis" in schemas and "HypothesisOut" not in schemas
    items = schemas["Result"]["properties"]["hypotheses"]["items"]
    assert items == {"$ref": "#/components/schemas/Hypothesis"}


def test_page_and_docs_fetch_nothing_from_outside(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    for text in (page.text, docs.text, client.get("/static/app.js").text):
        assert "http://" not in text.replace("http://127.0.0.1", "")
        assert "https://" not in text
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/..%2Fserve.py").status_code == 404


# ------------------------------------------------------------------------------------ errors
def error(response, status: int, field: str | None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "field"}
    assert body["field"] == field, body
    if field is not None:
        assert field.split("[")[0] in body["detail"]
    return body["detail"]


@pytest.mark.parametrize(
    ("payload", "status", "field", "says"),
    [
        ({"texts": []}, 422, "texts", "at least 1 item"),
        ({"texts": ["one\ntwo"]}, 422, "texts[0]", "line break"),
        ({"texts": ["x" * 201]}, 413, "texts[0]", "at most 200"),
        ({"texts": ["a"] * 9}, 413, "texts", "at most 8"),
        ({"texts": ["a"], "model": "nope"}, 404, "model", "expected one of dates"),
        ({"texts": ["a"], "beam": 0}, 422, "beam", "greater than or equal to 1"),
        ({"texts": ["a"], "beam": 17}, 422, "beam", "at most 16"),
        ({"texts": ["a"], "beam": 2, "n_best": 3}, 422, "n_best", "beam"),
        ({"texts": ["a"], "max_length": 401}, 422, "max_length", "at most 400"),
        ({"texts": ["a"], "top_p": 2}, 422, "top_p", "less than or equal to 1"),
        ({"texts": ["a"], "length_penalty": "long"}, 422, "length_penalty", "gnmt"),
        ({"texts": ["a"], "bean": 3}, 422, "bean", "Extra inputs"),
        ({"texts": "a"}, 422, "texts", "list"),
        ({"texts": [3]}, 422, "texts[0]", "string"),
        ({}, 422, "texts", "required"),
    ],
)
def test_each_bad_request_gets_a_4xx_naming_the_field(translator, payload, status, field, says):
    with client_for(translator, max_texts=8, max_chars=200) as client:
        detail = error(client.post("/v1/translate", json=payload), status, field)
    assert says in detail


def test_malformed_json_and_a_large_body(translator):
    with client_for(translator, max_body_bytes=300) as client:
        detail = error(
            client.post(
                "/v1/translate",
                content=b'{"texts": [',
                headers={"content-type": "application/json"},
            ),
            422,
            "body",
        )
        assert "JSON" in detail
        big = json.dumps({"texts": ["a" * 400]}).encode()
        assert "at most 300 bytes" in error(
            client.post("/v1/translate", content=big, headers={"content-type": "application/json"}),
            413,
            "body",
        )

        def chunks():  # no content-length: the limit counts what arrives
            yield big[:200]
            yield big[200:]

        error(client.post("/v1/translate", content=chunks()), 413, "body")


def test_decode_time_limit_gives_408_and_a_full_queue_429(translator):
    with client_for(translator, max_decode_seconds=1e-6) as client:
        detail = error(client.post("/v1/translate", json={"texts": DATES}), 408, "texts")
        assert "--max-decode-seconds" in detail
    with client_for(translator, max_queue=2) as client:
        error(client.post("/v1/translate", json={"texts": DATES}), 429, "texts")
        assert client.post("/v1/translate", json={"texts": DATES[:2]}).status_code == 200


# ---------------------------------------------------------------------------------- batching
@pytest.mark.timing
def test_concurrent_requests_share_batches_and_each_gets_its_own_results(translator):
    window_ms = 1000 * budget(0.2)  # 200 ms, widened by JUMOK_TIME_FACTOR
    app = create_app({"dates": translator}, ServeConfig(max_wait_ms=window_ms, max_batch_size=64))
    texts = [f"{m} {d}, {1990 + d}" for m in ("Jan", "Feb", "Mar", "Apr") for d in range(1, 9)]

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *[http.post("/v1/translate", json={"texts": [t]}) for t in texts]
            )
        await app.state.served["dates"].batcher.stop()
        return responses

    responses = asyncio.run(go())
    expected = {t.source: t.text for t in translator.translate(texts)}
    for text, response in zip(texts, responses, strict=True):
        [result] = response.json()["results"]
        assert result["source"] == text and result["text"] == expected[text]
    stats = app.state.served["dates"].batcher.stats
    assert stats.requests == len(texts)
    assert stats.batches < len(texts) / 4, stats  # 32 requests in one window: few batches


def run_batcher(jobs, **options):
    """Submit (texts, key) jobs at once to a batcher whose decode records each batch."""
    seen: list[tuple[list[str], str]] = []

    def decode(texts, key, should_stop):
        if "boom" in texts:
            raise ValueError("boom")
        seen.append((list(texts), key))
        return [f"{key}:{t.upper()}" for t in texts]

    async def go():
        batcher = DynamicBatcher(decode, **options)
        results = await asyncio.gather(
            *[batcher.submit(texts, key) for texts, key in jobs], return_exceptions=True
        )
        await batcher.stop()
        return results

    return asyncio.run(go()), seen


def test_batcher_merges_requests_with_equal_settings_only():
    jobs = [(["a"], "greedy"), (["b", "c"], "beam"), (["d"], "greedy"), (["e"], "beam")]
    results, seen = run_batcher(jobs, max_wait_ms=50)
    assert results == [["greedy:A"], ["beam:B", "beam:C"], ["greedy:D"], ["beam:E"]]
    assert sorted(seen) == sorted([(["a", "d"], "greedy"), (["b", "c", "e"], "beam")])


def test_batcher_respects_the_batch_size_and_can_be_switched_off():
    jobs = [([t], "k") for t in "abcde"]
    results, seen = run_batcher(jobs, max_wait_ms=50, max_batch_size=2)
    assert results == [[f"k:{t.upper()}"] for t in "abcde"]
    assert [texts for texts, _ in seen] == [["a", "b"], ["c", "d"], ["e"]]
    results, seen = run_batcher(jobs, enabled=False)
    assert [texts for texts, _ in seen] == [[t] for t in "abcde"]


def test_one_failing_request_does_not_fail_its_batch_neighbours():
    results, _ = run_batcher([(["a"], "k"), (["boom"], "k"), (["c"], "k")], max_wait_ms=50)
    assert results[0] == ["k:A"] and results[2] == ["k:C"]
    assert isinstance(results[1], ValueError)


def test_batcher_refuses_beyond_its_queue():
    results, _ = run_batcher([(["a", "b"], "k"), (["c", "d"], "k")], max_queue=3, max_wait_ms=50)
    assert results[0] == ["k:A", "k:B"] and isinstance(results[1], QueueFull)


# ------------------------------------------------------------------------------ command line
def test_model_names_come_from_folders_or_name_equals_path():
    assert model_names(["runs/dates/", "fr=runs/x", "runs/y/best.safetensors"]) == {
        "dates": Path("runs/dates/"),
        "fr": Path("runs/x"),
        "y": Path("runs/y/best.safetensors"),
    }
    with pytest.raises(RunDirError, match="two models are named 'dates'"):
        model_names(["a/dates", "b/dates"])


def test_serve_refuses_a_missing_run_a_language_model_and_bad_flags(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    lm = tmp_path / "lm"
    train(small_config("train.epochs=1", "model.type=lm", "model.attention=none"), lm, **QUIET)
    with pytest.raises(RunDirError, match="language model"):
        load_models({"lm": lm})
