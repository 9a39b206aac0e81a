"""Tokenizers: characters, words, and SentencePiece subwords, behind one small protocol.

``char`` is what jumok's toy tasks use (:func:`jumok.data.vocab.tokenize_chars`). ``word`` splits on
whitespace and punctuation and is exactly reversible up to whitespace. ``sentencepiece`` wraps a
model trained on the training pairs (BPE or unigram), kept as a ``.model`` file in the run
directory so that translation later uses the very same segmentation.

Every ``detokenize`` drops jumok's special tokens (``<pad>``, ``<s>``, ``</s>``, ``<unk>``), as
:func:`jumok.data.vocab.detokenize_chars` does, so a model's output can be passed in as it is.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import sentencepiece as spm

from jumok.data.vocab import SPECIALS, detokenize_chars, tokenize_chars
from jumok.errors import DataError

TOKENIZER_KINDS = ("char", "word", "sentencepiece")
SPM_MODEL_TYPES = ("bpe", "unigram")
SPACE_MARK = "\u2581"  # "▁", the mark SentencePiece also puts on a piece that follows a space


@runtime_checkable
class Tokenizer(Protocol):
    """Turns text into a list of string tokens and back."""

    kind: str

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...


class CharTokenizer:
    """One token per character, spaces included (``"a b"`` -> ``["a", " ", "b"]``)."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return tokenize_chars(text)

    def detokenize(self, tokens: list[str]) -> str:
        return detokenize_chars(tokens)


# A word is a run of letters/digits/underscore (any script, so Korean words stay whole), joined
# across apostrophes ("don't", "l'homme"). Any other character (punctuation, symbols, "▁") is a
# token on its own. Whitespace never appears here: text is split on it first.
_WORD_OR_SYMBOL = re.compile(r"\w+(?:['\u2019]\w+)*|.", re.DOTALL)


class WordTokenizer:
    """Words and single punctuation marks; a token that follows a space starts with ``▁``.

    ``"Don't go, 학생!"`` -> ``["Don't", "▁go", ",", "▁학생", "!"]``. For any string ``s``,
    ``detokenize(tokenize(s)) == " ".join(s.split())``: runs of whitespace become one space and
    leading and trailing whitespace goes. A literal ``▁`` in the text is always a token of its
    own, so the bare token ``"▁"`` means the character itself and ``"▁▁"`` a space before it.
    """

    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for i, chunk in enumerate(text.split()):
            pieces = _WORD_OR_SYMBOL.findall(chunk)
            if i > 0:
                pieces[0] = SPACE_MARK + pieces[0]
            tokens.extend(pieces)
        return tokens

    def detokenize(self, tokens: list[str]) -> str:
        parts = []
        for token in tokens:
            if token in SPECIALS:
                continue
            if token.startswith(SPACE_MARK) and token != SPACE_MARK:
                parts.append(" " + token[len(SPACE_MARK) :])
            else:
                parts.append(token)
        return "".join(parts)


