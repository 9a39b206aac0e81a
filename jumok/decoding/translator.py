"""A trained model with its vocabularies: text in, translations with attention out.

``jumok.load(RUN_DIR)`` returns a :class:`Translator`; ``jumok translate`` and the demo use it.
Attention matrices are always returned in the source's *original* order, also when the model was
trained on reversed input.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from jumok.checkpoint import Checkpoint, check_vocab_file, load_checkpoint, load_weights
from jumok.config import Config, DecodeConfig, format_validation_error
from jumok.data.inputs import remove_controls
from jumok.data.splits import encoder_order, pad
from jumok.data.tokenizers import CharTokenizer, Tokenizer, tokenizers_from_files
from jumok.data.vocab import EOS, UNK, UNK_ID, Vocab
from jumok.data.vocab import Encoded as TokenIds
from jumok.decoding import copies
from jumok.decoding.diagnostics import AttentionDiagnostics, diagnose
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.locate import resolve_checkpoint
from jumok.decoding.prefix import PrefixArgument, encode_prefixes
from jumok.decoding.search import run_search, search_batches
from jumok.decoding.stop import StopCheck
from jumok.errors import ConfigError, DataError, RunDirError
from jumok.fast import packing
from jumok.model.seq2seq import Seq2Seq, build_model


class ControlCharacterWarning(UserWarning):
    """Control characters (NUL, escape, ...) were removed from the inputs."""


class UnknownTokenWarning(UserWarning):
    """Some input characters are not in the source vocabulary and were mapped to unk."""


@dataclass
class Candidate:
    """One hypothesis for an input (the n-best list holds several).

    Attributes:
        text: the output text (detokenized, without special tokens).
        score: total log-probability of the output tokens (eos included).
        normalized_score: the score beam search ranked by (length and coverage penalties);
            None for greedy search and sampling.
        tokens: output tokens, ending with ``</s>`` when the hypothesis finished.
        token_logprobs: log-probability of each output token.
        attention: ``len(tokens)`` rows x source-token columns, original order; None without
            attention.
        finished: the model emitted eos within the length limit.
        confidence: geometric mean of the token probabilities (:func:`confidence`).
        rerank_score: the MMI score the n-best was reordered by (:class:`Reranker`), or None.
    """

    text: str
    score: float
    normalized_score: float | None
    tokens: list[str]
    token_logprobs: list[float]
    attention: list[list[float]] | None
    finished: bool
    confidence: float
    rerank_score: float | None = None


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
        confidence: the best hypothesis's :func:`confidence`.
        hypotheses: the n-best list, best first; the fields above repeat the first one.
        abstained: the confidence was below ``decode.abstain_below``: ``text`` is empty.
        skipped: the input was blank (once control characters were removed): nothing was
            decoded, ``text`` is empty and there are no hypotheses.
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
    confidence: float = 0.0
    hypotheses: list[Candidate] = field(default_factory=list)
    abstained: bool = False
    skipped: bool = False

    @classmethod
    def skip(cls, source: str) -> Translation:
        """The empty translation of an empty input (see ``skipped``)."""
        return cls(source, "", 0.0, [], [], [], None, 0, skipped=True)

    def diagnostics(self) -> AttentionDiagnostics | None:
        """Attention diagnostics (:func:`jumok.decoding.diagnostics.diagnose`); None without attention.

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


def confidence(token_logprobs: Sequence[float]) -> float:
    """The geometric mean of the output tokens' probabilities, in [0, 1].

    1 means the model was sure of every token; it does not shrink with length as the total
    probability does, so one threshold (``--abstain-below``) fits short and long outputs.
    """
    if not token_logprobs:
        return 0.0
    return math.exp(sum(token_logprobs) / len(token_logprobs))


