"""The peers' data, prepared from ``../shared/data`` as ../shared/PEERS.md §2 describes.

date (``DATA/date``): ``dlfs2/date.txt`` split at each line's first ``_``; the source loses its
trailing padding spaces, the target is the 10-character ISO date. train = the first 45,000 lines,
test = the last 5,000, in file order. The peers read characters separated by spaces, a space
written as ``▁`` (``train.src``, ``train.trg``, ...), with one 58-symbol vocabulary of the train
characters of both sides (``vocab.txt`` for JoeyNMT, the same lines in ``vocab.onmt``); jumok
reads the same pairs unsplit as ``source<TAB>target`` (``train.tsv``, ``test.tsv``).

multi30k (``DATA/multi30k``): the raw train/val/test2016 files, one joint SentencePiece BPE model
of 8,000 pieces (character coverage 1.0) trained on train.en + train.de (``spm.model``), and its
7,997 pieces other than ``<unk>``, ``<s>``, ``</s>`` as both peers' vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import sentencepiece as spm

DATE_SHA256 = "62e66a301ce8537868e725512d2a45663fc366526b7e42028cb703bda2b1c79a"
DATE_LINES, DATE_TEST = 50_000, 5_000
SPACE = "▁"  # how a space is written in the peers' character files
MULTI30K_FILES = [
    f"{split}.{lang}" for split in ("train", "val", "test2016") for lang in ("en", "de")
]
SPM_SPECIALS = {"<unk>", "<s>", "</s>"}
STAMP = "prepared.json"


class DataMissing(SystemExit):
    """``../shared/data`` (or one of its files) is not where it should be."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_date(shared: Path, out: Path) -> dict:
    """Write the date files into ``out`` (skipped when done before); returns what was made."""
    if (out / STAMP).exists():
        return json.loads((out / STAMP).read_text())
    source = _require(shared / "dlfs2" / "date.txt")
    digest = sha256(source)
    if digest != DATE_SHA256:
        raise DataMissing(f"peers: {source}: sha256 {digest}, expected {DATE_SHA256}")
    lines = source.read_text(encoding="ascii").split("\n")[:-1]  # the file ends in a newline
    if len(lines) != DATE_LINES:
        raise DataMissing(f"peers: {source}: {len(lines)} lines, expected {DATE_LINES}")
    # 'september 27, 1994           _1994-09-27' -> ('september 27, 1994', '1994-09-27')
    pairs = [(src.rstrip(" "), tgt) for src, _, tgt in (line.partition("_") for line in lines)]
    splits = {"train": pairs[: DATE_LINES - DATE_TEST], "test": pairs[-DATE_TEST:]}
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        _write(out / f"{name}.src", [_spaced(src) for src, _ in split])
        _write(out / f"{name}.trg", [_spaced(tgt) for _, tgt in split])
        _write(out / f"{name}.tsv", [f"{src}\t{tgt}" for src, tgt in split])
    symbols = sorted(
        {c for pair in splits["train"] for side in pair for c in _spaced(side).split()}
    )
    for name in ("vocab.txt", "vocab.onmt"):
        _write(out / name, symbols)
    made = {"date.txt sha256": digest, "train": len(splits["train"]), "test": DATE_TEST}
    made["vocabulary"] = len(symbols)
    (out / STAMP).write_text(json.dumps(made, indent=1) + "\n")
    return made


def prepare_multi30k(shared: Path, out: Path) -> dict:
    """Copy Multi30k and train the joint SentencePiece model (skipped when done before)."""
    if (out / STAMP).exists():
        return json.loads((out / STAMP).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in MULTI30K_FILES:
        shutil.copyfile(_require(shared / "multi30k" / name), out / name)
    spm.SentencePieceTrainer.train(
        input=[str(out / "train.en"), str(out / "train.de")],
        model_prefix=str(out / "spm"),
        vocab_size=8000,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,  # its training log is long and says nothing the stamp file does not
    )
    model = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    pieces = [model.id_to_piece(i) for i in range(model.get_piece_size())]
    pieces = [piece for piece in pieces if piece not in SPM_SPECIALS]
    for name in ("vocab.txt", "vocab.onmt"):
        _write(out / name, pieces)
    made = {"spm.model sha256": sha256(out / "spm.model"), "sentencepiece": spm.__version__}
    made["vocabulary"] = len(pieces)
    (out / STAMP).write_text(json.dumps(made, indent=1) + "\n")
    return made


def _spaced(text: str) -> str:
    """'may 1, 17' -> 'm a y ▁ 1 , ▁ 1 7': one token per character, as the peers read them."""
    return " ".join(SPACE if c == " " else c for c in text)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataMissing(
            f"peers: {path} is missing; the benchmark reads ../shared/data beside the repository "
            "(or the folder given with --shared)"
        )
    return path


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