class SentencePieceTokenizer:
    """A trained SentencePiece model: text -> pieces (``"▁나는", "▁학생", ...``) and back.

    SentencePiece normalises text first (NFKC, runs of spaces to one, no leading or trailing
    space), so ``detokenize(tokenize(s)) == s`` holds for text already in that form. Characters
    the model never saw come out as their own pieces, not as ``<unk>``, and decode back.

    Args:
        processor: the loaded model.
        model_path: where the model lives (for messages).
    """

    kind = "sentencepiece"

    def __init__(self, processor: spm.SentencePieceProcessor, model_path: Path):
        self.processor = processor
        self.model_path = Path(model_path)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model_path: Path,
        vocab_size: int,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
        seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Train a model on ``texts`` (streamed, never written to disk) and save it.

        The model is written to a temporary file beside ``model_path`` and then renamed, so a
        crash never leaves a half-written model behind. Training uses one thread and every
        sentence, so the same texts and seed give a byte-identical model. ``vocab_size`` is an
        upper bound (``hard_vocab_limit=False``): a small corpus gets a smaller vocabulary rather
        than an error. SentencePiece's own ``<unk>`` is its only special piece; jumok's
        :class:`~jumok.data.vocab.Vocab` adds pad/bos/eos itself.

        Args:
            texts: sentences, one per item; empty ones are skipped.
            model_path: the ``.model`` file to write.
            vocab_size: the largest number of pieces.
            model_type: ``bpe`` or ``unigram``.
            character_coverage: share of characters the model must cover (1.0 for Korean,
                Latin scripts; 0.9995 is SentencePiece's advice for CJK with rare characters).
            seed: seed of SentencePiece's random generator.

        Raises:
            DataError: no non-empty text, or SentencePiece cannot train on it (the message
                includes its reason, e.g. a vocab_size below the number of distinct characters).
        """
        if model_type not in SPM_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {SPM_MODEL_TYPES}, got {model_type!r}")
        model_path = Path(model_path)
        sentences: Iterator[str] = (text for text in texts if text.strip())
        first = next(sentences, None)
        if first is None:
            raise DataError(f"{model_path}: no text to train a SentencePiece model on")
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=itertools.chain([first], sentences),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                hard_vocab_limit=False,
                num_threads=1,
                input_sentence_size=0,  # use every sentence: no sampling, deterministic
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                minloglevel=2,  # its training log would flood jumok's output
            )
        except RuntimeError as err:
            reason = str(err).split("] ", 1)[-1].strip() or str(err)
            raise DataError(f"{model_path}: SentencePiece training failed: {reason}") from None
        data = model.getvalue()
        _write_atomically(model_path, data)
        return cls(_processor(model_path, data), model_path)

    @classmethod
    def load(cls, model_path: Path) -> SentencePieceTokenizer:
        """Load a ``.model`` file written by :meth:`train`.

        Raises:
            DataError: the file is missing or is not a SentencePiece model.
        """
        model_path = Path(model_path)
        try:
            data = model_path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{model_path}: SentencePiece model not found") from None
        except OSError as err:
            raise DataError(f"{model_path}: cannot read: {err.strerror}") from None
        return cls(_processor(model_path, data), model_path)

    def tokenize(self, text: str) -> list[str]:
        return self.processor.encode(text, out_type=str)

    def detokenize(self, tokens: list[str]) -> str:
        return self.processor.decode_pieces([t for t in tokens if t not in SPECIALS])

    def pieces(self) -> list[str]:
        """Every piece of the model in id order, ``<unk>`` first."""
        return [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]


def _processor(model_path: Path, data: bytes) -> spm.SentencePieceProcessor:
    if not data:
        raise DataError(f"{model_path}: empty file; expected a SentencePiece model")
    try:
        return spm.SentencePieceProcessor(model_proto=data)
    except RuntimeError:
        raise DataError(
            f"{model_path}: not a SentencePiece model (corrupt or another format)"
        ) from None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- files
def tokenizer_files(kind: str, joint: bool) -> list[str]:
    """Names of the files :func:`make_tokenizers` keeps in its directory for ``kind``."""
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {TOKENIZER_KINDS}")
    if kind != "sentencepiece":
        return []
    return ["spm.model"] if joint else ["spm.source.model", "spm.target.model"]


def make_tokenizers(  # noqa: PLR0913 (pyproject.toml: lint exceptions)
    kind: str,
    train_pairs: list[tuple[str, str]],
    directory: Path,
    *,
    joint: bool = True,
    vocab_size: int = 8000,
    model_type: str = "bpe",
    seed: int = 0,
    character_coverage: float = 1.0,
) -> tuple[Tokenizer, Tokenizer]:
    """The source and target tokenizers of a run.

    For ``sentencepiece``, a model file already in ``directory`` (see :func:`tokenizer_files`) is
    loaded as it is, so a resumed run or ``translate`` segments exactly as training did; a
    missing one is trained on the training pairs, both sides together (``joint``: one shared
    model, both tokenizers are the same object) or each side alone, and saved there. The
    settings are not checked against an existing file: delete it to retrain.

    Returns:
        ``(source_tokenizer, target_tokenizer)``.
    """
    names = tokenizer_files(kind, joint)
    if kind == "char":
        return CharTokenizer(), CharTokenizer()
    if kind == "word":
        return WordTokenizer(), WordTokenizer()
    directory = Path(directory)

    def load_or_train(name: str, texts: Iterable[str]) -> SentencePieceTokenizer:
        path = directory / name
        if path.exists():
            return SentencePieceTokenizer.load(path)
        return SentencePieceTokenizer.train(
            texts,
            path,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            seed=seed,
        )

    sources = (source for source, _ in train_pairs)
    targets = (target for _, target in train_pairs)
    if joint:
        shared = load_or_train(names[0], itertools.chain(sources, targets))
        return shared, shared
    return load_or_train(names[0], sources), load_or_train(names[1], targets)


def tokenizers_from_files(
    kind: str, joint: bool, files: dict[str, bytes], where: str = "checkpoint"
) -> tuple[Tokenizer, Tokenizer]:
    """The tokenizers of a run rebuilt from its model files' bytes (as stored in a checkpoint)."""
    if kind == "char":
        return CharTokenizer(), CharTokenizer()
    if kind == "word":
        return WordTokenizer(), WordTokenizer()
    names = tokenizer_files(kind, joint)
    missing = [n for n in names if n not in files]
    if missing:
        raise DataError(f"{where}: SentencePiece model {', '.join(missing)} missing")
    models = [
        SentencePieceTokenizer(_processor(Path(where) / n, files[n]), Path(where) / n)
        for n in names
    ]
    return (models[0], models[0]) if joint else (models[0], models[1])
