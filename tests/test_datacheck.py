"""Data check: exact counts on a hand-made TSV, no overlap on generated data, the CLI, errors.

The hand-made splits below are small enough to count by hand; the counts are worked out in the
comments next to each assertion.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from jumok.app.cli import main
from jumok.config import Config, load_config, validate
from jumok.data.check import (
    WIDTH,
    ambiguous_sources,
    check_data,
    format_report,
    length_summary,
    normalise,
    repeated_pairs,
)
from jumok.data.splits import load_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CHATBOT = SHARED / "chatbot-ko" / "ChatbotData.csv"

TRAIN = [
    "hello world\tbonjour",
    "good day\tbonjour",
    "good day\tbonjour",  # repeats the line above
    "see you\ta bientot",
    "see you\tau revoir",  # "see you" has two targets: ambiguous
    "thank you\tmerci",  # also in dev: load_splits removes it from train
    "how are you?\tca va?",
]
DEV = [
    "thank you\tmerci",  # the exact leak
    "See you!\tsalut",  # near-leak: "see you" after normalisation
    "see you\ta plus",  # source in train exactly, with another target
    "quiz\tjazz",  # q, i, z never occur in a train source; z never in a train target
]
TEST = [
    "GOOD DAY.\tbonjour",  # near-leak of "good day"
    "new one\tnouveau",
    "new one\tnouveau",  # repeated pair
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    """A config file naming the hand-made train/dev/test TSV files."""
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data / "train.tsv", TRAIN)
    write_lines(data / "dev.tsv", DEV)
    write_lines(data / "test.tsv", TEST)
    config = tmp_path / "check.yaml"
    config.write_text(
        "data:\n  train: data/train.tsv\n  dev: data/dev.tsv\n  test: data/test.tsv\n",
        encoding="utf-8",
    )
    return config


def test_normalise_folds_case_width_punctuation_and_spaces():
    assert normalise("  Hello,   WORLD! ") == "hello world"
    assert normalise("Ｈｅｌｌｏ") == "hello"  # NFKC: full-width letters
    assert normalise("뭐 해?") == "뭐 해"
    # Punctuation becomes a space, so different dates stay different.
    assert normalise("1/11/94") != normalise("11/1/94")
    assert normalise("16+75") == "16+75"  # "+" is a symbol, not punctuation


def test_length_summary_is_nearest_rank():
    # n = 10: p50 = the 5th smallest, p90 the 9th, p99 the ceil(9.9) = 10th.
    assert length_summary(list(range(10, 0, -1))) == {
        "min": 1,
        "p50": 5,
        "p90": 9,
        "p99": 10,
        "max": 10,
    }
    assert length_summary([4]) == {"min": 4, "p50": 4, "p90": 4, "p99": 4, "max": 4}
    assert set(length_summary([]).values()) == {None}


def test_repeats_and_ambiguity_count_distinct_cases():
    pairs = [("a", "x"), ("a", "x"), ("a", "x"), ("a", "y"), ("b", "z"), ("c", "z"), ("c", "w")]
    assert repeated_pairs(pairs) == 2  # the 2nd and 3rd ("a", "x")
    assert ambiguous_sources(pairs) == 2  # "a" (x, y) and "c" (z, w); "b" has one target


def test_handmade_counts(handmade: Path):
    report = check_data(load_config(handmade))
    assert "removed 1 train pairs that also occur in dev or test" in report["notes"]
    assert "read 6 train, 4 dev, 3 test pairs" in report["notes"]
    assert report["removed_with_holdout"] == 0  # dev is given: nothing is held out
    train, dev, test = (report["splits"][name] for name in ("train", "dev", "test"))

    # train after the leak is removed: hello world, good day x2, see you x2, how are you?
    assert train["pairs"] == 6
    assert train["repeated_pairs"] == 1 and train["ambiguous_sources"] == 1
    # source lengths 11, 8, 8, 7, 7, 12 -> sorted 7 7 8 8 11 12: p50 = 3rd, p90 = p99 = 6th
    assert train["source"]["length"] == {"min": 7, "p50": 8, "p90": 12, "p99": 12, "max": 12}
    # targets bonjour x3 (7), a bientot (9), au revoir (9), ca va? (6) -> 6 7 7 7 9 9
    assert train["target"]["length"] == {"min": 6, "p50": 7, "p90": 9, "p99": 9, "max": 9}
    assert train["source"]["unknown"] == 0 and train["source"]["unk_rate"] == 0
    assert train["target"]["coverage"] == 1.0
    assert train["overlap"] is None
    # Train source characters: h e l o w r d g a y s u ? and space = 14 (+4 specials);
    # target: b o n j u r a i e t v c ? and space = 14.
    assert report["vocab"] == {"source": 18, "target": 18}

    # dev sources: "thank you" (t n k unknown), "See you!" (S !), "see you" (none),
    # "quiz" (q i z) -> 3 + 2 + 0 + 3 = 8 unknown of 9 + 8 + 7 + 4 = 28 characters.
    assert dev["source"]["tokens"] == 28 and dev["source"]["unknown"] == 8
    assert dev["source"]["unk_rate"] == pytest.approx(8 / 28)
    # Distinct dev source characters: t h a n k y o u S e ! s q i z and space = 16, of which
    # t n k S ! q i z are unknown -> 8 / 16 covered.
    assert (dev["source"]["types"], dev["source"]["types_known"]) == (16, 8)
    assert dev["source"]["coverage"] == 0.5
    # dev targets: merci (m), salut (s l), a plus (p l s), jazz (z z) -> 8 unknown of 20;
    # distinct: m e r c i s a l u t p j z and space = 14, unknown m s l p z -> 9 / 14.
    assert (dev["target"]["tokens"], dev["target"]["unknown"]) == (20, 8)
    assert (dev["target"]["types"], dev["target"]["types_known"]) == (14, 9)
    assert dev["repeated_pairs"] == 0 and dev["ambiguous_sources"] == 0
    # The exact leak left train, so no dev pair is in train; "see you" is, exactly;
    # "See you!" and "see you" are after normalisation.
    assert dev["overlap"] == {
        "pairs": 0,
        "pairs_rate": 0.0,
        "sources": 1,
        "sources_rate": 0.25,
        "sources_normalised": 2,
        "sources_normalised_rate": 0.5,
    }

    assert test["pairs"] == 3 and test["repeated_pairs"] == 1
    assert test["overlap"]["sources"] == 0
    assert test["overlap"]["sources_normalised"] == 1  # "GOOD DAY." ~ "good day"
    # test sources: "GOOD DAY." (8 unknown: all but the space), "new one" x2 (n, n each)
    assert (test["source"]["tokens"], test["source"]["unknown"]) == (23, 12)
    assert test["target"]["unknown"] == 0  # bonjour, nouveau: all in train targets

    assert report["warnings"] == [
        "train: 1 pairs repeat an earlier pair exactly",
        "train: 1 sources occur with more than one different target",
        "source unk rate 28.6% in dev",
        "target unk rate 40.0% in dev",
        "dev: 50.0% of sources also occur in train after normalisation (25.0% exactly)",
        "source unk rate 52.2% in test",
        "test: 1 pairs repeat an earlier pair exactly",
        "test: 33.3% of sources also occur in train after normalisation (0.0% exactly)",
    ]


def test_report_renders_every_split_within_width(handmade: Path):
    report = check_data(load_config(handmade))
    text = format_report(report)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    rows = [line.split() for line in lines]
    # One row per split in each of the three tables.
    assert sum(1 for row in rows if row[:1] == ["dev"]) == 3
    assert ["dev", "0", "0", "0", "(0.0%)", "1", "(25.0%)", "2", "(50.0%)"] in rows
    assert ["train", "6", "7", "8", "12", "12", "12", "6", "7", "9", "9", "9", "0"] in rows
    assert "- removed 1 train pairs that also occur in dev or test" in lines
    assert "- source unk rate 28.6% in dev" in lines
    # A long note (e.g. a deep path) is wrapped, never wider than WIDTH.
    report["notes"].append("/very/long/" + "x" * 150 + " and then some words")
    assert max(len(line) for line in format_report(report).splitlines()) <= WIDTH


def test_empty_test_split_is_reported(handmade: Path):
    cfg = load_config(handmade, ["data.test=null"])
    report = check_data(cfg)
    assert report["splits"]["test"]["pairs"] == 0
    assert report["splits"]["test"]["source"]["unk_rate"] is None
    assert "test is empty" in report["warnings"]
    rows = [line.split() for line in format_report(report).splitlines()]
    assert ["test", "0", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "0"] in rows


def test_generated_addition_has_no_overlap():
    cfg = validate(
        {"data": {"generate": {"task": "addition", "size": 400, "dev_size": 50, "test_size": 50}}}
    )
    report = check_data(cfg)
    assert report["notes"][0].startswith("generated 400 distinct addition pairs")
    for name in ("dev", "test"):
        split = report["splits"][name]
        assert split["pairs"] == 50
        # Sources are distinct, and "a+b" is its own normal form: nothing can overlap.
        assert (split["overlap"]["pairs"], split["overlap"]["sources"]) == (0, 0)
        assert split["overlap"]["sources_normalised"] == 0
        assert split["repeated_pairs"] == 0 and split["ambiguous_sources"] == 0
    assert not any("train after normalisation" in w for w in report["warnings"])


def test_generated_dates_have_case_variant_near_leaks():
    # Generated date sources are distinct, but the same date may occur in train in another case
    # ("march 3, 1990" vs "MARCH 3, 1990"); the normalised overlap counts exactly those.
    cfg = validate({"data": {"generate": {"size": 2000, "dev_size": 200, "test_size": 200}}})
    splits = load_splits(cfg.data)
    train_lower = {source.lower() for source, _ in splits.train}
    expected = sum(1 for source, _ in splits.dev if source.lower() in train_lower)
    overlap = check_data(cfg)["splits"]["dev"]["overlap"]
    assert overlap["sources"] == 0
    assert overlap["sources_normalised"] == expected > 0


def test_sentencepiece_writes_nothing_next_to_the_data(handmade: Path, tmp_path: Path):
    cfg = load_config(
        handmade, ["data.tokenizer.kind=sentencepiece", "data.tokenizer.vocab_size=40"]
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    report = check_data(cfg)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert report["tokenizer"] == {"kind": "sentencepiece", "joint": True}
    assert report["splits"]["train"]["source"]["unknown"] == 0
    work = tmp_path / "work"
    check_data(cfg, workdir=work)
    assert [p.name for p in work.iterdir()] == ["spm.model"]


def test_cli_prints_tables_and_writes_json(handmade: Path, tmp_path: Path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", str(handmade), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "repeated pairs" in printed and "normalised sources" in printed
    assert "- dev: 50.0% of sources also occur in train after normalisation" in printed
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(check_data(load_config(handmade))))


def test_cli_set_override_applies(handmade: Path, capsys):
    assert main(["data", "check", str(handmade), "--set", "data.test=null"]) == 0
    assert "- test is empty" in capsys.readouterr().out


def test_cli_missing_data_file_is_one_error(handmade: Path, tmp_path: Path, capsys):
    (tmp_path / "data" / "dev.tsv").unlink()
    out = tmp_path / "report.json"
    assert main(["data", "check", str(handmade), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jumok: error: ") and "dev.tsv" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_json_into_missing_folder_fails_first(handmade: Path, tmp_path: Path, capsys):
    assert main(["data", "check", str(handmade), "--json", str(tmp_path / "no" / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "jumok: error: --json" in captured.err and captured.out == ""


@pytest.mark.skipif(not CHATBOT.exists(), reason=f"{CHATBOT} not present")
def test_chatbot_csv_accounts_for_every_row():
    cfg = Config.model_validate(
        {"data": {"train": str(CHATBOT), "source_field": "Q", "target_field": "A"}}
    )
    assert cfg.data.tokenizer.kind == "char"
    with open(CHATBOT, encoding="utf-8-sig", newline="") as f:
        rows = [(row["Q"].strip(), row["A"].strip()) for row in csv.DictReader(f)]
    assert len(rows) == 11823
    dropped = sum(1 for q, a in rows if not q or not a)
    report = check_data(cfg)
    train, dev = report["splits"]["train"], report["splits"]["dev"]
    # The hold-out takes 1000 distinct pairs and every train copy of them; count those copies
    # here independently of jumok.data.check.
    dev_pairs = set(load_splits(cfg.data).dev)
    copies = sum(1 for pair in rows if pair in dev_pairs) - len(dev_pairs)
    assert report["removed_with_holdout"] == copies
    assert train["pairs"] + dev["pairs"] + copies == 11823 - dropped
    assert dev["pairs"] == 1000 and report["splits"]["test"]["pairs"] == 0
    assert train["ambiguous_sources"] > 0
    assert any("more than one different target" in w for w in report["warnings"])
