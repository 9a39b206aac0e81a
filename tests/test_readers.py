"""Sentence-pair readers: each format's happy path, every error naming file and line, streaming
equal to eager reading, the buffered shuffle, and the shared corpora (skipped when absent)."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from jumok.data.readers import (
    ReadReport,
    iter_pairs,
    read_csv,
    read_jsonl,
    read_pairs_as,
    read_parallel,
    read_tsv,
)
from jumok.data.splits import shuffled_stream
from jumok.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path: Path, name: str, payload: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    return path


def where(path: Path, line: int | None = None) -> str:
    """The ``FILE:LINE:`` prefix of a message, as a regex."""
    return re.escape(f"{path}:{line}:" if line is not None else f"{path}:")


# ----------------------------------------------------------------------------------------- tsv
def test_tsv_with_bom_crlf_and_whitespace(tmp_path):
    path = write(tmp_path, "p.tsv", "\ufeff나는 학생\t I am a student \r\nsep 27\t1994-09-27\r\n")
    pairs, report = read_tsv(path)
    assert pairs == [("나는 학생", "I am a student"), ("sep 27", "1994-09-27")]
    assert (report.rows, report.dropped, report.pairs) == (2, {}, 2)
    assert report.describe() == f"{path}: 2 pairs from 2 rows"


def test_tsv_columns_and_header(tmp_path):
    # Tatoeba's kor.txt layout: English, Korean, attribution.
    text = "en\tko\tcredit\nHi.\t안녕.\t#1\nRun!\t뛰어!\t#2\n"
    path = write(tmp_path, "kor.txt", text)
    pairs, report = read_tsv(path, source_column=1, target_column=0, header=True)
    assert pairs == [("안녕.", "Hi."), ("뛰어!", "Run!")]
    assert report.rows == 2  # the header is not a data row


def test_dropped_rows_are_counted(tmp_path):
    # "  \t" holds nothing but whitespace: a blank line, like the empty one after it.
    path = write(tmp_path, "p.tsv", "a\tb\n\t x\n  \t\n\nc\td\ny\t \n")
    pairs, report = read_tsv(path)
    assert pairs == [("a", "b"), ("c", "d")]
    assert report.rows == 6
    assert report.dropped == {"empty source or target": 2, "blank line": 2}
    assert report.describe() == (
        f"{path}: 2 pairs from 6 rows (dropped: 2 blank line, 2 empty source or target)"
    )


@pytest.mark.parametrize(
    ("payload", "line", "message"),
    [
        (b"a\tb\nno tab here\nc\td\n", 2, "found 1 tab-separated column; expected at least 2"),
        (b"a\tb\nc\td\te\n", 2, "found 3 tab-separated columns, but line 1 has 2"),
        (b"a\tb\nc\td\n\xc3\x28\tx\n", 3, r"not valid UTF-8 \(byte 1 of the line\)"),
        (b"\xef\xbb\xbfa\tb\r\nc\t\xe2\x82\r\n", 2, r"not valid UTF-8 \(byte 3 of the line\)"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, payload, line, message):
    path = write(tmp_path, "p.tsv", payload)
    with pytest.raises(DataError, match=where(path, line) + " " + message):
        read_tsv(path)


def test_tsv_column_beyond_the_header(tmp_path):
    path = write(tmp_path, "p.tsv", "en\tfr\nHi.\tSalut.\n")
    with pytest.raises(DataError, match=where(path, 1) + " the header has 2 .*at least 3"):
        read_tsv(path, target_column=2, header=True)


# ----------------------------------------------------------------------------------------- csv
def test_csv_quoting_multiline_and_bom(tmp_path):
    text = (
        "\ufeffQ,A,label\r\n"
        "12시 땡!,하루가 또 가네요.,0\r\n"
        '"Hello, you","He said ""hi""",1\r\n'
        '"two\r\nlines", ok ,2\r\n'
    )
    path = write(tmp_path, "chat.csv", text)
    pairs, report = read_csv(path, source="Q", target="A")
    assert pairs == [
        ("12시 땡!", "하루가 또 가네요."),
        ("Hello, you", 'He said "hi"'),
        ("two\nlines", "ok"),
    ]
    assert (report.rows, report.dropped) == (3, {})
    assert read_csv(path, source="label", target="Q")[0][0] == ("0", "12시 땡!")


