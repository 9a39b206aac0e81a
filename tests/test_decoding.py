"""Decoding options end to end: sampling, length limits, n-best through the Python API and the
command line, unknown-word replacement, confidence and abstaining, option errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import QUIET, SRC_V, TGT_V, random_batch, small_config, tiny_model_config

import jumok
from jumok.app.cli import main
from jumok.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from jumok.decoding.beam import BeamOptions, adjust, beam_search, length_limits
from jumok.decoding.greedy import greedy, most_likely
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.sampling import SamplingOptions, filter_logits, sample
from jumok.decoding.translator import confidence
from jumok.errors import ConfigError
from jumok.model.seq2seq import build_model
from jumok.training.train import train


@pytest.fixture
def model():
    torch.manual_seed(7)
    return build_model(tiny_model_config(), SRC_V, TGT_V).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("decoding") / "run"
    train(small_config("train.epochs=2"), path, **QUIET)
    return path


# ------------------------------------------------------------------------------- the pieces
def test_top_k_and_top_p_keep_what_they_should_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out[0]).tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2, top_p=1.0)) == [True, True, False, False]
    # cumulative 0.5, 0.8, 0.95: p = 0.8 needs the first two, p = 0.81 the first three
    assert kept(filter_logits(logits, top_k=0, top_p=0.8)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_k=0, top_p=0.81)) == [True, True, True, False]
    assert kept(filter_logits(logits, top_k=0, top_p=0.1)) == [True, False, False, False]
    shuffled = logits[:, [2, 0, 3, 1]]  # the order of the vocabulary does not matter
    assert kept(filter_logits(shuffled, top_k=0, top_p=0.8)) == [False, True, False, True]


def test_greedy_pick_skips_bos_and_padding_and_returns_the_log_probability():
    # row 0: bos has the highest score, then padding, then token 5; row 1: token 4 wins outright
    logits = torch.full((2, 8), -2.0)
    logits[0, BOS_ID], logits[0, PAD_ID], logits[0, 5] = 9.0, 8.0, 3.0
    logits[1, 4] = 1.0
    for dtype in (torch.float32, torch.bfloat16):
        logp_N, token_N = most_likely(logits.to(dtype))
        assert token_N.tolist() == [5, 4]
        assert logp_N.dtype == torch.float32
        expected = logits.log_softmax(-1)  # over every token, bos and padding included
        assert logp_N.tolist() == pytest.approx(
            [expected[0, 5].item(), expected[1, 4].item()], abs=1e-6
        )


def test_sampling_is_seeded_distinct_sorted_and_cold_sampling_is_greedy(model):
    src, src_len, _ = random_batch(B=3, S=6, seed=2)
    limits = BeamOptions(beam_size=1, max_length=8)

    def draw(seed, **kw):
        return sample(model, src, src_len, SamplingOptions(6, seed=seed, **kw), limits)

    first, again, other = draw(1), draw(1), draw(2)
    assert [[h.token_ids for h in s] for s in first] == [[h.token_ids for h in s] for s in again]
    assert [[h.token_ids for h in s] for s in first] != [[h.token_ids for h in s] for s in other]
    for hyps in first:
        ids = [tuple(h.token_ids) for h in hyps]
        assert len(ids) == len(set(ids)) and 1 <= len(ids) <= 6
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:  # scores are the model's own log-probabilities
            assert h.score == pytest.approx(sum(h.token_logprobs))
    cold = draw(3, temperature=1e-4)
    expected = greedy(model, src, src_len, max_length=8)
    for hyps, g in zip(cold, expected, strict=True):
        assert [h.token_ids for h in hyps] == [g.token_ids]


def test_length_limits_by_hand_and_forced_eos():
    opts = BeamOptions(max_length=10, min_length=2, min_length_ratio=0.5, max_length_ratio=1.5)
    min_B, forced_B = length_limits(torch.tensor([2, 6, 9]), opts)
    assert min_B.tolist() == [2, 3, 5]
    assert forced_B.tolist() == [3, 9, 11]  # 14 is past max_length: no forcing, 11 = never
    logp = torch.full((3, 6), -1.0)
    out = adjust(logp, torch.zeros(3, 2, dtype=torch.long), 2, opts, (min_B, forced_B))
    assert torch.isfinite(out[0]).tolist() == [False, False, True, False, False, False]  # forced
    assert out[1, EOS_ID] == -math.inf and out[2, EOS_ID] == -math.inf  # too early for eos


def test_beam_respects_the_ratio_limits(model):
    src, src_len, _ = random_batch(B=4, S=6, seed=4)
    opts = BeamOptions(beam_size=3, n_best=3, max_length=30, max_length_ratio=0.5)
    for hyps, n in zip(beam_search(model, src, src_len, opts), src_len.tolist(), strict=True):
        for h in hyps:
            assert len(h.token_ids) <= math.ceil(0.5 * n)
    opts = BeamOptions(beam_size=3, n_best=2, max_length=30, min_length_ratio=2.0)
    for hyps, n in zip(beam_search(model, src, src_len, opts), src_len.tolist(), strict=True):
        for h in hyps:
            assert len(h.token_ids) >= math.ceil(2.0 * n) or not h.finished


def test_confidence_is_the_geometric_mean_of_token_probabilities():
    assert confidence([math.log(0.5), math.log(0.5)]) == pytest.approx(0.5)
    assert confidence([math.log(0.9), math.log(0.4)]) == pytest.approx(0.6)
    assert confidence([]) == 0.0


# ------------------------------------------------------------------------------ the Python API
def test_n_best_through_the_api(run_dir):
    translator = jumok.load(run_dir)
    [greedy_result] = translator.translate(["september 27, 1994"])
    [result] = translator.translate(["september 27, 1994"], beam=4, n_best=3, max_length=14)
    assert len(result.hypotheses) == 3
    texts = [h.tokens for h in result.hypotheses]
    assert len({tuple(t) for t in texts}) == 3  # distinct
    normalized = [h.normalized_score for h in result.hypotheses]
    assert normalized == sorted(normalized, reverse=True)
    assert result.text == result.hypotheses[0].text and result.score == result.hypotheses[0].score
    for h in result.hypotheses:
        assert len(h.attention) == len(h.tokens)
        assert all(len(row) == len(result.source_tokens) for row in h.attention)
        assert all(abs(sum(row) - 1) < 1e-4 for row in h.attention)
        assert h.score == pytest.approx(sum(h.token_logprobs), abs=1e-4)
        assert 0 < h.confidence <= 1
    # a beam of 4 never ranks below greedy on the model's own normalised score
    assert greedy_result.hypotheses[0].normalized_score is None


def test_sampling_through_the_api_is_reproducible(run_dir):
    translator = jumok.load(run_dir)
    inputs = ["9/27/94", "Sep 27, 1994"]
    a = translator.translate(inputs, sample=True, n_best=4, temperature=1.5, top_k=5, seed=3)
    b = translator.translate(inputs, sample=True, n_best=4, temperature=1.5, top_k=5, seed=3)
    assert [[h.text for h in r.hypotheses] for r in a] == [
        [h.text for h in r.hypotheses] for r in b
    ]


def test_abstaining_returns_no_text_but_keeps_the_hypotheses(run_dir):
    translator = jumok.load(run_dir)
    [kept] = translator.translate(["9/27/94"])
    [quiet] = translator.translate(["9/27/94"], abstain_below=min(1.0, kept.confidence + 1e-6))
    assert quiet.abstained and quiet.text == "" and quiet.hypotheses[0].text == kept.text
    [spoke] = translator.translate(["9/27/94"], abstain_below=kept.confidence / 2)
    assert not spoke.abstained and spoke.text == kept.text


def test_replace_unk_takes_the_most_attended_source_token(run_dir):
    translator = jumok.load(run_dir)
    opts = translator.options(replace_unk=True)
    hyp = Hypothesis(
        token_ids=[4, UNK_ID, EOS_ID],
        score=-1.0,
        token_logprobs=[-0.5, -0.3, -0.2],
        attention_TS=torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]),
        finished=True,
    )
    plain = translator._candidate(hyp, ["a", "b", "c"], False, translator.options())
    replaced = translator._candidate(hyp, ["a", "b", "c"], False, opts)
    assert plain.tokens[1] == "<unk>" and replaced.tokens[1] == "c"
    # reversed models: the attention is flipped back to the original order first
    flipped = translator._candidate(hyp, ["a", "b", "c"], True, opts)
    assert flipped.tokens[1] == "a"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"beem": 3}, "unknown decoding option(s) beem"),
        ({"beam": 2, "n_best": 3}, "decode.n_best (3) cannot exceed decode.beam (2)"),
        ({"beam": 0}, "decode.beam"),
        ({"sample": True, "beam": 3}, "set decode.beam: 1 to sample"),
        ({"top_p": 1.5}, "decode.top_p"),
    ],
)
def test_bad_options_name_the_field(run_dir, options, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        jumok.load(run_dir).translate(["9/27/94"], **options)


# ---------------------------------------------------------------------------- the command line
def test_cli_n_best_text_jsonl_and_plot(run_dir, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("september 27, 1994\n9/27/94\n", encoding="utf-8")
    args = ["translate", str(run_dir), "--input", str(inputs), "--beam", "3", "--n-best", "2"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["1", "1"],
        ["1", "2"],
        ["2", "1"],
        ["2", "2"],
    ]
    assert main([*args, "--format", "jsonl", "--plot", str(tmp_path / "maps")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r["hypotheses"]) for r in records] == [2, 2]
    assert {"text", "score", "tokens", "token_logprobs", "attention", "confidence"} <= set(
        records[0]["hypotheses"][0]
    )
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["0001.png", "0002.png"]


def test_cli_rejects_a_bad_option_before_reading_input(run_dir, capsys):
    assert main(["translate", str(run_dir), "--beam", "2", "--n-best", "5"]) != 0
    assert "decode.n_best (5) cannot exceed decode.beam (2)" in capsys.readouterr().err


# --------------------------------------------------------------------- ensembles and averaging
def test_an_ensemble_of_one_model_equals_the_model(model):
    from jumok.decoding.ensemble import Ensemble

    src, src_len, _ = random_batch(B=4, S=6, seed=8)
    opts = BeamOptions(beam_size=3, n_best=2, max_length=9)
    alone = beam_search(model, src, src_len, opts)
    ensembled = beam_search(Ensemble([model]), src, src_len, opts)
    for a, e in zip(alone, ensembled, strict=True):
        assert [h.token_ids for h in a] == [h.token_ids for h in e]
        assert [h.score for h in a] == pytest.approx([h.score for h in e], abs=1e-5)
        for ha, he in zip(a, e, strict=True):
            torch.testing.assert_close(ha.attention_TS, he.attention_TS)


def test_an_ensemble_averages_probabilities_not_logits(model):
    from jumok.decoding.ensemble import Ensemble

    torch.manual_seed(8)
    other = build_model(tiny_model_config(), SRC_V, TGT_V).eval()
    src, src_len, _ = random_batch(B=2, S=5, seed=9)
    tokens = torch.full((2,), 1)
    ens = Ensemble([model, other])
    logp, _, weights = ens.decode_step(
        tokens, ens.encode(src, src_len).state, ens.encode(src, src_len)
    )
    probs = [
        m.decode_step(tokens, m.encode(src, src_len).state, m.encode(src, src_len))[0].softmax(-1)
        for m in (model, other)
    ]
    torch.testing.assert_close(logp.exp(), (probs[0] + probs[1]) / 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


def test_ensemble_from_the_command_line_and_average_of_identical_checkpoints(
    run_dir, tmp_path, capsys
):
    from jumok.checkpoint import load_checkpoint

    inputs = tmp_path / "in.txt"
    inputs.write_text("september 27, 1994\n9/27/94\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(inputs)]) == 0
    single = capsys.readouterr().out
    assert main(["translate", str(run_dir), str(run_dir), "--input", str(inputs)]) == 0
    assert capsys.readouterr().out == single  # two copies of one model = the model
    out = tmp_path / "avg.safetensors"
    best = run_dir / "best.safetensors"
    assert main(["average", str(best), str(best), str(best), "--out", str(out)]) == 0
    original, averaged = load_checkpoint(best), load_checkpoint(out)
    for key, value in original.state_dict.items():
        torch.testing.assert_close(averaged.state_dict[key], value)
    assert averaged.info["averaged"] == [str(best)] * 3
    before = out.read_bytes()
    assert main(["average", str(best), "--out", str(out)]) != 0  # never overwrites
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_averaging_two_runs_gives_the_mean_and_mismatched_runs_are_named(run_dir, tmp_path):
    from jumok.checkpoint import load_checkpoint
    from jumok.decoding.ensemble import average_checkpoints

    other = tmp_path / "other"
    train(small_config("train.epochs=1", "train.seed=5"), other, **QUIET)
    a, b = run_dir / "best.safetensors", other / "best.safetensors"
    mean = average_checkpoints([a, b], tmp_path / "mean.safetensors")
    for key, value in load_checkpoint(a).state_dict.items():
        expected = (value + load_checkpoint(b).state_dict[key]) / 2
        torch.testing.assert_close(mean.state_dict[key], expected)
    wide = tmp_path / "wide"
    train(
        small_config(
            "train.epochs=1", "model.decoder.hidden_size=16", "model.encoder.hidden_size=16"
        ),
        wide,
        **QUIET,
    )
    with pytest.raises(ConfigError, match="model section differs"):
        average_checkpoints([a, wide / "best.safetensors"], tmp_path / "bad.safetensors")
    reversed_run = tmp_path / "reversed"
    train(small_config("train.epochs=1", "data.reverse_source=false"), reversed_run, **QUIET)
    with pytest.raises(ConfigError, match="data.reverse_source"):
        jumok.load([run_dir, reversed_run])


# ------------------------------------------------------------------------------- interactive
def test_interactive_prints_the_n_best_and_the_attention_as_text(run_dir):
    import io

    from jumok.app.console import interactive, text_attention

    view = text_attention(["a", "b"], ["x", "</s>"], [[0.9, 0.1], [0.0, 1.0]])
    assert view.splitlines()[1].endswith("<- a 0.90") and "█" in view.splitlines()[2]
    lines = iter(["9/27/94", "", ""])
    out = io.StringIO()
    interactive(jumok.load(run_dir), {"beam": 3, "n_best": 2}, read=lambda _: next(lines), out=out)
    text = out.getvalue()
    assert "1. " in text and "2. " in text and "confidence" in text and "<- " in text


# ------------------------------------------------------------------------------------- eval
def test_distinct_n_and_top_output_share_by_hand():
    from jumok.training.metrics import distinct_n, top_output_share

    outputs = ["i do not know", "i do not know", "see you"]
    assert distinct_n(outputs, 1) == pytest.approx(6 / 10)  # i do not know see you / 10 words
    assert distinct_n(outputs, 2) == pytest.approx(4 / 7)
    assert top_output_share(outputs) == (pytest.approx(2 / 3), "i do not know")
    assert distinct_n([], 2) == 0.0 and top_output_share([]) == (0.0, "")


def test_eval_report_records_everything_and_reproduces_its_score(run_dir, tmp_path, capsys):
    from jumok.app.evaluation import evaluate_files

    pairs = [
        ("september 27, 1994", "1994-09-27"),
        ("9/27/94", "1994-09-27"),
        ("Jan 1, 2001", "2001-01-01"),
    ]
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    ref.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    out = tmp_path / "report"
    args = ["eval", str(run_dir), "--src", str(src), "--ref", str(ref), "--beam", "3"]
    assert main([*args, "--out", str(out), "--length-penalty", "average"]) == 0
    assert "| BLEU | chrF | TER |" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["signatures"]["bleu"].startswith("nrefs:1|")
    assert "BLEU" not in report["signatures"]["ter"] and report["signatures"]["ter"]
    assert report["decoding"]["beam"] == 3 and report["decoding"]["length_penalty"] == "average"
    assert report["data"]["src"]["lines"] == 3 and len(report["data"]["ref"]["sha256"]) == 64
    assert report["checkpoints"][0]["path"].endswith("best.safetensors")
    assert {"torch", "sacrebleu", "jumok", "python"} <= set(report["versions"])
    assert "--beam 3" in report["command"] and "--length-penalty average" in report["command"]
    # the recorded command parses, and its flags give back the recorded settings
    import shlex

    from jumok.app.cli import build_parser, decode_options

    parsed = build_parser().parse_args(shlex.split(report["command"])[1:])
    given = {**decode_options(parsed), "max_length": parsed.max_length}
    expected = {
        k: v
        for k, v in report["decoding"].items()
        if k != "batch_size" and v is not None and v is not False
    }
    assert given == expected
    assert len((out / "hypotheses.txt").read_text(encoding="utf-8").splitlines()) == 3
    assert "sacrebleu signatures" in (out / "report.md").read_text(encoding="utf-8")
    # the recorded settings give the same scores again
    again, _ = evaluate_files([run_dir], src, ref, report["decoding"])
    assert again["scores"] == report["scores"]
    # a second report never overwrites the first
    before = (out / "report.json").read_bytes()
    assert main([*args, "--out", str(out)]) != 0
    assert "not empty" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before


def test_eval_names_files_of_different_lengths(run_dir, tmp_path, capsys):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("9/27/94\nJan 1, 2001\n", encoding="utf-8")
    ref.write_text("1994-09-27\n", encoding="utf-8")
    assert main(["eval", str(run_dir), "--src", str(src), "--ref", str(ref)]) != 0
    err = capsys.readouterr().err
    assert "src.txt has 2 lines but" in err and "ref.txt has 1" in err


# ------------------------------------------------- language model, scoring and MMI reranking
@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "run"
    train(small_config("train.epochs=1", "model.type=lm", "model.attention=none"), path, **QUIET)
    return path


def test_score_is_the_step_by_step_log_probability(run_dir):
    from jumok.data.vocab import BOS_ID

    translator = jumok.load(run_dir)
    source, target = "september 27, 1994", "1994-09-27"
    [score] = translator.score([source], [target])
    ids = translator.src_vocab.encode(list(source)).ids
    if translator.config.data.reverse_source:
        ids = ids[::-1]
    model = translator.model
    enc = model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))
    state, token, total = enc.state, torch.tensor([BOS_ID]), 0.0
    for nxt in [*translator.tgt_vocab.encode(list(target)).ids, EOS_ID]:
        logits, state, _ = model.decode_step(token, state, enc)
        total += float(logits.detach().log_softmax(-1)[0, nxt])
        token = torch.tensor([nxt])
    assert score == pytest.approx(total, abs=1e-4)


def test_language_model_trains_generates_and_scores(lm_dir, capsys):
    lm = jumok.load(lm_dir)
    assert lm.model_type == "lm" and lm.model.encoder is None
    a, b = lm.generate(4, seed=3), lm.generate(4, seed=3)
    assert [c.text for c in a] == [c.text for c in b] and len(a) == 4
    # the source is ignored: log P(T) is the same whatever it is given
    assert lm.score(["x", "zzz"], ["1994-09-27", "1994-09-27"]) == pytest.approx(
        [lm.score(["q"], ["1994-09-27"])[0]] * 2
    )
    assert main(["generate", str(lm_dir), "-n", "3", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_generate_refuses_a_seq2seq_run(run_dir, capsys):
    assert main(["generate", str(run_dir)]) != 0
    assert "needs a language model (model.type: lm)" in capsys.readouterr().err


def test_mmi_reranking_scores_and_orders_the_n_best(run_dir, lm_dir):
    from jumok.decoding.translator import Reranker

    translator, lm = jumok.load(run_dir), jumok.load(lm_dir)
    sources = ["september 27, 1994", "Jan 1, 2001"]
    plain = translator.translate(sources, beam=4, n_best=4)
    rerank = Reranker(lm=lm, reverse=translator, weight=0.3)
    reranked = translator.translate(sources, beam=4, n_best=4, rerank=rerank)
    for source, before, after in zip(sources, plain, reranked, strict=True):
        assert sorted(c.text for c in before.hypotheses) == sorted(c.text for c in after.hypotheses)
        values = [c.rerank_score for c in after.hypotheses]
        assert values == sorted(values, reverse=True)
        assert after.text == after.hypotheses[0].text
        for c in after.hypotheses:
            expected = (
                c.score
                - 0.3 * lm.score([c.text], [c.text])[0]
                + 0.3 * translator.score([c.text], [source])[0]
            )
            assert c.rerank_score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ConfigError, match="expected a language model run"):
        Reranker(lm=translator)


def test_lm_config_rejects_what_an_lm_cannot_have():
    from jumok.config import ModelConfig

    with pytest.raises(ValueError, match="set model.attention: none"):
        ModelConfig.model_validate({"type": "lm", "attention": "dot"})
    with pytest.raises(ValueError, match="set model.decoder.peeky: false"):
        ModelConfig.model_validate({"type": "lm", "decoder": {"peeky": True}})


def test_bf16_decoding_runs_under_autocast_and_agrees_with_float32(run_dir, tmp_path, capsys):
    translator = jumok.load(run_dir)
    sources = ["september 27, 1994", "9/27/94", "Jan 1, 2001", "TUESDAY, MAY 3, 1983"]
    fp32 = translator.translate(sources, beam=3)
    bf16 = translator.translate(sources, beam=3, precision="bf16")
    assert next(translator.model.parameters()).dtype == torch.float32  # weights stay float32
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(a.score - b.score) < 0.5 * max(1.0, abs(a.score))
        assert all(abs(sum(row) - 1) < 1e-2 for row in b.attention)
    agree = sum(a.text == b.text for a, b in zip(fp32, bf16, strict=True))
    assert agree >= 3, [(a.text, b.text) for a, b in zip(fp32, bf16, strict=True)]
    inputs = tmp_path / "in.txt"
    inputs.write_text("9/27/94\n", encoding="utf-8")
    assert main(["translate", str(run_dir), "--input", str(inputs), "--precision", "bf16"]) == 0
    assert capsys.readouterr().out.strip()


def test_bf16_decoding_follows_weights_changed_in_place_after_refresh(run_dir):
    translator = jumok.load(run_dir)
    assert translator.translate(["9/27/94"], precision="bf16")[0].tokens != ["</s>"]
    with torch.no_grad():
        translator.model.decoder.output.bias[EOS_ID] += 1e4  # eos first, whatever the input
    kept = translator.translate(["9/27/94"], precision="bf16")[0]
    assert kept.tokens != ["</s>"]  # the bf16 copy holds the weights of its moment
    translator.refresh()
    [result] = translator.translate(["9/27/94"], precision="bf16")
    assert result.tokens == ["</s>"]
    assert next(translator.model.parameters()).dtype == torch.float32
