"""The bad-input matrix for checkpoints that parse but cannot be trusted (issue 26, items 3 and 9):
flipped bytes, NaN weights, an edited embedded vocabulary, weights that do not fit their config,
and a run whose vocab.json disagrees with its checkpoint. Each gets a non-zero exit, one message
naming the file (and the tensor or token), and nothing on disk changes (checked by hash).

Also here: the digest itself (round trip, every single-byte change detected), checkpoints written
before the digest (they still load and translate), and every writer storing the digest.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import Case, assert_refused, tiny_model_config
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from jumok.app.cli import main
from jumok.checkpoint import (
    DIGEST_KEY,
    check_vocab_file,
    checkpoint_digest,
    load_checkpoint,
    load_weights,
    refuse_non_finite,
    save_checkpoint,
)
from jumok.config import load_config
from jumok.data.vocab import Vocab
from jumok.errors import RunDirError
from jumok.model.seq2seq import build_model

ROOT = Path(__file__).resolve().parents[1]
TENSOR = "decoder.output.weight"  # a tensor every checkpoint of the matrix run holds


# ------------------------------------------------------------------ reading and writing files
def split(payload: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (JSON) and its tensor data."""
    size = struct.unpack("<Q", payload[:8])[0]
    return json.loads(payload[8 : 8 + size]), payload[8 + size :]


