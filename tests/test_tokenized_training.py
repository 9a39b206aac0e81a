"""Word and SentencePiece tokenization through train, checkpoint and translate."""

from __future__ import annotations

import pytest
from conftest import QUIET

import jumok
from jumok.config import validate
from jumok.data.synthetic import generate
from jumok.training.train import train


@pytest.mark.parametrize(
    ("tokenizer", "files"),
    [
        ({"kind": "word"}, []),
        ({"kind": "sentencepiece", "vocab_size": 150}, ["spm.model"]),
        (
            {"kind": "sentencepiece", "vocab_size": 150, "joint": False, "model_type": "unigram"},
            ["spm.source.model", "spm.target.model"],
        ),
    ],
)
def test_tokenizers_train_translate_and_travel_in_the_checkpoint(tmp_path, tokenizer, files):
    pairs = generate("date", 600, seed=2)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), "utf-8")
    cfg = validate(
        {
            "data": {"train": str(tmp_path / "pairs.tsv"), "dev_size": 50, "tokenizer": tokenizer},
            "model": {"encoder": {"hidden_size": 16}, "decoder": {"hidden_size": 16}},
            "train": {"epochs": 1, "batch_size": 64},
        },
        "test",
        [],
    )
    train(cfg, tmp_path / "run", **QUIET)
    assert sorted(p.name for p in (tmp_path / "run").glob("spm*.model")) == sorted(files)
    for name in files:  # the checkpoint carries the model: the run dir's copy is not needed
        (tmp_path / "run" / name).unlink()
    [result] = jumok.load(tmp_path / "run").translate(["september 27, 1994"])
    assert isinstance(result.text, str)
    assert len(result.source_tokens) < len("september 27, 1994")  # words or pieces, not chars
    assert len(result.attention[0]) == len(result.source_tokens)


def test_vocab_command_prepares_the_tokenizer_that_train_reuses(tmp_path, capsys):
    import yaml

    from jumok.app.cli import main

    pairs = generate("date", 400, seed=3)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), "utf-8")
    config = {
        "data": {
            "train": "pairs.tsv",
            "dev_size": 40,
            "tokenizer": {"kind": "sentencepiece", "vocab_size": 120},
        },
        "model": {"encoder": {"hidden_size": 16}, "decoder": {"hidden_size": 16}},
        "train": {"epochs": 1, "batch_size": 64},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["vocab", str(tmp_path / "c.yaml"), "--run-dir", str(run)]) == 0
    assert "vocabulary:" in capsys.readouterr().out
    model = run / "spm.model"
    before = (model.stat().st_mtime_ns, model.read_bytes())
    assert main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--no-progress"]) == 0
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before  # reused, not retrained
    assert main(["vocab", str(tmp_path / "c.yaml"), "--run-dir", str(run)]) == 2  # holds a run


def test_shared_vocab_and_filler_train_and_translate(tmp_path):
    pairs = generate("date", 400, seed=4)
    cfg = validate(
        {
            "data": {
                "generate": {"task": "date", "size": 400, "dev_size": 40, "test_size": 40},
                "reverse_source": True,
                "shared_vocab": True,
                "fill_source_to": 29,
            },
            "model": {"encoder": {"hidden_size": 16}, "decoder": {"hidden_size": 16}},
            "train": {"epochs": 1, "batch_size": 64},
        },
        "test",
        [],
    )
    train(cfg, tmp_path / "run", **QUIET)
    model = jumok.load(tmp_path / "run")
    assert model.src_vocab.tokens == model.tgt_vocab.tokens  # one list for both sides
    assert "s" in model.tgt_vocab.tokens and "-" in model.src_vocab.tokens
    source = pairs[0][0]
    [result] = model.translate([source])
    # the filler is read and attended: its columns follow the source's own, every row sums to 1
    assert result.source_tokens[: len(source)] == list(source)
    assert result.source_tokens[len(source) :] == ["</s>"] * (29 - len(source))
    assert all(abs(sum(row) - 1) < 1e-4 for row in result.attention)
