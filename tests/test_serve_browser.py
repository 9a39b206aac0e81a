"""End to end in a real browser: `jumok serve` on a free loopback port, headless Chromium (Debian's
package, driven by Playwright; no browser download) types a sentence and finds the hypotheses and
a heatmap with one row per output token, controls that start at the run's decode settings, and a
warning for input the model has never seen."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from conftest import QUIET, ServeProcess, small_config

from jumok.training.train import train

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (apt-get install chromium; .ci/run installs it)",
)

# As root Chromium needs --no-sandbox; the others keep it off this machine's closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


DECODE = ("decode.beam=3", "decode.n_best=2", "decode.max_length=20")


def open_page(p, server):
    """Chromium on the page, once it has listed the models; also the requests it made and the
    script errors it met."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page()
    requested, errors = [], []
    page.on("request", lambda r: requested.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    return browser, page, requested, errors


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "dates"
    # decode settings that are none of the page's old built-in values (beam 5, n-best 3, 100)
    train(small_config("train.epochs=3", *DECODE), run, **QUIET)
    served = ServeProcess(run, tmp_path_factory.getbasetemp() / "serve-browser.log")
    yield served.base
    served.stop()


@pytest.mark.slow
def test_the_page_shows_hypotheses_and_the_attention_of_the_chosen_one(server):
    sentence = "september 27, 1994"
    request = urllib.request.Request(
        f"{server}/v1/translate",
        data=json.dumps(
            {"texts": [sentence], "attention": True}  # the run's decode settings
        ).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        [expected] = json.loads(response.read())["results"]

    with sync_api.sync_playwright() as p:
        browser, page, requested, errors = open_page(p, server)
        page.fill("#text", sentence)
        page.click("#go")
        page.wait_for_selector(".hm-row")

        items = page.locator("#hypotheses li .text")
        assert items.count() == 2  # decode.n_best
        assert page.locator("#unknown").is_hidden()  # every character is known
        assert items.nth(0).inner_text() == expected["hypotheses"][0]["text"]
        best = expected["hypotheses"][0]
        assert page.locator(".hm-row").count() == len(best["tokens"])
        assert page.locator(".hm-row").first.locator(".hm-cell").count() == len(
            expected["source_tokens"]
        )

        # hovering a cell names its source token, output token and weight
        cell = page.locator(".hm-row").nth(0).locator(".hm-cell").nth(0)
        cell.hover()
        tip = page.locator("#tooltip")
        tip.wait_for(state="visible")
        weight = best["attention"][0][0]
        assert tip.inner_text() == (
            f"{best['tokens'][0]} ← {expected['source_tokens'][0]}: {weight:.3f}"
        )

        # choosing another hypothesis redraws the map with its own number of rows
        page.locator("#hypotheses li").nth(1).click()
        assert page.locator(".hm-row").count() == len(expected["hypotheses"][1]["tokens"])
        browser.close()

    assert not errors
    assert requested and all(url.startswith(server) for url in requested), requested


@pytest.mark.slow
def test_the_page_starts_at_the_runs_decode_settings(server):
    with sync_api.sync_playwright() as p:
        browser, page, _, errors = open_page(p, server)
        assert page.input_value("#beam") == "3"
        assert page.input_value("#nbest") == "2"
        assert page.input_value("#maxlen") == "20"
        assert "beam 3 · n-best 2 · max length 20" in page.inner_text("#defaults")
        browser.close()
    assert not errors


@pytest.mark.slow
def test_the_page_warns_when_the_input_is_unknown_to_the_model(server):
    with sync_api.sync_playwright() as p:
        browser, page, _, errors = open_page(p, server)
        page.fill("#text", "안녕하세요")  # Hangul: no character of it is in the dates' vocabulary
        page.click("#go")
        page.wait_for_selector("#hypotheses li")
        warning = page.locator("#unknown")
        assert warning.is_visible()
        assert warning.inner_text() == (
            "5 of 5 characters are unknown to this model (read as <unk>); "
            "the output below is a guess."
        )
        # a known sentence afterwards clears it
        page.fill("#text", "march 3, 2001")
        page.click("#go")
        page.wait_for_function("document.querySelector('#unknown').hidden")
        browser.close()
    assert not errors
