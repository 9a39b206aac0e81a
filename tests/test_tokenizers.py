"""Tokenizers: char equals jumok's tokenize_chars, word round trips (property-based), SentencePiece
trains deterministically, round trips Korean and English, is saved once and then loaded."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumok.data.readers import read_parallel
from jumok.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    make_tokenizers,
    tokenizer_files,
)
from jumok.data.vocab import BOS, EOS, PAD, tokenize_chars
from jumok.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

KO_WORDS = ["나는", "학생", "입니다", "우리는", "대학생", "사랑", "해요", "오늘", "날씨가", "좋다"]
EN_WORDS = ["I", "am", "a", "student", "we", "love", "the", "weather", "is", "good", "today"]


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    """``n`` generated sentences of 3-7 words ending in a punctuation mark."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) + rng.choice(".?!")
        for _ in range(n)
    ]


KO = sentences(KO_WORDS, 200, seed=1)
EN = sentences(EN_WORDS, 200, seed=2)
PAIRS = list(zip(KO, EN, strict=True))


# ---------------------------------------------------------------------------------------- char
@pytest.mark.parametrize("text", ["Sep 27, 1994", "나는 학생입니다.", "  two  spaces ", "", "a\tb"])
def test_char_tokenizer_is_tokenize_chars(text):
    tokenizer = CharTokenizer()
    assert isinstance(tokenizer, Tokenizer) and tokenizer.kind == "char"
    assert tokenizer.tokenize(text) == tokenize_chars(text)
    assert tokenizer.detokenize(tokenizer.tokenize(text)) == text
    assert tokenizer.detokenize([BOS, "a", PAD, "b", EOS]) == "ab"


# ---------------------------------------------------------------------------------------- word
def test_word_tokenizer_examples():
    tokenizer = WordTokenizer()
    assert tokenizer.tokenize("Don't go, 학생!") == ["Don't", "▁go", ",", "▁학생", "!"]
    assert tokenizer.tokenize("  나는 학생입니다.\n") == ["나는", "▁학생입니다", "."]
    assert tokenizer.tokenize("l'homme (3.5)") == ["l'homme", "▁(", "3", ".", "5", ")"]
    # A literal ▁ is a token of its own; bare it is the character, "▁▁" is a space before it.
    assert tokenizer.tokenize("a▁b ▁c") == ["a", "▁", "b", "▁▁", "c"]
    assert tokenizer.detokenize(["a", "▁", "b", "▁▁", "c"]) == "a▁b ▁c"
    assert tokenizer.detokenize(["▁go", BOS, ",", EOS]) == " go,"
    assert tokenizer.tokenize("") == [] and tokenizer.detokenize([]) == ""


WORDY = st.lists(
    st.one_of(
        st.sampled_from(KO_WORDS + EN_WORDS + ["don't", "l'homme", "3.14", "▁", "_x_"]),
        st.sampled_from(list(".,!?;:'\"()-…«»¿") + ["...", "!?"]),
        st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u202f", "\u3000"]),
    ),
    max_size=30,
).map("".join)


@given(WORDY)
def test_word_round_trip_on_words_punctuation_and_spaces(text):
    tokenizer = WordTokenizer()
    tokens = tokenizer.tokenize(text)
    assert tokenizer.detokenize(tokens) == " ".join(text.split())
    assert all(token and not any(ch.isspace() for ch in token) for token in tokens)


@given(st.text())
def test_word_round_trip_on_any_text(text):
    tokenizer = WordTokenizer()
    assert tokenizer.detokenize(tokenizer.tokenize(text)) == " ".join(text.split())


# -------------------------------------------------------------------------------- sentencepiece
@pytest.fixture(scope="module")
def joint_model(tmp_path_factory) -> SentencePieceTokenizer:
    path = tmp_path_factory.mktemp("spm") / "joint.model"
    return SentencePieceTokenizer.train(KO + EN, path, vocab_size=150)


@pytest.mark.parametrize(
    "text", [KO[0], EN[0], "우리는 대학생입니다!", "we love the weather today.", "나는 student."]
)
def test_sentencepiece_round_trip(joint_model, text):
    pieces = joint_model.tokenize(text)
    assert joint_model.detokenize(pieces) == text
    assert 1 < len(pieces) < len(text)  # subwords: more than one, fewer than characters
    assert pieces[0].startswith("▁")