def test_csv_other_delimiter_and_dropped_rows(tmp_path):
    path = write(tmp_path, "p.csv", "src;tgt\na;b\n;x\n\n  \nc;d\n")
    pairs, report = read_csv(path, source="src", target="tgt", delimiter=";")
    assert pairs == [("a", "b"), ("c", "d")]
    assert report.dropped == {"empty source or target": 1, "blank line": 2}


@pytest.mark.parametrize(
    ("name", "suggestion"), [("Qs", "'Q'"), ("q", "'Q'"), ("lable", "'label'"), ("zzz", None)]
)
def test_csv_unknown_column_lists_header_and_suggests(tmp_path, name, suggestion):
    path = write(tmp_path, "chat.csv", "Q,A,label\nx,y,0\n")
    with pytest.raises(DataError) as caught:
        read_csv(path, source=name, target="A")
    message = str(caught.value)
    assert message.startswith(f"{path}: no column named {name!r}; the header has 'Q', 'A', 'label'")
    if suggestion:
        assert message.endswith(f"(did you mean {suggestion}?)")
    else:
        assert "did you mean" not in message


@pytest.mark.parametrize(
    ("payload", "line", "message"),
    [
        ("Q,A,label\nx,y,0\nonly,two\n", 3, r"found 2 fields; expected 3 like the header"),
        # An unterminated quote at the end of the file: reported where the field starts.
        ('Q,A\nx,y\nz,"never closed\nmore\ntext\n', 3, r"malformed CSV row.*every quote closed"),
        # A stray quote swallows the next lines until one closes it: the row is too long.
        ('Q,A\nx,"a\nb,c\nd",e,f\n', 2, r"found 4 fields; .*runs to line 4: an unbalanced quote"),
        ('Q,A\nx,"y"z\n', 2, r"malformed CSV row"),
        (b"Q,A\nx,y\n\xff,z\n", 3, r"not valid UTF-8"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, payload, line, message):
    path = write(tmp_path, "p.csv", payload)
    with pytest.raises(DataError, match=where(path, line) + " " + message):
        read_csv(path, source="Q", target="A")


# ------------------------------------------------------------------------------------ parallel
def test_parallel_pairs_line_by_line(tmp_path):
    src = write(tmp_path, "train.en", "\ufeffTwo dogs.\r\nA man \r\n\r\nA cat.")
    tgt = write(tmp_path, "train.de", "Zwei Hunde.\nEin Mann\nLeer\nEine Katze.\n")
    pairs, report = read_parallel(src, tgt)
    assert pairs == [("Two dogs.", "Zwei Hunde."), ("A man", "Ein Mann"), ("A cat.", "Eine Katze.")]
    assert (report.rows, report.dropped) == (4, {"empty source or target": 1})
    assert report.path == f"{src} + {tgt}"


@pytest.mark.parametrize(("n_source", "n_target"), [(3, 5), (5, 3)])
def test_parallel_unequal_files_name_both_counts(tmp_path, n_source, n_target):
    src = write(tmp_path, "a.en", "".join(f"s{i}\n" for i in range(n_source)))
    tgt = write(tmp_path, "a.de", "".join(f"t{i}\n" for i in range(n_target)))
    shorter = src if n_source < n_target else tgt
    expected = (
        re.escape(f"{src} has {n_source} lines but {tgt} has {n_target}; expected equal counts")
        + ".*"
        + re.escape(f"({shorter} ends after line 3)")
    )
    with pytest.raises(DataError, match=expected):
        read_parallel(src, tgt)
    stream = iter_pairs("parallel", source_path=src, target_path=tgt)
    assert list(itertools.islice(stream, 3)) == [(f"s{i}", f"t{i}") for i in range(3)]
    with pytest.raises(DataError, match=expected):
        next(stream)


def test_parallel_bad_utf8_names_the_file(tmp_path):
    src = write(tmp_path, "a.en", "x\ny\n")
    tgt = write(tmp_path, "a.de", b"x\n\xe9\n")
    with pytest.raises(DataError, match=where(tgt, 2) + " not valid UTF-8"):
        read_parallel(src, tgt)


# --------------------------------------------------------------------------------------- jsonl
def test_jsonl_flat_and_dotted_fields(tmp_path):
    rows = [
        {"translation": {"en": "Two dogs.", "de": "Zwei Hunde."}, "id": 1},
        {"translation": {"en": " A cat. ", "de": "Eine Katze."}, "id": 2},
        {"translation": {"en": "", "de": "Leer"}, "id": 3},
    ]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n"
    path = write(tmp_path, "wmt.jsonl", text)
    pairs, report = read_jsonl(path, source="translation.en", target="translation.de")
    assert pairs == [("Two dogs.", "Zwei Hunde."), ("A cat.", "Eine Katze.")]
    assert report.dropped == {"empty source or target": 1, "blank line": 1}
    flat = write(tmp_path, "flat.jsonl", '{"ko": "안녕.", "en": "Hi.", "a.b": "x"}\r\n')
    assert read_jsonl(flat, source="ko", target="en")[0] == [("안녕.", "Hi.")]
    assert read_jsonl(flat, source="a.b", target="en")[0] == [("x", "Hi.")]  # literal key first


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"src": "a", "tgt": }', r"invalid JSON \(Expecting value at column 21\)"),
        ('["a", "b"]', r"found an array; expected a JSON object with fields 'src' and 'tgt'"),
        ('{"src": "a"}', r"no field 'tgt' \(the object has keys 'src'\)"),
        ('{"src": "a", "tgt": 3}', r"field 'tgt' is a number \(3\); expected a string"),
        ('{"src": null, "tgt": "b"}', r"field 'src' is null \(null\); expected a string"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, second_line, message):
    path = write(tmp_path, "p.jsonl", '{"src": "x", "tgt": "y"}\n' + second_line + "\n")
    with pytest.raises(DataError, match=where(path, 2) + " " + message):
        read_jsonl(path, source="src", target="tgt")


def test_jsonl_missing_nested_field_names_where_it_stopped(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"translation": {"en": "a", "fr": "b"}}\n')
    with pytest.raises(
        DataError, match=r"no field 'translation.de' \(translation has keys 'en', 'fr'"
    ):
        read_jsonl(path, source="translation.en", target="translation.de")


# ------------------------------------------------------------------------- shared error paths
def reader_args(tmp_path: Path, kind: str, payload: str) -> dict[str, object]:
    """Arguments of the ``kind`` reader for a file (two files for parallel) holding ``payload``."""
    if kind == "parallel":
        return {
            "source_path": write(tmp_path, "x.src", payload),
            "target_path": write(tmp_path, "x.tgt", payload),
        }
    path = write(tmp_path, f"x.{kind}", payload)
    if kind == "tsv":
        return {"path": path}
    return {"path": path, "source": "s", "target": "t"}  # csv and jsonl name their fields


EXAMPLES = {
    "tsv": "a\tb\nx\t \nc\td\n",
    "csv": "s,t\na,b\n,\nc,d\n",
    "parallel": "a\n\nc\n",
    "jsonl": '{"s": "a", "t": "b"}\n{"s": " ", "t": ""}\n{"s": "c", "t": "d"}\n',
}
KINDS = list(EXAMPLES)


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_equals_eager_reading(tmp_path, kind):
    args = reader_args(tmp_path, kind, EXAMPLES[kind])
    pairs, report = read_pairs_as(kind, **args)
    expected = [("a", "b"), ("c", "d")] if kind != "parallel" else [("a", "a"), ("c", "c")]
    assert pairs == expected
    assert report.dropped == {"empty source or target": 1}
    stream = iter_pairs(kind, **args)
    assert list(stream) == pairs
    assert stream.report == report


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_is_lazy(tmp_path, kind):
    """Pairs before a broken line come out before the error: the file is read as it goes."""
    broken = {"tsv": "oops", "csv": "x,y,z", "parallel": "", "jsonl": "{"}[kind]
    payload = EXAMPLES[kind] + broken + "\n" + EXAMPLES[kind].split("\n", 1)[-1]
    args = reader_args(tmp_path, kind, payload)
    if kind == "parallel":
        write(tmp_path, "x.tgt", payload + "extra\n")
    stream = iter_pairs(kind, **args)
    assert len(list(itertools.islice(stream, 2))) == 2
    with pytest.raises(DataError):
        list(stream)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_file(tmp_path, kind):
    args = reader_args(tmp_path, kind, EXAMPLES[kind])
    missing = tmp_path / "nope"
    args["source_path" if kind == "parallel" else "path"] = missing
    with pytest.raises(DataError, match=f"^{where(missing)} file not found$"):
        read_pairs_as(kind, **args)
    with pytest.raises(DataError, match="file not found"):
        iter_pairs(kind, **args)  # before the first pair is asked for


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", ["", "\n\n"])
def test_no_pairs_is_an_error(tmp_path, kind, payload):
    header = "s,t\n" if kind == "csv" else ""
    args = reader_args(tmp_path, kind, header + payload)
    with pytest.raises(DataError, match=r": no sentence pairs( \(2 rows, all dropped\))?$"):
        read_pairs_as(kind, **args)


def test_unknown_kind():
    with pytest.raises(ValueError, match="tsv"):
        iter_pairs("xml", path="x")


def test_report_describe_singular():
    assert ReadReport("f", rows=1).describe() == "f: 1 pair from 1 row"


# ------------------------------------------------------------------------------------ shuffling
def test_shuffled_stream_yields_everything_once_and_depends_on_seed():
    items = list(range(200))
    first = list(shuffled_stream(items, buffer_size=16, seed=0))
    assert sorted(first) == items
    assert list(shuffled_stream(iter(items), buffer_size=16, seed=0)) == first
    assert list(shuffled_stream(items, buffer_size=16, seed=1)) != first
    assert first != items
    # The buffer bounds how far ahead an item can come from.
    assert all(item <= j + 16 - 1 for j, item in enumerate(first))


def test_shuffled_stream_edge_buffers_and_duplicates():
    assert list(shuffled_stream(range(10), buffer_size=1, seed=3)) == list(range(10))
    full = list(shuffled_stream(range(10), buffer_size=100, seed=3))
    assert sorted(full) == list(range(10)) and full != list(range(10))
    pairs = [("a", "b")] * 3 + [("c", "d")] * 2
    assert Counter(shuffled_stream(pairs, 2, seed=0)) == Counter(pairs)
    assert list(shuffled_stream([], 4, seed=0)) == []
    with pytest.raises(ValueError, match="buffer_size"):
        list(shuffled_stream(range(3), buffer_size=0, seed=0))


def test_shuffled_stream_is_lazy():
    endless = itertools.count()
    head = list(itertools.islice(shuffled_stream(endless, buffer_size=8, seed=0), 20))
    assert len(set(head)) == 20 and max(head) < 20 + 8


# --------------------------------------------------------------------------------- shared data
def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def test_chatbot_csv():
    pairs, report = read_csv(shared("chatbot-ko", "ChatbotData.csv"), source="Q", target="A")
    assert (len(pairs), report.rows, report.dropped) == (11823, 11823, {})
    assert pairs[0] == ("12시 땡!", "하루가 또 가네요.")


def test_multi30k_parallel():
    folder = shared("multi30k")
    pairs, report = read_parallel(folder / "train.en", folder / "train.de")
    assert (len(pairs), report.dropped) == (29000, {})
    assert "\t" in pairs[7365][1]  # train.de:7366 holds a literal tab, harmless here
    assert len(read_parallel(folder / "val.en", folder / "val.de")[0]) == 1014
    with pytest.raises(DataError, match="has 29000 lines but .*val.de has 1014"):
        read_parallel(folder / "train.en", folder / "val.de")


def test_tatoeba_ko_en_and_en_fr():
    ko_en = shared("ko-en")
    pairs, _ = read_parallel(ko_en / "train.ko", ko_en / "train.en")
    assert len(pairs) == 3749 and pairs[0] == ("안녕.", "Hi.")
    en_fr = shared("en-fr")
    whole, report = read_tsv(en_fr / "fra.txt")
    assert (len(whole), report.dropped) == (142787, {})
    dev, _ = read_parallel(en_fr / "dev.en", en_fr / "dev.fr")
    dev_lines = [int(n) for n in (en_fr / "dev.lines").read_text().split()]
    assert dev == [whole[n - 1] for n in dev_lines]


def test_dlfs2_fixed_width_lines_are_stripped(tmp_path):
    from jumok.data.readers import read_dlfs2

    path = tmp_path / "addition.txt"
    path.write_text("16+75  _91  \n52+607 _659 \nno separator\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"addition\.txt:3: no '_' between source and target"):
        read_dlfs2(path)
    path.write_text("16+75  _91  \n52+607 _659 \n", encoding="utf-8")
    pairs, report = read_dlfs2(path)
    assert pairs == [("16+75", "91"), ("52+607", "659")] and report.rows == 2


def test_control_characters_are_removed_and_counted(tmp_path):
    """NUL, escape and the like are removed from training pairs (and counted), as jumok
    translate and the server treat them; tab and a quoted field's line breaks are kept."""
    path = tmp_path / "c.tsv"
    path.write_bytes(b"a\x00b\tc\x1bd\x7f\nplain\tpair\n")
    pairs, report = read_tsv(path)
    assert pairs == [("ab", "cd"), ("plain", "pair")]
    assert report.controls == 3 and "removed 3 control characters" in report.describe()
