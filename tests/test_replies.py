"""Reply sets: the batched shared-encoder scores equal Translator.score, ranking by the run's
length normalisation, diversity, teacher-forced attention equal to the search's, the command
line and the server's POST /v1/reply."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

import jumok
from jumok.app.cli import main
from jumok.decoding import replies as replies_module
from jumok.decoding.replies import ReplySet, choose, score_table, similarity
from jumok.errors import DataError

SOURCES = ["Sep 27, 1994", "1/2/03", "TUESDAY, MARCH 4, 2008"]
CANDIDATES = ["1994-09-27", "2003-01-02", "2008-03-04", "1994-09-2", "2000-01-01"]


@pytest.fixture
def translator(matrix_run):
    return jumok.load(matrix_run)


def test_batched_scores_equal_translator_score_pair_by_pair(translator, monkeypatch):
    # a small logit budget forces several passes of candidates
    monkeypatch.setattr(replies_module, "LOGIT_BUDGET", 3 * 12 * 20)
    found = translator.reply(SOURCES, CANDIDATES, n_best=5, length_penalty="none")
    for source, result in zip(SOURCES, found, strict=True):
        expected = translator.score([source] * len(CANDIDATES), CANDIDATES)
        best_first = sorted(zip(expected, CANDIDATES, strict=True), reverse=True)
        assert [h.text for h in result.hypotheses] == [t for _, t in best_first]
        for h, (score, _) in zip(result.hypotheses, best_first, strict=True):
            assert h.score == pytest.approx(score, abs=1e-4)
            assert sum(h.token_logprobs) == pytest.approx(h.score, abs=1e-4)


def test_ranking_uses_the_runs_length_normalisation(translator):
    texts = ["1994", "1994-09-27", "1994-09-27-1994-09"]
    totals = translator.score([SOURCES[0]] * 3, texts)
    for kind, divisor in (("average", lambda n: n), ("gnmt", lambda n: ((5 + n) / 6) ** 0.6)):
        found = translator.reply([SOURCES[0]], texts, n_best=3, length_penalty=kind, alpha=0.6)
        # n counts eos: a character model's tokens are the characters
        normalized = [t / divisor(len(x) + 1) for t, x in zip(totals, texts, strict=True)]
        order = sorted(range(3), key=lambda i: -normalized[i])
        assert [h.text for h in found[0].hypotheses] == [texts[i] for i in order]
        assert [h.normalized_score for h in found[0].hypotheses] == pytest.approx(
            [normalized[i] for i in order], abs=1e-4
        )


def test_teacher_forced_attention_and_score_equal_the_searchs(translator):
    """The greedy output, offered as a reply, gets the score and attention greedy search gave."""
    searched = translator.translate(SOURCES, beam=1)
    found = translator.reply(SOURCES, [t.text for t in searched] + ["2000-01-01"], n_best=4)
    for s, r in zip(searched, found, strict=True):
        same = next(h for h in r.hypotheses if h.text == s.text)
        # a search cut at max_length has no eos; the reply always ends with one: compare the
        # tokens the search made
        n = len(s.tokens)
        assert n == len(same.tokens) - (0 if s.tokens[-1] == "</s>" else 1)
        assert sum(same.token_logprobs[:n]) == pytest.approx(s.score, abs=1e-4)
        attention = torch.tensor(same.attention[:n])
        assert attention == pytest.approx(torch.tensor(s.attention), abs=1e-5)
        assert r.source_tokens == s.source_tokens
        weights = torch.tensor(r.hypotheses[0].attention)
        assert weights.shape == (len(r.tokens), len(r.source_tokens))
        assert weights.sum(-1) == pytest.approx(torch.ones(len(r.tokens)), abs=1e-5)


def test_choose_and_similarity_on_a_hand_made_table():
    texts = ["Sounds good!", "Sounds good.", "No, thanks.", "Sounds great!"]
    scores = [3.0, 2.0, 1.0, 0.5]
    assert choose(scores, texts, 3, None) == [0, 1, 2]
    # "Sounds good." is nearly "Sounds good!" (chrF ~0.8): skipped at 0.5; so is "Sounds great!"
    assert similarity(texts[0], texts[1]) > 0.7
    assert similarity(texts[0], texts[0]) == pytest.approx(1.0)
    assert choose(scores, texts, 3, 0.5) == [0, 2]
    assert choose(scores, texts, 3, 0.95) == [0, 1, 2]


def test_score_table_shape_and_one_encoder_pass_per_batch(translator, monkeypatch):
    replies = ReplySet.build(translator, CANDIDATES)
    calls = []
    encode = translator.model.encode
    monkeypatch.setattr(translator.model, "encode", lambda *a: calls.append(1) or encode(*a))
    src_BS = torch.tensor([[5, 6, 7], [5, 6, 0]])
    table = score_table(translator.model, src_BS, torch.tensor([3, 2]), replies, 20)
    assert table.shape == (2, 5) and bool((table < 0).all())
    assert calls == [1]


def test_blank_inputs_are_skipped_and_an_empty_reply_is_refused(translator):
    found = translator.reply(["", SOURCES[0]], CANDIDATES)
    assert found[0].skipped and found[1].text in CANDIDATES
    with pytest.raises(DataError, match="line 2: empty reply"):
        translator.reply(SOURCES, ["1994-09-27", " "])


def test_translate_reply_set_on_the_command_line(matrix_run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("\n".join(SOURCES) + "\n")
    (tmp_path / "replies.txt").write_text("\n".join(CANDIDATES) + "\n")
    argv = ["translate", str(matrix_run), "--input", str(tmp_path / "in.txt"),
            "--reply-set", str(tmp_path / "replies.txt")]  # fmt: skip
    assert main([*argv, "--n-best", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        [str(i), str(k)] for i in (1, 2, 3) for k in (1, 2)
    ]
    assert all(line.split("\t")[3] in CANDIDATES for line in lines)
    assert main([*argv, "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [r["hypotheses"][0]["text"] for r in rows]
    assert all(r["attention"] is not None for r in rows)
    (tmp_path / "replies.txt").write_text("1994-09-27\n\n")
    assert main(argv) == 2
    assert f"{tmp_path / 'replies.txt'}:2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags", [["--beam", "3"], ["--sample"], ["--prefix", "19"], ["--mmi-lm", "x"]]
)
def test_search_flags_with_a_reply_set_are_refused_not_ignored(matrix_run, tmp_path, capsys, flags):
    (tmp_path / "in.txt").write_text("\n".join(SOURCES) + "\n")
    (tmp_path / "replies.txt").write_text("\n".join(CANDIDATES) + "\n")
    argv = ["translate", str(matrix_run), "--input", str(tmp_path / "in.txt"),
            "--reply-set", str(tmp_path / "replies.txt"), *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not search" in err and flags[0] in err and "Traceback" not in err


def test_the_server_answers_from_its_reply_set(matrix_run, tmp_path):
    from jumok.app.serve import ServeConfig, create_app, load_models

    run = tmp_path / "run"
    shutil.copytree(matrix_run, run)
    (tmp_path / "replies.txt").write_text("\n".join(CANDIDATES) + "\n")
    config = ServeConfig(reply_set=str(tmp_path / "replies.txt"))
    with TestClient(create_app(load_models({"dates": run}), config)) as client:
        body = {"texts": SOURCES, "n_best": 2, "attention": True}
        answer = client.post("/v1/reply", json=body)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        expected = jumok.load(run).reply(SOURCES, CANDIDATES, n_best=2)
        assert [[h["text"] for h in r["hypotheses"]] for r in results] == [
            [h.text for h in e.hypotheses] for e in expected
        ]
        assert results[0]["hypotheses"][0]["attention"] is not None
        assert client.post("/v1/reply", json={**body, "n_best": 99}).status_code == 422
    with TestClient(create_app(load_models({"dates": run}), ServeConfig())) as client:
        refused = client.post("/v1/reply", json={"texts": ["1/2/03"]})
        assert refused.status_code == 404 and "--reply-set" in refused.json()["detail"]