def test_sentencepiece_learns_subwords_and_keeps_unseen_characters(joint_model):
    assert joint_model.kind == "sentencepiece" and isinstance(joint_model, Tokenizer)
    pieces = joint_model.pieces()
    assert pieces[0] == "<unk>" and len(pieces) <= 150
    assert {"▁학생", "▁student"} <= set(pieces)
    text = "Zebra 犬 학생."  # Z, b, r, 犬 never occur in training
    assert joint_model.detokenize(joint_model.tokenize(text)) == text
    assert joint_model.detokenize([BOS, *joint_model.tokenize("나는 학생"), EOS]) == "나는 학생"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_training_is_deterministic(tmp_path, model_type):
    first = SentencePieceTokenizer.train(KO, tmp_path / "a.model", 80, model_type=model_type)
    SentencePieceTokenizer.train(KO, tmp_path / "b.model", 80, model_type=model_type)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.model", "b.model"]  # no leftovers
    loaded = SentencePieceTokenizer.load(tmp_path / "a.model")
    assert loaded.tokenize(KO[5]) == first.tokenize(KO[5])


def test_sentencepiece_training_is_silent():
    """SentencePiece logs pages of settings to stderr by default; a fresh process shows none."""
    code = (
        "import sys, tempfile, pathlib\n"
        "from jumok.data.tokenizers import SentencePieceTokenizer\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "SentencePieceTokenizer.train(['hello world', '안녕 세계'] * 20, d / 'm.model', 30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_sentencepiece_errors(tmp_path):
    with pytest.raises(DataError, match=r"e\.model: no text to train a SentencePiece model on"):
        SentencePieceTokenizer.train(["", "  "], tmp_path / "e.model", 50)
    with pytest.raises(DataError, match=r"s\.model: SentencePiece training failed: Vocab"):
        SentencePieceTokenizer.train(KO, tmp_path / "s.model", vocab_size=5)
    assert list(tmp_path.iterdir()) == []  # a failed training leaves nothing behind
    with pytest.raises(DataError, match=r"missing\.model: SentencePiece model not found"):
        SentencePieceTokenizer.load(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"\x00not a model at all")
    with pytest.raises(DataError, match=r"bad\.model: not a SentencePiece model"):
        SentencePieceTokenizer.load(tmp_path / "bad.model")
    (tmp_path / "empty.model").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.model: empty file"):
        SentencePieceTokenizer.load(tmp_path / "empty.model")
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer.train(KO, tmp_path / "w.model", 50, model_type="wordpiece")


# ------------------------------------------------------------------------------ make_tokenizers
def test_make_tokenizers_joint_trains_once_then_loads(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    source, target = make_tokenizers("sentencepiece", PAIRS, run_dir, vocab_size=150)
    assert source is target
    assert sorted(p.name for p in run_dir.iterdir()) == tokenizer_files("sentencepiece", True)
    model = run_dir / "spm.model"
    stamp = model.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although spm.model exists")

    monkeypatch.setattr(SentencePieceTokenizer, "train", no_training)
    again, _ = make_tokenizers("sentencepiece", PAIRS, run_dir, vocab_size=150)
    assert model.stat().st_mtime_ns == stamp
    assert again.tokenize(KO[3]) == source.tokenize(KO[3])
    assert again.tokenize(EN[3]) == source.tokenize(EN[3])


def test_make_tokenizers_separate_models_per_side(tmp_path):
    source, target = make_tokenizers("sentencepiece", PAIRS, tmp_path, joint=False, vocab_size=80)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spm.source.model", "spm.target.model"]
    assert tokenizer_files("sentencepiece", False) == ["spm.source.model", "spm.target.model"]
    source_text, target_text = "".join(source.pieces()[1:]), "".join(target.pieces()[1:])
    assert "학" in source_text and "s" not in source_text
    assert "s" in target_text and "학" not in target_text
    assert source.detokenize(source.tokenize(KO[7])) == KO[7]
    assert target.detokenize(target.tokenize(EN[7])) == EN[7]


@pytest.mark.parametrize(("kind", "cls"), [("char", CharTokenizer), ("word", WordTokenizer)])
def test_make_tokenizers_char_and_word_keep_no_files(tmp_path, kind, cls):
    source, target = make_tokenizers(kind, PAIRS, tmp_path / "run")
    assert isinstance(source, cls) and isinstance(target, cls)
    assert tokenizer_files(kind, joint=True) == [] and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="bpe"):
        tokenizer_files("bpe", joint=True)


def test_sentencepiece_on_shared_ko_en(tmp_path):
    folder = SHARED / "ko-en"
    if not folder.exists():
        pytest.skip(f"{folder} is not available")
    pairs = read_parallel(folder / "train.ko", folder / "train.en")[0][:300]
    source, target = make_tokenizers("sentencepiece", pairs, tmp_path, joint=False, vocab_size=600)
    # 300 Korean sentences hold over 300 distinct syllables, and with character_coverage 1.0
    # every one must be a piece: hence vocab_size 600. Tatoeba text is NFC with single spaces,
    # so the round trip is exact.
    assert all(source.detokenize(source.tokenize(ko)) == ko for ko, _ in pairs)
    assert all(target.detokenize(target.tokenize(en)) == en for _, en in pairs)
