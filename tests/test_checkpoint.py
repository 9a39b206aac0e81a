"""Checkpoints: save -> load gives identical logits; broken files give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import random_batch, tiny_model_config
from safetensors.torch import save_file

from jumok.checkpoint import load_checkpoint, save_checkpoint
from jumok.config import load_config
from jumok.data.vocab import Vocab
from jumok.errors import RunDirError, WriteError
from jumok.model.seq2seq import build_model

ROOT = Path(__file__).resolve().parents[1]


def _setup():
    cfg = load_config(ROOT / "examples/date.yaml")
    cfg = cfg.model_copy(update={"model": tiny_model_config()})
    src_vocab = Vocab.build([list("abcdefgh")])  # 4 + 8 = 12 tokens
    tgt_vocab = Vocab.build([list("xyzuvw")])  # 4 + 6 = 10 tokens
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
    return cfg, src_vocab, tgt_vocab, model


def test_save_load_gives_identical_logits(tmp_path):
    cfg, src_vocab, tgt_vocab, model = _setup()
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model, cfg, src_vocab, tgt_vocab, {"epoch": 3})
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg and ckpt.src_vocab == src_vocab and ckpt.tgt_vocab == tgt_vocab
    assert ckpt.info == {"epoch": 3}
    again = build_model(ckpt.config.model, len(ckpt.src_vocab), len(ckpt.tgt_vocab))
    again.load_state_dict(ckpt.state_dict)
    src, src_len, tgt_in = random_batch()
    assert torch.equal(model(src, src_len, tgt_in)[0], again(src, src_len, tgt_in)[0])
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    cfg, src_vocab, tgt_vocab, model = _setup()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model, cfg, src_vocab, tgt_vocab)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
        RunDirError, match=r"last\.safetensors: not a readable safetensors checkpoint"
    ):
        load_checkpoint(path)


def test_foreign_files_are_rejected(tmp_path):
    plain = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(RunDirError, match="not a jumok checkpoint"):
        load_checkpoint(plain)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(RunDirError, match="not a readable safetensors checkpoint"):
        load_checkpoint(text)
    with pytest.raises(RunDirError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg, src_vocab, tgt_vocab, model = _setup()
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model, cfg, src_vocab, tgt_vocab, {"epoch": 1})
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("jumok.checkpoint.os.fsync", broken_fsync)
    with pytest.raises(WriteError, match=r"best\.safetensors: cannot write \(No space left"):
        save_checkpoint(path, model, cfg, src_vocab, tgt_vocab, {"epoch": 2})
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoints_written_before_the_rnn_rename_still_load(tiny_model):
    from conftest import SRC_V, TGT_V, tiny_model_config

    from jumok.model.seq2seq import build_model

    old = {
        k.replace("encoder.rnn.", "encoder.lstm.").replace("decoder.rnn.", "decoder.lstm."): v
        for k, v in tiny_model.state_dict().items()
    }
    assert any(k.startswith("encoder.lstm.") for k in old)
    again = build_model(tiny_model_config(), SRC_V, TGT_V)
    again.load_state_dict(old)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def _jumok_file_without_config(path):
    save_file(
        {"w": torch.zeros(2)}, path, metadata={"format": "jumok-checkpoint", "format_version": "1"}
    )


def _older_version(path, monkeypatch):
    cfg, src_vocab, tgt_vocab, model = _setup()
    monkeypatch.setattr("jumok.checkpoint.FORMAT_VERSION", "0")
    save_checkpoint(path, model, cfg, src_vocab, tgt_vocab)
    monkeypatch.undo()


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p, mp: p.write_bytes(bytes(range(256)) * 20), "not a readable safetensors"),
        (lambda p, mp: torch.save({"w": torch.zeros(2)}, p), r"a PyTorch pickle \(torch\.save\)"),
        (
            lambda p, mp: _jumok_file_without_config(p),
            "a jumok checkpoint whose metadata is damaged",
        ),
        (_older_version, "checkpoint format version '0'; this jumok reads versions 1 and 2"),
        (lambda p, mp: p.mkdir(), "a directory; expected a checkpoint file"),
    ],
    ids=["random-bytes", "torch-pickle", "no-config", "older-version", "directory"],
)
def test_a_file_that_is_not_a_jumok_checkpoint_gives_one_clear_error(
    tmp_path, monkeypatch, write, expected
):
    path = tmp_path / "model.safetensors"
    write(path, monkeypatch)
    with pytest.raises(RunDirError, match=expected) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ")