@dataclass
class Reranker:
    """Anti-generic reranking of an n-best list, maximum mutual information (Li et al. 2016).

    Each hypothesis T of a source S is rescored as ``log P(T|S) - weight * log P(T)`` with a
    target-side language model (``lm``, MMI-antiLM: generic replies are likely under any source
    and lose) and/or ``+ weight * log P(S|T)`` with a reverse model trained on swapped pairs
    (``reverse``, MMI-bidi: the reply must explain its source). Both are jumok runs.
    """

    lm: Translator | None = None
    reverse: Translator | None = None
    weight: float = 0.5

    def __post_init__(self) -> None:
        if self.lm is None and self.reverse is None:
            raise ConfigError("MMI reranking needs --mmi-lm, --mmi-reverse or both")
        if self.lm is not None and self.lm.model_type != "lm":
            raise ConfigError("--mmi-lm: expected a language model run (model.type: lm)")

    def apply(self, sources: Sequence[str], nbest: Sequence[list[Candidate]]) -> None:
        """Set ``rerank_score`` on every candidate and sort each list by it, best first."""
        flat = [(s, c) for s, cands in zip(sources, nbest, strict=True) for c in cands]
        texts = [c.text for _, c in flat]
        total = [c.score for _, c in flat]
        if self.lm is not None:
            lm_scores = self.lm.score(texts, texts)
            total = [t - self.weight * x for t, x in zip(total, lm_scores, strict=True)]
        if self.reverse is not None:
            back = self.reverse.score(texts, [s for s, _ in flat])
            total = [t + self.weight * x for t, x in zip(total, back, strict=True)]
        for (_, candidate), value in zip(flat, total, strict=True):
            candidate.rerank_score = value
        for cands in nbest:
            cands.sort(key=lambda c: -(c.rerank_score or 0.0))


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
        self.has_attention = config.model.attention != "none"
        self.model_type = config.model.type
        self.source: str | None = None  # the checkpoint it was loaded from, when known
        # bf16 and int8 copies of self.model, with the key they were made for (_decoding_model)
        self._copies: dict[str, tuple[int, nn.Module]] = {}  # variant -> (id(model), copy)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | torch.device = "cpu") -> Translator:
        tk = ckpt.config.data.tokenizer
        tokenizers = tokenizers_from_files(tk.kind, tk.joint, ckpt.files)
        return cls(
            model_from(ckpt), ckpt.config, ckpt.src_vocab, ckpt.tgt_vocab, device, tokenizers
        )

    @classmethod
    def from_checkpoints(
        cls, checkpoints: Sequence[Checkpoint], names: Sequence[str], device: str | torch.device
    ) -> Translator:
        """An ensemble (:class:`jumok.decoding.ensemble.Ensemble`) decoding with the first run's settings."""
        from jumok.decoding.ensemble import Ensemble, check_compatible

        check_compatible(checkpoints, names)
        first = checkpoints[0]
        translator = cls.from_checkpoint(first, device)
        translator.model = Ensemble([model_from(c) for c in checkpoints]).to(device).eval()
        translator.has_attention = any(c.config.model.attention != "none" for c in checkpoints)
        return translator

    def refresh(self) -> None:
        """Drop the decoding copies (bf16, int8, packed float32), so that the next call makes them
        from the model's weights of that moment.

        A copy is made once and kept: jumok never changes a loaded model's weights. Code that
        changes ``self.model``'s weights in place itself calls this before translating again
        (a copy made before keeps the old weights, quantized or packed)."""
        self._copies.clear()

    def prepare(self, **options: Any) -> None:
        """Make now the decoding copy of the model that ``options`` (``decode`` settings, as
        :meth:`translate` takes them) will decode with: bf16, int8, or float32 with packed
        weights (:meth:`_decoding_model`). Otherwise the first :meth:`translate` call makes it
        (0.02-0.15 s for the Multi30k model). ``jumok translate`` calls this while loading."""
        opts = self.options(**options)
        self._decoding_model(opts.precision, opts.quantize)

    def translate(  # noqa: PLR0913 (pyproject.toml: lint exceptions)
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        batch_size: int | None = None,
        rerank: Reranker | None = None,
        *,
        attention: bool = True,
        should_stop: StopCheck | None = None,
        strict: bool = False,
        prefix: PrefixArgument = None,
        **options: Any,
    ) -> list[Translation]:
        """Translate each text.

        Args:
            max_length, batch_size, **options: any ``decode.*`` field for this call (e.g.
                ``beam=5, n_best=3``); the run's ``decode`` section gives the rest.
            rerank: reorder each n-best by an MMI score (:class:`Reranker`).
            attention: return each hypothesis's attention matrix as lists of floats; False
                leaves them None (16 hypotheses x 400 x 1,000 tokens are 6.4 M Python floats).
            should_stop: asked before every decoding step; when it returns True the search
                stops (a server stops the request of a caller that has gone).
            strict: a blank text is an error; otherwise its translation is empty and marked
                ``skipped``, so the outputs stay aligned with the inputs.
            prefix: what each output must start with (scored, then decoded freely): one text
                for all, or one per text (None or '': none). See :mod:`jumok.decoding.prefix`.

        Returns:
            One :class:`Translation` per text, in order; its ``hypotheses`` hold the n-best.

        Raises:
            DataError: with ``strict``, a text is empty; a bad prefix.
            ConfigError: an option is unknown or out of range.
            jumok.decoding.stop.DecodingStopped: ``should_stop`` returned True.
        """
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings; wrap a single text in a list")
        opts = self.options(max_length=max_length, batch_size=batch_size, **options)
        if opts.replace_unk and not self.has_attention:
            raise ConfigError(
                "decode.replace_unk: this model has no attention (model.attention: none) to "
                "point at a source token; turn replace_unk off"
            )
        prefixes = encode_prefixes(prefix, texts, self.tgt_tok, self.tgt_vocab, opts.max_length)
        src_tokens, encoded = self._encode(texts)
        kept = [i for i, tokens in enumerate(src_tokens) if tokens]
        if strict and len(kept) < len(texts):
            first = next(i for i, tokens in enumerate(src_tokens) if not tokens) + 1
            raise DataError(f"input {first}: the text is empty; expected at least one character")
        src_tokens, encoded = [src_tokens[i] for i in kept], [encoded[i] for i in kept]
        prefixes = prefixes and [prefixes[i] for i in kept]
        self._warn_unknown(src_tokens, encoded)
        found = self._search(src_tokens, encoded, opts, attention, should_stop, prefixes)
        if rerank is not None:
            rerank.apply([texts[i] for i in kept], [candidates for _, candidates in found])
        results = {
            i: self._assemble(texts[i], shown, candidates, e.unknown, opts)
            for i, (shown, candidates), e in zip(kept, found, encoded, strict=True)
        }
        return [
            results[i] if i in results else Translation.skip(text) for i, text in enumerate(texts)
        ]

    def _encode(self, texts: Sequence[str]) -> tuple[list[list[str]], list[TokenIds]]:
        """Each text's source tokens (none for an empty text) and their ids, once control
        characters are removed (with a warning)."""
        cleaned = [remove_controls(t) for t in texts]  # as training data is read
        if removed := [n for _, n in cleaned if n]:
            message = f"removed {sum(removed)} control characters from {len(removed)} inputs"
            warnings.warn(message, ControlCharacterWarning, stacklevel=3)
        src_tokens = [self.src_tok.tokenize(t) if t.strip() else [] for t, _ in cleaned]
        return src_tokens, [self.src_vocab.encode(tokens) for tokens in src_tokens]

    def _search(
        self,
        src_tokens: list[list[str]],
        encoded: list[TokenIds],
        opts: DecodeConfig,
        attention: bool = True,
        should_stop: StopCheck | None = None,
        prefixes: list[list[int]] | None = None,
    ) -> list[tuple[list[str], list[Candidate]]]:
        """Decode every input: for each, in the inputs' order, the tokens its attention
        columns stand for and its n-best candidates (``attention``, ``should_stop``: see
        :meth:`translate`; ``prefixes``: each input's forced prefix ids).

        Inputs are decoded in order of length so that batches carry little padding.
        """
        if not encoded:
            return []
        reverse, fill = self.config.data.reverse_source, self.config.data.fill_source_to
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        model = self._decoding_model(opts.precision, opts.quantize)
        size = opts.batch_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        rows = [[encoder_order(encoded[i].ids, reverse, fill) for i in chunk] for chunk in chunks]
        batches = [
            (pad(b).to(self.device), torch.tensor([len(row) for row in b], device=self.device))
            for b in rows
        ]
        with self._autocast(opts.precision):
            ordered = prefixes and [prefixes[i] for i in order]
            found_batches = search_batches(model, batches, opts, should_stop, ordered)
        found: dict[int, tuple[list[str], list[Candidate]]] = {}
        for chunk, chunk_rows, hyps_B in zip(chunks, rows, found_batches, strict=True):
            for i, row, hyps in zip(chunk, chunk_rows, hyps_B, strict=True):
                # data.fill_source_to's filler is read and attended to: it has columns too
                shown = src_tokens[i] + [EOS] * (len(row) - len(src_tokens[i]))
                candidates = [self._candidate(h, shown, reverse, opts, attention) for h in hyps]
                found[i] = (shown, candidates)
        return [found[i] for i in range(len(encoded))]

    def _assemble(
        self,
        text: str,
        shown: list[str],
        candidates: list[Candidate],
        unknown: int,
        opts: DecodeConfig,
    ) -> Translation:
        """The :class:`Translation` of one input: its best candidate's fields and the n-best;
        the text is withheld (abstained) when the confidence is below ``decode.abstain_below``.
        """
        best = candidates[0]
        abstained = opts.abstain_below is not None and best.confidence < opts.abstain_below
        return Translation(
            source=text,
            text="" if abstained else best.text,
            score=best.score,
            tokens=best.tokens,
            token_logprobs=best.token_logprobs,
            source_tokens=shown,
            attention=best.attention,
            unknown=unknown,
            source_reversed=self.config.data.reverse_source,
            confidence=best.confidence,
            hypotheses=candidates,
            abstained=abstained,
        )

    def score(
        self, sources: Sequence[str], targets: Sequence[str], batch_size: int | None = None
    ) -> list[float]:
        """log P(target | source) of each pair under the model (teacher forcing, eos included).

        A language model (``model.type: lm``) ignores the sources: it gives log P(target).
        """
        from jumok.decoding.scoring import score_pairs

        return score_pairs(self, sources, targets, batch_size)

    def reply(
        self,
        texts: Sequence[str],
        candidates: Any,
        diversity: float | None = None,
        *,
        attention: bool = True,
        **options: Any,
    ) -> list[Translation]:
        """Answer each text with the ``n_best`` replies of ``candidates`` (a list of texts, or a
        :class:`jumok.decoding.replies.ReplySet` built once) the model scores highest, each with
        its teacher-forced attention; ``diversity`` T skips a reply whose chrF similarity to one
        already chosen is >= T. ``options``: ``decode.*`` fields (n_best, length_penalty, alpha,
        batch_size, abstain_below). See :mod:`jumok.decoding.replies`."""
        from jumok.decoding.replies import reply

        beam = max(options.get("n_best") or 1, self.config.decode.beam)  # no search: any n_best
        opts = self.options(**{**options, "beam": beam})
        return reply(self, texts, candidates, opts, diversity, attention)

    def generate(self, n: int, **options: Any) -> list[Candidate]:
        """Sample ``n`` sentences from a language model (``model.type: lm``).

        ``options`` are decoding options; sampling is on unless ``sample=False`` is given.
        """
        if self.model_type != "lm":
            raise ConfigError(
                "generate needs a language model (model.type: lm); this run is a seq2seq "
                "model: use translate"
            )
        opts = self.options(**{"sample": True, **options})
        if opts.sample:
            opts = opts.model_copy(update={"n_best": 1})
        out: list[Candidate] = []
        for start in range(0, n, opts.batch_size):
            rows = min(opts.batch_size, n - start)
            src_BS = torch.full((rows, 1), UNK_ID, dtype=torch.long, device=self.device)
            src_len_B = torch.ones(rows, dtype=torch.long, device=self.device)
            step = opts.model_copy(update={"seed": opts.seed + start})
            for hyps in run_search(self.model, src_BS, src_len_B, step):
                out.append(self._candidate(hyps[0], ["<none>"], False, step))
        return out

    def _decoding_model(self, precision: str, quantize: str = "none") -> nn.Module:
        """The model to decode with: ``self.model``, or a copy made for ``precision`` or
        ``quantize`` and kept for the next call.

        For bf16, a copy with bfloat16 weights: under autocast every matrix product rounds its
        weights to bfloat16 anyway, and the copy saves doing it again at every step (the output
        layer alone is V x H); on a CPU its output and attentional layers are also packed for
        oneDNN (:mod:`jumok.fast.packing`). For int8, a copy whose LSTM, GRU and Linear layers are
        dynamically quantized (:mod:`jumok.fast.quantize`). For float32 on a CPU, a copy around the
        same parameters with the decoder's products packed (:func:`jumok.decoding.copies.float32_copy`);
        elsewhere ``self.model`` itself. ``self.model`` keeps its float32 weights. A copy is
        made once and kept until :meth:`refresh` (or until ``self.model`` is replaced).
        """
        if quantize == "int8":
            from jumok.fast.quantize import check_supported, quantize_int8

            check_supported(self.device)
            variant, make = "int8", quantize_int8
        elif precision == "bf16":
            variant, make = "bf16", self._bf16_copy
        elif packing.available(self.device):
            variant, make = "fp32", copies.float32_copy
        else:
            return self.model
        key = id(self.model)  # a model replaced as a whole is noticed; see refresh()
        cached = self._copies.get(variant)
        if cached is None or cached[0] != key:
            cached = self._copies[variant] = (key, make(self.model))
        return cached[1]

    def _bf16_copy(self, model: nn.Module) -> nn.Module:
        """The bf16 decoding copy; on a CPU, with the output and attentional layers' weights
        packed once for oneDNN (:mod:`jumok.fast.packing`)."""
        made = copy.deepcopy(model).to(torch.bfloat16).eval()
        if packing.available(self.device, torch.bfloat16):
            copies.pack_decoders(made, torch.bfloat16)
        return made

    def _autocast(self, precision: str):
        """bfloat16 autocast for ``decode.precision: bf16``; float32 otherwise."""
        if precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def options(self, **updates: Any) -> DecodeConfig:
        """The run's ``decode`` settings with ``updates`` (None values are ignored), validated."""
        known = DecodeConfig.model_fields
        unknown = [k for k in updates if k not in known]
        if unknown:
            raise ConfigError(
                f"unknown decoding option(s) {', '.join(unknown)}; expected one of "
                f"{', '.join(known)}"
            )
        merged = {
            **self.config.decode.model_dump(),
            **{k: v for k, v in updates.items() if v is not None},
        }
        try:
            return DecodeConfig.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "decoding options", "decode")) from None

    def _candidate(
        self,
        hyp: Hypothesis,
        source_tokens: list[str],
        reverse: bool,
        opts: DecodeConfig,
        attention: bool = True,
    ) -> Candidate:
        """One hypothesis as a :class:`Candidate`; its attention as lists only when
        ``attention`` (replace_unk reads the tensor either way)."""
        attention_TS = hyp.attention_TS
        if attention_TS is not None and reverse:
            attention_TS = attention_TS.flip(-1)
        tokens = self.tgt_vocab.decode(hyp.token_ids)
        if opts.replace_unk and attention_TS is not None:
            most_T = attention_TS.argmax(-1).tolist()  # the first of equal maxima, as max() does
            tokens = [
                source_tokens[most] if tok == UNK else tok
                for tok, most in zip(tokens, most_T, strict=True)
            ]
        return Candidate(
            text=self.tgt_tok.detokenize(tokens),
            score=hyp.score,
            normalized_score=hyp.normalized_score,
            tokens=tokens,
            token_logprobs=hyp.token_logprobs,
            attention=attention_TS.tolist() if attention and attention_TS is not None else None,
            finished=hyp.finished,
            confidence=confidence(hyp.token_logprobs),
        )

    def _warn_unknown(self, src_tokens: list[list[str]], encoded: list[TokenIds]) -> None:
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


