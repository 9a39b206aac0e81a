"""A run's tokenizers and vocabularies, trained (or loaded) from its training split."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jumok.config import Config
from jumok.data.splits import Pair, Splits, streamed_train_pairs
from jumok.data.tokenizers import Tokenizer, make_tokenizers, tokenizer_files
from jumok.data.vocab import Vocab


@dataclass
class Vocabularies:
    """A run's tokenizers and vocabularies, and how to read its training pairs again."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab
    files: dict[str, bytes]  # tokenizer model files, stored in every checkpoint
    held_out: set[Pair]  # dev and test pairs, never trained on
    train_pairs: Callable[[], Iterator[Pair]]  # a fresh pass over the training pairs


def build_vocabularies(
    cfg: Config, splits: Splits, run_dir: Path, log: Callable[[str], None] = print
) -> Vocabularies:
    """Train (or load, when ``run_dir`` already has them) the tokenizers, then the vocabularies.

    SentencePiece models are kept in ``run_dir``; ``jumok vocab`` calls this before training so
    that they can be looked at first, and ``jumok train`` in the same directory reuses them.
    """
    d, tk = cfg.data, cfg.data.tokenizer
    held_out = set(splits.dev) | set(splits.test)

    def train_pairs() -> Iterator[Pair]:  # from memory, or (streaming) read again from disk
        return streamed_train_pairs(d, held_out) if d.streaming else iter(splits.train)

    src_tok, tgt_tok = make_tokenizers(
        tk.kind,
        list(itertools.islice(train_pairs(), d.shuffle_buffer)) if d.streaming else splits.train,
        run_dir,
        joint=tk.joint,
        vocab_size=tk.vocab_size,
        model_type=tk.model_type,
        character_coverage=tk.character_coverage,
        seed=cfg.train.seed,
    )
    files = {n: (run_dir / n).read_bytes() for n in tokenizer_files(tk.kind, tk.joint)}
    if files:
        log(f"tokenizer: {tk.kind} ({'joint' if tk.joint else 'separate'}) -> {', '.join(files)}")
    if d.shared_vocab:  # one list for both sides, as the book's char_to_id
        both = (
            tokens
            for s, t in train_pairs()
            for tokens in (src_tok.tokenize(s), tgt_tok.tokenize(t))
        )
        src_vocab = tgt_vocab = Vocab.build(both)
    else:
        src_vocab = Vocab.build(src_tok.tokenize(s) for s, _ in train_pairs())
        tgt_vocab = Vocab.build(tgt_tok.tokenize(t) for _, t in train_pairs())
    return Vocabularies(src_tok, tgt_tok, src_vocab, tgt_vocab, files, held_out, train_pairs)
