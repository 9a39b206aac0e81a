"""Reading pairs, generating the toy tasks, splitting without leaks, vocabulary, batching."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from jumok.config import DataConfig, GenerateConfig
from jumok.data import synthetic
from jumok.data.splits import batch_order, encode_pairs, iterate_batches, load_splits, read_pairs
from jumok.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab
from jumok.errors import DataError


def write_bytes(tmp_path, payload: bytes, name="pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def test_read_pairs_accepts_bom_and_crlf(tmp_path):
    path = write_bytes(
        tmp_path, "\ufeffsep 27, 1994\t1994-09-27\r\n나는 학생\tI am a student\r\n".encode()
    )
    assert read_pairs(path) == [("sep 27, 1994", "1994-09-27"), ("나는 학생", "I am a student")]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"a\tb\nno separator here\n", r"pairs\.tsv:2: expected source<TAB>target, found no tab"),
        (b"a\tb\nc\td\te\n", r"pairs\.tsv:2: expected source<TAB>target, found 2 tabs"),
        (b"a\tb\n\tx\n", r"pairs\.tsv:2: the source \(before the tab\) is empty"),
        (b"a\tb\nc\td\nx\t \n", r"pairs\.tsv:3: the target \(after the tab\) is empty"),
        (b"a\tb\n\xff\xfe\tx\n", r"pairs\.tsv:2: not valid UTF-8"),
        (b"", r"pairs\.tsv: the file holds no pairs"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, payload, expected):
    path = write_bytes(tmp_path, payload)
    with pytest.raises(DataError, match=expected):
        read_pairs(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.tsv: data file not found"):
        read_pairs(tmp_path / "missing.tsv")


def test_date_generator_covers_every_format_of_the_book():
    pairs = synthetic.generate("date", 3000, seed=1)
    sources = [s for s, _ in pairs]
    patterns = {
        "month d, yyyy (full)": r"^[a-z]{4,9} \d{1,2}, \d{4}$",
        "Mon d, yyyy": r"^[A-Z][a-z]{2} \d{1,2}, \d{4}$",
        "WEEKDAY, MONTH D, YYYY": r"^[A-Z]+DAY, [A-Z]+ \d{1,2}, \d{4}$",
        "Weekday, Month D, YYYY": r"^[A-Z][a-z]+day, [A-Z][a-z]+ \d{1,2}, \d{4}$",
        "M/D/YY one-digit": r"^\d/\d/\d\d$",
        "M/D/YY two-digit": r"^\d\d/\d\d/\d\d$",
    }
    for name, pattern in patterns.items():
        assert any(re.match(pattern, s) for s in sources), name
    for _, target in pairs:
        assert re.match(r"^\d{4}-\d\d-\d\d$", target)
        assert "1970" <= target[:4] <= "2017"
    assert len(set(sources)) == len(sources)


def test_date_targets_are_right():
    import datetime as dt
    import random

    rng = random.Random(0)
    day = dt.date(1994, 9, 27)
    seen = {synthetic.date_pair(day, rng)[0] for _ in range(400)}
    assert {"september 27, 1994", "Sep 27, 1994", "TUESDAY, SEPTEMBER 27, 1994", "9/27/94"} <= seen
    assert synthetic.date_pair(dt.date(1973, 6, 3), rng)[1] == "1973-06-03"


def test_extra_formats_include_korean():
    pairs = synthetic.generate("date", 2000, seed=2, extra_formats=True)
    assert any(s.endswith("일") and "년" in s for s, _ in pairs)


def test_addition_generator():
    pairs = synthetic.generate("addition", 500, seed=0)
    for source, target in pairs:
        a, b = map(int, source.split("+"))
        assert 0 <= a <= 999 and 0 <= b <= 999 and int(target) == a + b


def test_generation_is_seeded():
    assert synthetic.generate("date", 50, 7) == synthetic.generate("date", 50, 7)
    assert synthetic.generate("date", 50, 7) != synthetic.generate("date", 50, 8)


def test_generated_splits_do_not_leak():
    cfg = DataConfig(generate=GenerateConfig(task="date", size=3000, dev_size=300, test_size=500))
    splits = load_splits(cfg)
    train = {s for s, _ in splits.train}
    assert len(splits.test) == 500 and len(splits.dev) == 300 and len(splits.train) == 2200
    assert not train & {s for s, _ in splits.test}
    assert not train & {s for s, _ in splits.dev}


def test_user_splits_remove_leaks_and_say_so(tmp_path):
    train = write_bytes(tmp_path, b"a\t1\nb\t2\nc\t3\nd\t4\n", "train.tsv")
    test = write_bytes(tmp_path, b"b\t2\n", "test.tsv")
    dev = write_bytes(tmp_path, b"c\t3\n", "dev.tsv")
    splits = load_splits(DataConfig(train=train, dev=dev, test=test))
    assert splits.train == [("a", "1"), ("d", "4")]
    assert any("removed 2 train pairs" in n for n in splits.notes)


def test_vocab_specials_are_distinct_and_first():
    vocab = Vocab.build([list("hello"), list("world")])
    assert vocab.tokens[:4] == list(SPECIALS)
    assert len({PAD_ID, BOS_ID, EOS_ID, UNK_ID}) == 4 and PAD_ID != BOS_ID
    encoded = vocab.encode(list("hex"))
    assert encoded.ids[2] == UNK_ID and encoded.unknown == 1
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_encoding_reverses_source_and_wraps_target():
    src_vocab = Vocab.build([list("abc")])
    tgt_vocab = Vocab.build([list("xy")])
    data = encode_pairs([("abc", "xy"), ("a", "y")], src_vocab, tgt_vocab, reverse_source=True)
    assert data.src_NS[0].tolist() == [src_vocab.id(c) for c in "cba"]
    assert data.src_NS[1].tolist() == [src_vocab.id("a"), PAD_ID, PAD_ID]
    assert data.tgt_NT[0].tolist() == [BOS_ID, tgt_vocab.id("x"), tgt_vocab.id("y"), EOS_ID]
    batch = next(iterate_batches(data, 2))
    assert batch.tgt_in_BT[0].tolist()[0] == BOS_ID and batch.tgt_out_BT[0].tolist()[-1] == EOS_ID
    assert batch.n_target_tokens == 3 + 2


def test_fill_source_to_is_read_before_the_reversed_sentence_like_the_books_padding():
    src_vocab = Vocab.build([list("abc")])
    tgt_vocab = Vocab.build([list("xy")])
    pairs = [("abc", "xy"), ("a", "y"), ("abcab", "x")]
    data = encode_pairs(pairs, src_vocab, tgt_vocab, reverse_source=True, fill_source_to=4)
    a, b, c = (src_vocab.id(ch) for ch in "abc")
    assert data.src_NS.tolist() == [
        [EOS_ID, c, b, a, PAD_ID],
        [EOS_ID, EOS_ID, EOS_ID, a, PAD_ID],
        [b, a, c, b, a],  # longer than the width: left as it is
    ]
    assert data.src_len_N.tolist() == [4, 4, 5]  # the filler is read, not masked
    plain = encode_pairs(pairs[:1], src_vocab, tgt_vocab, reverse_source=False, fill_source_to=4)
    assert plain.src_NS.tolist() == [[a, b, c, EOS_ID]]


@pytest.mark.parametrize("bucketing", [False, True])
def test_every_example_appears_exactly_once_per_epoch(bucketing):
    lengths = torch.randint(1, 30, (1037,), generator=torch.Generator().manual_seed(0))
    batches = batch_order(lengths, 32, True, bucketing, torch.Generator().manual_seed(1))
    seen = torch.cat(batches).tolist()
    assert sorted(seen) == list(range(1037))
    assert max(len(b) for b in batches) == 32


def test_bucketing_reduces_padding():
    lengths = torch.randint(1, 30, (4000,), generator=torch.Generator().manual_seed(0))

    def padding(bucketing):
        batches = batch_order(lengths, 64, True, bucketing, torch.Generator().manual_seed(1))
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    assert padding(True) < 0.2 * padding(False)


def test_batches_are_bucketed_by_target_length_then_source_length():
    # Targets decide how many steps the decoder runs: a bucketed batch holds one target length
    # (here only a few lengths exist) and, within it, sources sorted by length.
    g = torch.Generator().manual_seed(0)
    vocab = Vocab.build([list("ab")])
    pairs = [
        ("a" * int(s), "b" * int(t))
        for s, t in zip(
            torch.randint(1, 20, (640,), generator=g),
            torch.randint(1, 4, (640,), generator=g),
            strict=True,
        )
    ]
    data = encode_pairs(pairs, vocab, vocab, False)
    for batch in iterate_batches(data, 64, shuffle=True, bucketing=True, generator=g):
        tgt_len_B = (batch.tgt_out_BT != PAD_ID).sum(1)
        assert tgt_len_B.max() - tgt_len_B.min() <= 1  # a batch may straddle two lengths
        if tgt_len_B.min() == tgt_len_B.max():
            assert torch.equal(batch.src_len_B, batch.src_len_B.sort().values)


def test_tokens_per_batch_count_matches_lengths():
    vocab = Vocab.build([list("ab")])
    data = encode_pairs([("ab", "a"), ("b", "ab")] * 3, vocab, vocab, False)
    counts = Counter()
    for batch in iterate_batches(data, 4):
        counts["tokens"] += batch.n_target_tokens
    assert counts["tokens"] == 3 * (2 + 3)


def test_config_reads_csv_parallel_and_jsonl_with_chosen_fields(tmp_path):
    from jumok.config import validate
    from jumok.data.splits import load_splits

    (tmp_path / "qa.csv").write_text(
        'Q,A,label\n안녕,반가워요,0\n뭐 해?,"쉬어요, 그냥",0\n', encoding="utf-8"
    )
    (tmp_path / "a.ko").write_text("안녕\n고마워\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("hi\nthanks\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(
        '{"translation": {"ko": "네", "en": "yes"}}\n', encoding="utf-8"
    )
    cases = [
        ({"train": str(tmp_path / "qa.csv")}, ("뭐 해?", "쉬어요, 그냥")),
        (
            {"train": str(tmp_path / "qa.csv"), "source_field": "A", "target_field": "Q"},
            ("쉬어요, 그냥", "뭐 해?"),
        ),
        ({"train": [str(tmp_path / "a.ko"), str(tmp_path / "a.en")]}, ("고마워", "thanks")),
        (
            {
                "train": str(tmp_path / "p.jsonl"),
                "source_field": "translation.ko",
                "target_field": "translation.en",
            },
            ("네", "yes"),
        ),
    ]
    for data, expected in cases:
        cfg = validate({"data": {**data, "dev_size": 0}}, "test", [])
        assert expected in load_splits(cfg.data).train


def test_format_mismatch_and_tsv_names_are_config_errors(tmp_path):
    from jumok.config import validate
    from jumok.data.splits import load_splits
    from jumok.errors import ConfigError

    (tmp_path / "a.tsv").write_text("a\tb\n", encoding="utf-8")
    bad = [
        (
            {"train": [str(tmp_path / "a.tsv"), str(tmp_path / "a.tsv")], "format": "csv"},
            "parallel",
        ),
        ({"train": str(tmp_path / "a.tsv"), "format": "parallel"}, "list of two files"),
        ({"train": str(tmp_path / "a.tsv"), "source_field": "Q"}, "data.source_field"),
    ]
    for data, message in bad:
        cfg = validate({"data": {**data, "dev_size": 0}}, "test", [])
        with pytest.raises(ConfigError, match=message):
            load_splits(cfg.data)