def model_from(ckpt: Checkpoint) -> Seq2Seq:
    """The model a checkpoint describes, with its weights."""
    model = build_model(ckpt.config.model, len(ckpt.src_vocab), len(ckpt.tgt_vocab))
    load_weights(model, ckpt)  # a misfit names the file, the tensor and both shapes
    return model


def load(
    run_dir: str | Path | Sequence[str | Path],
    which: str = "best",
    device: str | torch.device = "cpu",
) -> Translator:
    """Load a trained run for decoding: ``jumok.load("runs/date").translate(["Sep 27, 1994"])``.

    Given several run directories (a list), the result decodes with their ensemble: the average
    of their probabilities at every step (:mod:`jumok.decoding.ensemble`). A run directory's
    ``vocab.json`` must agree with the vocabularies its checkpoint embeds.
    """
    run_dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    paths = [resolve_checkpoint(r, which) for r in run_dirs]
    if not paths:
        raise RunDirError("no run directory given")
    checkpoints = [load_run_checkpoint(r, p) for r, p in zip(run_dirs, paths, strict=True)]
    if len(checkpoints) == 1:
        return Translator.from_checkpoint(checkpoints[0], device)
    return Translator.from_checkpoints(checkpoints, [str(r) for r in run_dirs], device)


def load_run_checkpoint(run_dir: str | Path, path: Path) -> Checkpoint:
    """The checkpoint ``path`` that ``run_dir`` resolved to, checked against the run's
    ``vocab.json`` when ``run_dir`` is a run directory (a checkpoint file is read alone)."""
    ckpt = load_checkpoint(path)
    if Path(run_dir).is_dir():
        check_vocab_file(Path(run_dir) / "vocab.json", ckpt)
    return ckpt
