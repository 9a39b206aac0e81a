"""A trained model with its vocabularies: text in, translations with attention out.

``jumok.load(RUN_DIR)`` returns a :class:`Translator`; ``jumok translate`` and the demo use it.
Attention matrices are always returned in the source's *original* order, also when the model was
trained on reversed input.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from jumok.checkpoint import Checkpoint, load_checkpoint
from jumok.config import Config
from jumok.data import encoder_order, pad
from jumok.diagnostics import AttentionDiagnostics, diagnose
from jumok.errors import DataError, RunDirError
from jumok.model import Seq2Seq, build_model
from jumok.search import greedy
from jumok.tokenizers import CharTokenizer, Tokenizer, tokenizers_from_files
from jumok.vocab import EOS, UNK_ID, Vocab


class UnknownTokenWarning(UserWarning):
    """Some input characters are not in the source vocabulary and were mapped to unk."""


@dataclass
class Translation:
    """One input and what the model made of it.

    Attributes:
        source: the input text.
        text: the output text (detokenized, without special tokens).
        score: total log-probability of the output tokens (eos included).
        tokens: output tokens, ending with ``</s>`` when the model finished the sentence.
        token_logprobs: log-probability of each output token.
        source_tokens: input tokens in their original order.
        attention: ``len(tokens)`` rows x ``len(source_tokens)`` columns of weights; each row
            sums to 1. None for a model without attention (``model.attention: none``).
        unknown: how many input tokens were not in the vocabulary.
        source_reversed: the model read the source reversed (``data.reverse_source``), so the
            last token its encoder read is ``source_tokens[0]``, not ``source_tokens[-1]``.
            ``attention`` is in the original order either way.
    """

    source: str
    text: str
    score: float
    tokens: list[str]
    token_logprobs: list[float]
    source_tokens: list[str]
    attention: list[list[float]] | None
    unknown: int
    source_reversed: bool = False

    def diagnostics(self) -> AttentionDiagnostics | None:
        """Attention diagnostics (:func:`jumok.diagnostics.diagnose`); None without attention.

        The collapse position is the last source token the encoder read: the last column, or
        column 0 when the model read the source reversed.
        """
        if self.attention is None:
            return None
        return diagnose(self.attention, collapse_positions=[0] if self.source_reversed else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields plus ``diagnostics`` (a dict, or None without attention)."""
        record = asdict(self)
        diagnostics = self.diagnostics()
        record["diagnostics"] = None if diagnostics is None else diagnostics.to_dict()
        return record


class Translator:
    """Decode text with a trained model.

    Args:
        model: the model (moved to ``device`` and put in eval mode here).
        config: the run's resolved config.
        src_vocab, tgt_vocab: the run's vocabularies.
        device: where to decode.
    """

    def __init__(
        self,
        model: Seq2Seq,
        config: Config,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        device: str | torch.device = "cpu",
        tokenizers: tuple[Tokenizer, Tokenizer] | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.src_tok, self.tgt_tok = tokenizers or (CharTokenizer(), CharTokenizer())

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | torch.device = "cpu") -> Translator:
        model = build_model(ckpt.config.model, len(ckpt.src_vocab), len(ckpt.tgt_vocab))
        try:
            model.load_state_dict(ckpt.state_dict)
        except RuntimeError as err:
            raise RunDirError(f"checkpoint weights do not fit its own config: {err}") from None
        tk = ckpt.config.data.tokenizer
        tokenizers = tokenizers_from_files(tk.kind, tk.joint, ckpt.files)
        return cls(model, ckpt.config, ckpt.src_vocab, ckpt.tgt_vocab, device, tokenizers)

    def translate(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int | None = None
    ) -> list[Translation]:
        """Translate each text (greedy search).

        Raises:
            DataError: a text is empty.
        """
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings; wrap a single text in a list")
        max_length = max_length or self.config.decode.max_length
        batch_size = batch_size or self.config.decode.batch_size
        reverse = self.config.data.reverse_source
        src_tokens = [self.src_tok.tokenize(t) for t in texts]
        for number, tokens in enumerate(src_tokens, start=1):
            if not tokens:
                raise DataError(
                    f"input {number}: the text is empty; expected at least one character"
                )
        encoded = [self.src_vocab.encode(tokens) for tokens in src_tokens]
        self._warn_unknown(src_tokens, encoded)
        # Decode in order of length so that batches carry little padding; restore order after.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        results: list[Translation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            fill = self.config.data.fill_source_to
            rows = [encoder_order(encoded[i].ids, reverse, fill) for i in chunk]
            src_BS = pad(rows).to(self.device)
            src_len_B = torch.tensor([len(r) for r in rows], device=self.device)
            hyps = greedy(self.model, src_BS, src_len_B, max_length)
            for i, row, hyp in zip(chunk, rows, hyps, strict=True):
                attention_TS = hyp.attention_TS
                if attention_TS is not None and reverse:
                    attention_TS = attention_TS.flip(-1)
                tokens = self.tgt_vocab.decode(hyp.token_ids)
                results[i] = Translation(
                    source=texts[i],
                    text=self.tgt_tok.detokenize(tokens),
                    score=hyp.score,
                    tokens=tokens,
                    token_logprobs=hyp.token_logprobs,
                    # data.fill_source_to's filler is read and attended to: it has columns too
                    source_tokens=src_tokens[i] + [EOS] * (len(row) - len(src_tokens[i])),
                    attention=None if attention_TS is None else attention_TS.tolist(),
                    unknown=encoded[i].unknown,
                    source_reversed=reverse,
                )
        return [r for r in results if r is not None]

    def _warn_unknown(self, src_tokens: list[list[str]], encoded: list) -> None:
        total = sum(e.unknown for e in encoded)
        if not total:
            return
        unknown = Counter(
            t for tokens in src_tokens for t in tokens if self.src_vocab.id(t) == UNK_ID
        )
        shown = ", ".join(f"{t!r}×{n}" for t, n in unknown.most_common(5))
        inputs = sum(1 for e in encoded if e.unknown)
        warnings.warn(
            f"{total} unknown source characters in {inputs} of {len(encoded)} inputs were mapped "
            f"to <unk>: {shown}",
            UnknownTokenWarning,
            stacklevel=3,
        )


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory (or the file itself when given one)."""
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.exists():
        raise RunDirError(f"{path}: no such run directory")
    candidate = path / f"{which}.safetensors"
    if candidate.is_file():
        return candidate
    fallback = path / "last.safetensors"
    if fallback.is_file():
        return fallback
    raise RunDirError(
        f"{path}: no {which}.safetensors or last.safetensors; is this a jumok run directory?"
    )


def load(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> Translator:
    """Load a trained run for decoding: ``jumok.load("runs/date").translate(["Sep 27, 1994"])``."""
    return Translator.from_checkpoint(load_checkpoint(resolve_checkpoint(run_dir, which)), device)