def join(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data


def edit_metadata(good: Path, edit: Callable[[dict], None]) -> bytes:
    """``good``'s bytes with its metadata changed by ``edit`` (tensors untouched)."""
    header, data = split(good.read_bytes())
    edit(header["__metadata__"])
    return join(header, data)


def edit_tensors(good: Path, edit: Callable[[dict], None], rehash: bool) -> bytes:
    """``good`` with its tensors changed by ``edit``; the digest recomputed when ``rehash``."""
    payload = good.read_bytes()
    tensors, metadata = st_load(payload), split(payload)[0]["__metadata__"]
    edit(tensors)
    if rehash:
        metadata[DIGEST_KEY] = checkpoint_digest(tensors, metadata)
    return st_save(tensors, metadata=metadata)


def old_format(payload: bytes) -> bytes:
    """A checkpoint as jumok wrote it before the digest: format version 1, no sha256."""
    header, data = split(payload)
    header["__metadata__"]["format_version"] = "1"
    del header["__metadata__"][DIGEST_KEY]
    return join(header, data)


def permute_vocabulary(metadata: dict) -> None:
    tokens = json.loads(metadata["tgt_vocab"])
    tokens[4], tokens[5] = tokens[5], tokens[4]  # the first two after the specials
    metadata["tgt_vocab"] = json.dumps(tokens, ensure_ascii=False)


def set_nan(tensors: dict) -> None:
    tensors[TENSOR][0, 0] = float("nan")


def set_inf(tensors: dict) -> None:
    tensors[TENSOR][1, 2] = float("-inf")


def widen(tensors: dict) -> None:
    tensors[TENSOR] = torch.zeros(tensors[TENSOR].shape[0] + 1, tensors[TENSOR].shape[1])


def shape_words(path: Path) -> tuple[str, str]:
    """The shape of TENSOR in ``path``, and that shape widened by one row, as messages write them."""
    rows, cols = split(path.read_bytes())[0][TENSOR]["shape"]
    return f"[{rows + 1}, {cols}]", f"[{rows}, {cols}]"


# --------------------------------------------------------------------------------- the cases
def checkpoint(write: Callable[[Path], bytes], *argv: str):
    """A run folder 'broken' whose best.safetensors holds ``write(good_checkpoint)``."""

    def make(w: Path) -> list[str]:
        broken = w / "broken"
        broken.mkdir()
        (broken / "best.safetensors").write_bytes(write(w / "run" / "best.safetensors"))
        (w / "in.txt").write_text("Jan 2, 2003\n", encoding="utf-8")
        return ["translate", str(broken), "--input", str(w / "in.txt"), *argv]

    return make


def flip_4kb(good: Path) -> bytes:
    header, data = split(good.read_bytes())
    middle = len(data) // 2 - 2048
    flipped = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    return join(header, data[:middle] + flipped + data[middle + 4096 :])


def run_with_vocab_json(edit: Callable[[dict], None], members=("run",), flags=()):
    """``jumok translate`` of ``members`` after the finished run's vocab.json was changed by
    ``edit``; a member "good" is a copy of the run made before the change."""

    def make(w: Path) -> list[str]:
        if "good" in members:
            shutil.copytree(w / "run", w / "good")
        vocab_json = w / "run" / "vocab.json"
        tokens = json.loads(vocab_json.read_text(encoding="utf-8"))
        edit(tokens)
        vocab_json.write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
        (w / "in.txt").write_text("Jan 2, 2003\n", encoding="utf-8")
        return ["translate", *(str(w / m) for m in members), "--input", str(w / "in.txt"), *flags]

    return make


def swap_target_tokens(tokens: dict) -> None:
    tokens["target"][4], tokens["target"][5] = tokens["target"][5], tokens["target"][4]


def drop_source_token(tokens: dict) -> None:
    tokens["source"].pop()


def average_of(write: Callable[[Path], bytes]):
    """``jumok average`` of the run's good checkpoint and ``write(good)``."""

    def make(w: Path) -> list[str]:
        (w / "bad.safetensors").write_bytes(write(w / "run" / "best.safetensors"))
        good = w / "run" / "last.safetensors"
        return ["average", str(good), str(w / "bad.safetensors"), "--out", str(w / "avg.st")]

    return make


CASES = [
    Case(
        "4 KB of flipped bytes in the tensor data",
        checkpoint(flip_4kb),
        ("broken/best.safetensors", "checksum mismatch", "damaged or edited"),
    ),
    Case(
        "a tensor set to NaN, digest stale",
        checkpoint(lambda good: edit_tensors(good, set_nan, rehash=False)),
        ("broken/best.safetensors", "checksum mismatch"),
    ),
    Case(
        "a tensor set to NaN, digest recomputed",
        checkpoint(lambda good: edit_tensors(good, set_nan, rehash=True)),
        ("broken/best.safetensors", f"tensor '{TENSOR}'", "NaN or infinite"),
    ),
    Case(
        "a tensor set to -inf in a checkpoint without digest",
        checkpoint(lambda good: old_format(edit_tensors(good, set_inf, rehash=True))),
        ("broken/best.safetensors", f"tensor '{TENSOR}'", "NaN or infinite"),
    ),
    Case(
        "embedded vocabulary permuted",
        checkpoint(lambda good: edit_metadata(good, permute_vocabulary)),
        ("broken/best.safetensors", "checksum mismatch"),
    ),
    Case(
        "digest removed from a version 2 checkpoint",
        checkpoint(lambda good: edit_metadata(good, lambda m: m.pop(DIGEST_KEY))),
        ("broken/best.safetensors", "checksum missing"),
    ),
    Case(
        "weights that do not fit the config (digest recomputed)",
        checkpoint(lambda good: edit_tensors(good, widen, rehash=True)),
        ("broken/best.safetensors", f"tensor '{TENSOR}'", "do not fit", "its config"),
    ),
    Case(
        "weights that do not fit the config (no digest)",
        checkpoint(lambda good: old_format(edit_tensors(good, widen, rehash=True))),
        ("broken/best.safetensors", f"tensor '{TENSOR}'", "needs"),
    ),
    Case(
        "vocab.json differs from the checkpoint",
        run_with_vocab_json(swap_target_tokens),
        ("run/vocab.json", "run/best.safetensors", "target token 4", "differ"),
    ),
    Case(
        "vocab.json shorter than the checkpoint's, --checkpoint last",
        run_with_vocab_json(drop_source_token, flags=("--checkpoint", "last")),
        ("run/vocab.json", "run/last.safetensors", "source tokens"),
    ),
    Case(
        "vocab.json of an ensemble member differs",
        run_with_vocab_json(swap_target_tokens, members=("good", "run")),
        ("run/vocab.json", "run/best.safetensors", "differ"),
    ),
    Case(
        "jumok average of a run whose vocab.json differs",
        lambda w: (
            run_with_vocab_json(swap_target_tokens)(w)
            and [
                "average",
                str(w / "run"),
                str(w / "run" / "best.safetensors"),
                "--checkpoint",
                "last",
                "--out",
                str(w / "avg.safetensors"),
            ]
        ),  # fmt: skip
        ("run/vocab.json", "run/last.safetensors", "differ"),
    ),
    Case(
        "jumok average of a checkpoint with flipped bytes",
        average_of(flip_4kb),
        ("bad.safetensors", "checksum mismatch"),
    ),
    Case(
        "jumok average of weights that do not fit",
        average_of(lambda good: edit_tensors(good, widen, rehash=True)),
        ("bad.safetensors", f"tensor '{TENSOR}'", "do not fit"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_untrustworthy_checkpoints_are_refused_with_one_message(case, work, capsys):
    assert_refused(case, work, capsys)


def test_a_shape_mismatch_names_both_shapes(work, capsys):
    argv = checkpoint(lambda good: edit_tensors(good, widen, rehash=True))(work)
    found, needed = shape_words(work / "run" / "best.safetensors")
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert f"has shape {found}" in err and f"needs {needed}" in err, err


# --------------------------------------------------------------------------- accepted inputs
def test_a_checkpoint_without_digest_still_loads_and_translates(work, capsys):
    """Checkpoints written before the digest (format version 1) load unverified."""
    old = work / "old"
    old.mkdir()
    (old / "best.safetensors").write_bytes(
        old_format((work / "run" / "best.safetensors").read_bytes())
    )
    assert DIGEST_KEY not in split((old / "best.safetensors").read_bytes())[0]["__metadata__"]
    (work / "in.txt").write_text("Jan 2, 2003\nMar 3, 1999\n", encoding="utf-8")
    assert main(["translate", str(old), "--input", str(work / "in.txt")]) == 0
    from_old = capsys.readouterr().out
    assert main(["translate", str(work / "run"), "--input", str(work / "in.txt")]) == 0
    assert from_old == capsys.readouterr().out and len(from_old.splitlines()) == 2


def test_every_writer_stores_a_digest_that_matches(work, capsys):
    """Training's best and last, and jumok average's output, carry a digest of their content."""
    out = work / "avg.safetensors"
    run = work / "run"
    argv = ["average", str(run / "best.safetensors"), str(run / "last.safetensors")]
    assert main([*argv, "--out", str(out)]) == 0
    for path in (run / "best.safetensors", run / "last.safetensors", out):
        payload = path.read_bytes()
        metadata = split(payload)[0]["__metadata__"]
        assert metadata["format_version"] == "2"
        assert metadata[DIGEST_KEY] == checkpoint_digest(st_load(payload), metadata), path
        load_checkpoint(path)


# --------------------------------------------------------------------------------- the digest
def _tiny_checkpoint(path: Path, info: dict | None = None) -> None:
    cfg = load_config(ROOT / "examples/date.yaml").model_copy(update={"model": tiny_model_config()})
    src_vocab, tgt_vocab = Vocab.build([list("abcdefgh")]), Vocab.build([list("xyzuvw")])
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
    save_checkpoint(path, model, cfg, src_vocab, tgt_vocab, info, {"tok.model": b"\x00\xff"})


def test_the_digest_round_trips_and_covers_the_metadata(tmp_path):
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    _tiny_checkpoint(a, {"epoch": 1})
    _tiny_checkpoint(b, {"epoch": 1})
    _tiny_checkpoint(c, {"epoch": 2})
    digests = [split(p.read_bytes())[0]["__metadata__"][DIGEST_KEY] for p in (a, b, c)]
    assert len(digests[0]) == 64 and digests[0] == digests[1] != digests[2]
    payload = a.read_bytes()
    assert digests[0] == checkpoint_digest(st_load(payload), split(payload)[0]["__metadata__"])
    assert load_checkpoint(a).info == {"epoch": 1}


def test_the_digest_covers_each_tensors_name_dtype_and_shape():
    x = torch.arange(6, dtype=torch.float32)
    base = checkpoint_digest({"w": x}, {"format": "jumok-checkpoint"})
    changed = [
        checkpoint_digest({"v": x}, {"format": "jumok-checkpoint"}),
        checkpoint_digest({"w": x.reshape(2, 3)}, {"format": "jumok-checkpoint"}),
        checkpoint_digest({"w": x.view(torch.int32)}, {"format": "jumok-checkpoint"}),
        checkpoint_digest({"w": x}, {"format": "jumok-checkpoint", "info": "{}"}),
    ]
    assert len({base, *changed}) == 5
    # The digest key itself is not hashed; bfloat16 and 0-dim tensors hash too.
    assert base == checkpoint_digest({"w": x}, {"format": "jumok-checkpoint", DIGEST_KEY: "x"})
    assert checkpoint_digest({"w": x.bfloat16(), "s": torch.tensor(1.0)}, {}) != base


def test_any_single_byte_change_is_refused(tmp_path):
    """Flip one bit of every byte in turn (header, metadata and tensors): every load refuses."""
    good = tmp_path / "good.safetensors"
    _tiny_checkpoint(good)
    payload = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    undetected = []
    for i in range(len(payload)):
        bad.write_bytes(payload[:i] + bytes([payload[i] ^ 0x01]) + payload[i + 1 :])
        try:
            load_checkpoint(bad)
        except RunDirError as err:
            assert str(err).startswith(f"{bad}: "), err
        else:
            undetected.append(i)
    assert not undetected, f"{len(undetected)} of {len(payload)} changes loaded: {undetected[:5]}"


# ------------------------------------------------------------------------- fitting the model
def test_load_weights_names_the_file_the_tensor_and_both_shapes(tmp_path):
    path = tmp_path / "m.safetensors"
    _tiny_checkpoint(path)
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.config.model, len(ckpt.src_vocab) + 1, len(ckpt.tgt_vocab))
    with pytest.raises(RunDirError) as err:
        load_weights(model, ckpt)
    message = str(err.value)
    assert message.startswith(f"{path}: tensor 'encoder.embedding.weight' has shape [12, 6]")
    assert "needs [13, 6]" in message
    del ckpt.state_dict["decoder.output.bias"]  # a missing tensor: torch's words, one line
    model = build_model(ckpt.config.model, len(ckpt.src_vocab), len(ckpt.tgt_vocab))
    with pytest.raises(RunDirError, match=r"decoder\.output\.bias") as err:
        load_weights(model, ckpt)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_check_vocab_file(tmp_path):
    path = tmp_path / "best.safetensors"
    _tiny_checkpoint(path)
    ckpt = load_checkpoint(path)
    vocab_json = tmp_path / "vocab.json"
    check_vocab_file(vocab_json, ckpt)  # no vocab.json: nothing to compare
    same = {"source": ckpt.src_vocab.tokens, "target": ckpt.tgt_vocab.tokens}
    vocab_json.write_text(json.dumps(same), encoding="utf-8")
    check_vocab_file(vocab_json, ckpt)
    for content, says in [
        ("{not json", "not readable JSON"),
        (json.dumps({"source": same["source"]}), "vocab.json has no target token list"),
        (json.dumps({**same, "target": same["target"][:-1]}), "9 target tokens in vocab.json"),
        (json.dumps({**same, "extra": []}), "more than the source and target"),
    ]:
        vocab_json.write_text(content, encoding="utf-8")
        with pytest.raises(RunDirError, match=says) as err:
            check_vocab_file(vocab_json, ckpt)
        assert str(err.value).startswith(f"{vocab_json}"), err.value


def test_non_finite_weights_are_found_exactly(tmp_path):
    """Huge finite weights (whose sum overflows) pass; one NaN or inf in any float tensor fails;
    integer tensors are not checked."""
    path = tmp_path / "x.safetensors"
    huge = torch.full((4,), 3e38)
    refuse_non_finite(path, {"huge": huge, "ids": torch.arange(3), "half": huge.bfloat16()})
    for bad in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            weights = torch.zeros(3, 5, dtype=dtype)
            weights[2, 4] = bad
            with pytest.raises(
                RunDirError, match=r"tensor 'b' holds 1 NaN or infinite value\(s\) of 15"
            ):
                refuse_non_finite(path, {"a": torch.zeros(2), "b": weights})
