"""Forced prefixes (issue 32, item 1): the output starts with the prefix's tokens, scored with the
model's own log-probabilities, then is decoded freely; greedy, beam (n-best), sampling, an
ensemble, a language model, the command line (--prefix, --input-format jsonl) and the server."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SRC_V, TGT_V, random_batch, tiny_model_config
from fastapi.testclient import TestClient

import jumok
from jumok.app.cli import main
from jumok.app.serve import ServeConfig, create_app
from jumok.checkpoint import load_checkpoint
from jumok.config import ModelConfig
from jumok.decoding.beam import BeamOptions, beam_search
from jumok.decoding.greedy import greedy, greedy_stream
from jumok.decoding.prefix import Forced, Prefixes
from jumok.decoding.sampling import SamplingOptions, sample
from jumok.decoding.translator import Translator
from jumok.errors import DataError
from jumok.model.seq2seq import build_model

SOURCES = ["september 27, 1994", "Jan 2, 2003", "TUESDAY, MARCH 5, 1991"]


@pytest.fixture
def model():
    torch.manual_seed(7)
    return build_model(tiny_model_config(), SRC_V, TGT_V).eval()


@pytest.fixture(scope="module")
def translator(matrix_run):
    return jumok.load(matrix_run)


# ------------------------------------------------------------------------------- the mask
def test_forcing_keeps_only_the_prefix_token_with_the_value_given():
    logp_NV = torch.log_softmax(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), -1)
    before = logp_NV.clone()
    forced = Forced(torch.tensor([True, False, True]), torch.tensor([4, 1, 2]))
    value_N = forced.read(logp_NV)
    assert value_N.tolist() == [before[0, 4].item(), before[1, 1].item(), before[2, 2].item()]
    forced.apply_(logp_NV, torch.tensor([-0.5, -9.0, -1.5]))
    assert torch.equal(logp_NV[1], before[1])  # outside its prefix: untouched
    assert logp_NV[0].tolist() == [-math.inf] * 4 + [-0.5, -math.inf]
    assert logp_NV[2].tolist() == [-math.inf] * 2 + [-1.5] + [-math.inf] * 3


def test_prefixes_say_which_rows_are_inside_and_their_token():
    prefixes = Prefixes.build([[5, 6], [], [7]], torch.device("cpu"))
    forced = prefixes.at(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 0, 0, 1]))
    assert forced.inside_N.tolist() == [True, True, False, True, False]
    assert forced.token_N[forced.inside_N].tolist() == [5, 6, 7]
    assert Prefixes.build([[], []], torch.device("cpu")) is None  # no prefix: the plain search
    assert prefixes.part(1, 2).length_G.tolist() == [0, 1]


# ------------------------------------------------------------------ every search, tiny model
PREFIXES = [[5, 6, 7], [], [9], [4, 4, 4, 4]]


def _teacher_forced(model, src_BS, src_len_B, b: int, ids: list[int]) -> list[float]:
    """log P of each of ``ids`` for sentence b, fed one step at a time (eos not added)."""
    enc = model.encode(src_BS[b : b + 1, : int(src_len_B[b])], src_len_B[b : b + 1])
    state, token, out = enc.state, torch.tensor([1]), []
    for nxt in ids:
        logits, state, _ = model.decode_step(token, state, enc)
        out.append(float(logits.log_softmax(-1)[0, nxt]))
        token = torch.tensor([nxt])
    return out


def _check_prefixed(model, src_BS, src_len_B, found):
    """Every hypothesis of sentence b starts with PREFIXES[b], whose log-probabilities are the
    model's teacher-forced ones, and its score is the sum of its token log-probabilities."""
    for b, hyps in enumerate(found):
        P = len(PREFIXES[b])
        forced = _teacher_forced(model, src_BS, src_len_B, b, PREFIXES[b])
        for h in hyps:
            assert h.token_ids[:P] == PREFIXES[b]
            assert h.token_logprobs[:P] == pytest.approx(forced, abs=1e-5)
            assert h.score == pytest.approx(sum(h.token_logprobs), abs=1e-4)
            if h.attention_TS is not None:
                assert h.attention_TS.shape[0] == len(h.token_ids)  # the prefix has rows too


@torch.no_grad()
def test_greedy_beam_and_sampling_start_with_the_prefix_and_score_it(model):
    src_BS, src_len_B, _ = random_batch()
    prefixes = Prefixes.build(PREFIXES, src_BS.device)
    found = [[h] for h in greedy(model, src_BS, src_len_B, 12, None, prefixes)]
    _check_prefixed(model, src_BS, src_len_B, found)
    streamed = greedy_stream(
        model, [(src_BS[:2], src_len_B[:2]), (src_BS[2:], src_len_B[2:])], 12, 2, None, prefixes
    )
    assert [h.token_ids for hyps in streamed for h in hyps] == [h[0].token_ids for h in found]
    options = BeamOptions(beam_size=3, n_best=3, max_length=12)
    beams = beam_search(model, src_BS, src_len_B, options, None, prefixes)
    _check_prefixed(model, src_BS, src_len_B, beams)
    for hyps in beams:  # the beam is one hypothesis until the prefix ends: no duplicates
        assert len({tuple(h.token_ids) for h in hyps}) == len(hyps) == 3
    samples = sample(
        model,
        src_BS,
        src_len_B,
        SamplingOptions(samples=4),
        BeamOptions(max_length=12),
        None,
        prefixes,
    )
    _check_prefixed(model, src_BS, src_len_B, samples)


