"""Korean end to end on the shared corpora (skipped when ../shared/data is absent): SentencePiece
on Hangul, training, translation with detokenized output, the attention over Korean pieces, and
a Korean-to-Korean chatbot from the CSV with a header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import QUIET

import jumok
from jumok.config import validate
from jumok.data.tokenizers import make_tokenizers
from jumok.training.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HANGUL = re.compile("[\uac00-\ud7a3]")


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def tiny(data: dict) -> dict:
    return {
        "data": data,
        "model": {
            "encoder": {"embedding_size": 16, "hidden_size": 32},
            "decoder": {"embedding_size": 16, "hidden_size": 32},
        },
        "train": {"epochs": 1, "batch_size": 64, "examples": 0},
        "decode": {"max_length": 30},
    }


def test_sentencepiece_round_trips_korean(tmp_path):
    folder = shared("ko-en")
    korean = (folder / "train.ko").read_text(encoding="utf-8").splitlines()
    english = (folder / "train.en").read_text(encoding="utf-8").splitlines()
    pairs = list(zip(korean, english, strict=True))
    src, tgt = make_tokenizers(
        "sentencepiece", pairs, tmp_path, joint=False, vocab_size=1500, model_type="unigram"
    )
    n_pieces = n_chars = 0
    for text in korean[:500]:
        pieces = src.tokenize(text)
        assert src.detokenize(pieces) == text
        n_pieces, n_chars = n_pieces + len(pieces), n_chars + len(text)
    assert n_pieces < 0.8 * n_chars  # pieces, not characters
    assert tgt.detokenize(tgt.tokenize("Where is the station?")) == "Where is the station?"


@pytest.mark.slow
def test_ko_en_trains_and_translates_with_korean_attention(tmp_path):
    folder = shared("ko-en")
    cfg = validate(
        tiny(
            {
                "train": [str(folder / "train.ko"), str(folder / "train.en")],
                "dev": [str(folder / "dev.ko"), str(folder / "dev.en")],
                "tokenizer": {"kind": "sentencepiece", "joint": False, "vocab_size": 1500},
            }
        ),
        "test",
        [],
    )
    result = train(cfg, tmp_path / "run", **QUIET)
    assert result.history and result.history[-1].dev_bleu is not None
    model = jumok.load(tmp_path / "run")
    [out] = model.translate(["나는 학교에 간다."], beam=3, n_best=2)
    assert isinstance(out.text, str) and "▁" not in out.text  # detokenized
    assert "".join(out.source_tokens).replace("▁", " ").strip() == "나는 학교에 간다."
    assert all(len(row) == len(out.source_tokens) for row in out.attention)
    assert len(out.hypotheses) == 2


@pytest.mark.slow
def test_korean_chatbot_from_the_csv_header(tmp_path):
    path = shared("chatbot-ko", "ChatbotData.csv")
    raw = tiny(
        {
            "train": str(path),
            "header": True,
            "source_field": "Q",
            "target_field": "A",
            "dev_size": 200,
            "tokenizer": {"kind": "sentencepiece", "vocab_size": 1500},
        }
    )
    raw["train"].update(epochs=3, lr=3e-3)
    cfg = validate(raw, "test", [])
    train(cfg, tmp_path / "run", **QUIET)
    model = jumok.load(tmp_path / "run")
    assert sum(bool(HANGUL.search(t)) for t in model.tgt_vocab.tokens) > 500  # Korean pieces
    [reply] = model.translate(["오늘 뭐 해?"], beam=5, n_best=5)
    texts = [h.text for h in reply.hypotheses]
    assert any(HANGUL.search(t) for t in texts), texts  # Korean replies, detokenized
    assert all("▁" not in t for t in texts)
    assert 0 < reply.confidence <= 1
