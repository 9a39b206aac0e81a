"""Property-based tests (hypothesis): every reader gives back the pairs that were written, in any
encoding variant (BOM or not, LF or CRLF); tokenizers round trip; config overrides either set
exactly the value asked for or fail with a ConfigError, never anything else."""

from __future__ import annotations

import copy
import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jumok.config import apply_overrides, load_config, validate
from jumok.data.inputs import remove_controls
from jumok.data.readers import read_csv, read_jsonl, read_parallel, read_tsv
from jumok.data.tokenizers import CharTokenizer, SentencePieceTokenizer
from jumok.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode except surrogates; line-based formats also exclude their own separators.
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
LINE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t"), max_size=30
)


def written(text: str, bom: bool, crlf: bool) -> bytes:
    data = text.replace("\n", "\r\n") if crlf else text
    return (b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8")


def expected(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What a reader keeps: control characters other than tab and line breaks removed, both
    sides stripped, pairs with an empty side dropped."""
    stripped = [(remove_controls(s)[0].strip(), remove_controls(t)[0].strip()) for s, t in pairs]
    return [(s, t) for s, t in stripped if s and t]


def check(read, pairs):
    """``read()`` returns the expected pairs with honest counts, or (none kept) a DataError."""
    keep = expected(pairs)
    if not keep:
        with pytest.raises(DataError, match="no sentence pairs"):
            read()
        return
    got, report = read()
    assert got == keep
    assert all(not remove_controls(s)[1] and not remove_controls(t)[1] for s, t in got)
    assert report.rows == len(pairs)
    assert report.pairs == len(keep) and sum(report.dropped.values()) == len(pairs) - len(keep)


def tmp_file(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=suffix)
    handle.write(data)
    handle.close()
    return Path(handle.name)


# --------------------------------------------------------------------------------------- readers
PAIRS = st.lists(st.tuples(LINE_TEXT, LINE_TEXT), min_size=1, max_size=12)


@SETTINGS
@given(pairs=PAIRS, bom=st.booleans(), crlf=st.booleans())
def test_tsv_gives_back_what_was_written(pairs, bom, crlf):
    # A line that is only whitespace is "blank": it cannot also carry its tab separator's pair.
    text = "".join(f"{s}\t{t}\n" for s, t in pairs)
    path = tmp_file(written(text, bom, crlf), ".tsv")
    try:
        check(lambda: read_tsv(path), pairs)
    finally:
        path.unlink()


@SETTINGS
@given(
    pairs=st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00")),
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00")),
        ),
        min_size=1,
        max_size=10,
    ),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_csv_gives_back_what_was_written_quotes_commas_and_newlines_included(pairs, bom, crlf):
    out = io.StringIO()
    # CRLF ends each record; a newline inside a quoted field stays as written.
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["Q", "A", "label"])
    for s, t in pairs:
        writer.writerow([s, t, "0"])
    data = out.getvalue()
    path = tmp_file(written(data, bom, False), ".csv")
    try:
        check(lambda: read_csv(path, "Q", "A"), pairs)
    finally:
        path.unlink()


@SETTINGS
@given(pairs=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), min_size=1, max_size=12), bom=st.booleans())
def test_jsonl_gives_back_what_was_written(pairs, bom):
    text = "".join(json.dumps({"translation": {"en": s, "de": t}}) + "\n" for s, t in pairs)
    path = tmp_file(written(text, bom, False), ".jsonl")
    try:
        check(lambda: read_jsonl(path, "translation.en", "translation.de"), pairs)
    finally:
        path.unlink()


@SETTINGS
@given(pairs=PAIRS, bom=st.booleans(), crlf=st.booleans())
def test_parallel_files_give_back_what_was_written(pairs, bom, crlf):
    src = tmp_file(written("".join(s + "\n" for s, _ in pairs), bom, crlf), ".en")
    tgt = tmp_file(written("".join(t + "\n" for _, t in pairs), bom, crlf), ".de")
    try:
        check(lambda: read_parallel(src, tgt), pairs)
    finally:
        src.unlink()
        tgt.unlink()


# ------------------------------------------------------------------------------------ tokenizers
@SETTINGS
@given(ANY_TEXT)
def test_char_tokenizer_round_trips_any_text(text):
    tokenizer = CharTokenizer()
    assert tokenizer.detokenize(tokenizer.tokenize(text)) == text


WORDS = [
    "나는",
    "학생",
    "입니다",
    "오늘",
    "날씨가",
    "좋다",
    "we",
    "love",
    "the",
    "weather",
    "today",
]
TRAINING = [
    " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 5)) + ".!?"[i % 3]
    for i in range(300)
]


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm-prop") / "joint.model"
    return SentencePieceTokenizer.train(TRAINING, path, vocab_size=80)


@SETTINGS
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=12), end=st.sampled_from(".!?"))
def test_sentencepiece_round_trips_sentences_of_known_characters(sentencepiece, words, end):
    text = " ".join(words) + end
    assert sentencepiece.detokenize(sentencepiece.tokenize(text)) == text


# --------------------------------------------------------------------------------------- config
@pytest.fixture(scope="module")
def base_raw():
    import yaml

    return yaml.safe_load((ROOT / "examples/date.yaml").read_text(encoding="utf-8"))


@SETTINGS
@given(
    lr=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
    epochs=st.integers(min_value=1, max_value=10_000),
    hidden=st.integers(min_value=1, max_value=4096),
    reverse=st.booleans(),
)
def test_overrides_set_exactly_the_value_asked_for(base_raw, lr, epochs, hidden, reverse):
    sets = [
        f"train.lr={lr!r}",
        f"train.epochs={epochs}",
        f"model.encoder.hidden_size={hidden}",
        f"model.decoder.hidden_size={hidden}",
        f"data.reverse_source={str(reverse).lower()}",
    ]
    before = copy.deepcopy(base_raw)
    config = validate(apply_overrides(base_raw, sets))
    assert base_raw == before  # overrides work on a copy
    assert config.train.lr == lr and config.train.epochs == epochs
    assert config.model.encoder.hidden_size == hidden == config.model.decoder.hidden_size
    assert config.data.reverse_source is reverse


KEY = st.lists(
    st.sampled_from(
        ["train", "model", "data", "decode", "lr", "epochs", "encoder", "hidden_size", "nope", "x"]
    ),
    min_size=1,
    max_size=4,
).map(".".join)


@settings(max_examples=150, deadline=None)
@given(key=KEY, value=st.text(max_size=12))
def test_any_override_either_validates_or_raises_config_error(key, value):
    assume("\n" not in value and "\r" not in value)
    try:
        load_config(ROOT / "examples/date.yaml", [f"{key}={value}"])
    except ConfigError as err:
        message = str(err)
        assert message and "Traceback" not in message
        first = key.split(".")[0]
        assert first in message or "examples/date.yaml" in message or "--set" in message