@torch.no_grad()
def test_a_row_without_prefix_decodes_as_without_any(model):
    src_BS, src_len_B, _ = random_batch()
    prefixes = Prefixes.build(PREFIXES, src_BS.device)
    plain = greedy(model, src_BS, src_len_B, 12)
    assert greedy(model, src_BS, src_len_B, 12, None, prefixes)[1].token_ids == plain[1].token_ids
    options = BeamOptions(beam_size=3, n_best=2, max_length=12)
    plain_beam = beam_search(model, src_BS, src_len_B, options)[1]
    with_beam = beam_search(model, src_BS, src_len_B, options, None, prefixes)[1]
    assert [h.token_ids for h in with_beam] == [h.token_ids for h in plain_beam]
    assert [h.score for h in with_beam] == pytest.approx([h.score for h in plain_beam])


@torch.no_grad()
def test_the_prefix_beats_the_constraints_and_then_they_apply(model):
    """Repetition blocking would forbid the prefix's repeated token; the prefix still comes out,
    with its unpenalised log-probability, and the blocking holds after it."""
    src_BS, src_len_B, _ = random_batch()
    prefixes = Prefixes.build(PREFIXES, src_BS.device)
    options = BeamOptions(beam_size=2, max_length=12, no_repeat_ngram=1, repetition_penalty=2.0)
    found = beam_search(model, src_BS, src_len_B, options, None, prefixes)
    _check_prefixed(model, src_BS, src_len_B, found)
    rest = found[3][0].token_ids[4:]
    assert 4 not in rest  # a 1-gram seen in the prefix is blocked after it


@torch.no_grad()
def test_a_language_model_continues_a_prefix():
    torch.manual_seed(3)
    raw = tiny_model_config().model_dump()
    raw["decoder"]["init"] = "zero"
    config = ModelConfig.model_validate({**raw, "type": "lm", "attention": "none"})
    lm = build_model(config, SRC_V, TGT_V).eval()
    src_BS, src_len_B = torch.full((4, 1), 3), torch.ones(4, dtype=torch.long)
    prefixes = Prefixes.build(PREFIXES, src_BS.device)
    for found in (
        [[h] for h in greedy(lm, src_BS, src_len_B, 12, None, prefixes)],
        beam_search(lm, src_BS, src_len_B, BeamOptions(beam_size=2, max_length=12), None, prefixes),
    ):
        _check_prefixed(lm, src_BS, src_len_B, found)


# --------------------------------------------------------------------- the Python API, a run
@pytest.mark.parametrize(
    "options",
    [{}, {"beam": 4, "n_best": 3}, {"sample": True, "n_best": 3, "seed": 2}],
    ids=["greedy", "beam", "sampling"],
)
def test_translate_keeps_the_prefix_and_scores_it_as_score_does(translator, options):
    found = translator.translate(SOURCES, prefix="2017-", **options)
    for source, result in zip(SOURCES, found, strict=True):
        for h in result.hypotheses:
            assert h.text.startswith("2017-") and h.tokens[:5] == list("2017-")
            assert len(h.attention) == len(h.tokens)
            # the whole output teacher-forced: the same log-probability (a sampled <unk> is
            # not in the text, so the text would not stand for the tokens)
            if h.finished and "<unk>" not in h.tokens:
                [expected] = translator.score([source], [h.text])
                assert h.score == pytest.approx(expected, abs=1e-4)


def test_a_prefix_the_model_would_choose_changes_nothing(translator):
    """Forcing the first tokens greedy search picks anyway gives the same output and score."""
    plain = translator.translate(SOURCES)
    heads = ["".join(r.tokens[:8]) for r in plain]
    assert all("<" not in head for head in heads)  # no <unk> or </s> among them
    again = translator.translate(SOURCES, prefix=heads)
    for a, b in zip(plain, again, strict=True):
        assert (b.text, b.tokens) == (a.text, a.tokens)
        assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-6)
        assert torch.allclose(torch.tensor(b.attention), torch.tensor(a.attention), atol=1e-6)


def test_an_empty_prefix_is_no_prefix(translator):
    for options in ({}, {"beam": 3, "n_best": 2}):
        plain = [r.to_dict() for r in translator.translate(SOURCES, **options)]
        assert [r.to_dict() for r in translator.translate(SOURCES, prefix="", **options)] == plain
        per_text = translator.translate(SOURCES, prefix=[None, "", None], **options)
        assert [r.to_dict() for r in per_text] == plain


def test_one_prefix_per_text(translator):
    found = translator.translate(SOURCES, prefix=["1994-", None, "1991-03"], beam=3)
    assert found[0].text.startswith("1994-") and found[2].text.startswith("1991-03")
    assert found[1].text == translator.translate([SOURCES[1]], beam=3)[0].text


def test_an_ensemble_and_bf16_keep_the_prefix(translator, matrix_run):
    ckpt = load_checkpoint(matrix_run / "best.safetensors")
    pair = Translator.from_checkpoints([ckpt, ckpt], ["a", "b"], "cpu")
    alone = translator.translate(SOURCES, prefix="2003-", beam=3)
    both = pair.translate(SOURCES, prefix="2003-", beam=3)
    assert [r.text for r in both] == [r.text for r in alone]  # an ensemble of one model, twice
    assert all(r.text.startswith("2003-") for r in both)
    assert all(
        r.text.startswith("2003-")
        for r in translator.translate(SOURCES, prefix="2003-", precision="bf16")
    )


@pytest.mark.parametrize(
    "prefix, says",
    [
        ("20x7", ["prefix: 'x'", "not in the target vocabulary"]),
        ("1" * 20, ["prefix: 20 tokens", "max_length 20", "at most 19"]),
        (["1994", "2003"], ["prefix: 2 prefixes for 3 inputs"]),
        ([None, "x", None], ["prefix of input 2: 'x'"]),
    ],
)
def test_bad_prefixes_are_named(translator, prefix, says):
    with pytest.raises(DataError) as err:
        translator.translate(SOURCES, prefix=prefix)
    for fragment in says:
        assert fragment in str(err.value)


# ------------------------------------------------------------------------ the command line
def test_cli_prefix_and_jsonl_lines(matrix_run, tmp_path, capsys):
    plain = tmp_path / "in.txt"
    plain.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    assert main(["translate", str(matrix_run), "--input", str(plain), "--prefix", "2017-"]) == 0
    assert all(line.startswith("2017-") for line in capsys.readouterr().out.splitlines())
    lines = [
        {"text": SOURCES[0], "prefix": "1999-"},
        {"text": SOURCES[1]},  # --prefix applies
        {"text": SOURCES[2], "prefix": None},  # none, whatever --prefix says
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    argv = ["translate", str(matrix_run), "--input", str(data), "--input-format", "jsonl"]
    assert main([*argv, "--prefix", "2017-", "--beam", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1999-") and out[1].startswith("2017-")
    assert out[2] == jumok.load(matrix_run).translate([SOURCES[2]], beam=3)[0].text


@pytest.mark.parametrize(
    "line, says",
    [
        ('{"text": "Jan 2, 2003", "prefx": "1"}', "in.jsonl:2: field 'prefx' is unknown"),
        ('{"text": "Jan 2, 2003", "prefix": 7}', "in.jsonl:2: field 'prefix': expected a string"),
        ('{"prefix": "1"}', "in.jsonl:2: field 'text' is missing"),
        ('"Jan 2, 2003"', "in.jsonl:2: a JSON str"),
        ("{text: 1}", "in.jsonl:2: not valid JSON"),
        ('{"text": "Jan 2, 2003", "prefix": "x"}', "prefix of input 2: 'x'"),
    ],
)
def test_cli_bad_jsonl_lines_are_named(matrix_run, tmp_path, capsys, line, says):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "Jan 2, 2003"}\n' + line + "\n", encoding="utf-8")
    argv = ["translate", str(matrix_run), "--input", str(data), "--input-format", "jsonl"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ the server
def test_server_prefix_for_all_and_per_text(translator):
    with TestClient(create_app({"dates": translator}, ServeConfig())) as client:
        one = client.post("/v1/translate", json={"texts": SOURCES, "prefix": "2017-"}).json()
        assert all(r["text"].startswith("2017-") for r in one["results"])
        body = {"texts": SOURCES, "prefix": ["1999-", None, ""], "beam": 3}
        each = client.post("/v1/translate", json=body).json()["results"]
        assert each[0]["text"].startswith("1999-")
        direct = translator.translate(SOURCES[1:], beam=3)
        assert [r["text"] for r in each[1:]] == [r.text for r in direct]
        wrong = client.post("/v1/translate", json={"texts": SOURCES, "prefix": [None, "x", None]})
        assert wrong.status_code == 422 and wrong.json()["field"] == "prefix[1]"
        assert "'x'" in wrong.json()["detail"]
        short = client.post("/v1/translate", json={"texts": SOURCES, "prefix": ["1"]})
        assert short.status_code == 422 and short.json()["field"] == "prefix"
