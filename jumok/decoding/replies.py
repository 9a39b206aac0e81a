"""Reply sets: answer each input with the replies of a fixed list the model scores highest.

Gmail's Smart Reply (Kannan et al. 2016) answers from a curated set instead of generating freely,
so every reply is one a person approved. Here every candidate C of the set is scored under the
model for every input S by teacher forcing, ``log P(C | S)`` with eos, normalised by length as
``decode.length_penalty`` ranks beam hypotheses (none, gnmt or average; ``length`` counts eos).
The best ``n_best`` are returned, optionally spread out: with ``diversity`` T, a candidate whose
similarity to one already chosen is >= T is skipped (:func:`similarity`, sentence chrF in [0, 1]).

Efficiency: each batch of inputs is encoded once; the decoder then runs the candidates against
it with the inputs' rows shared (``Encoded`` lets N = B x M decoder rows read B encoder rows), in
passes of at most :data:`LOGIT_BUDGET` logits. Attention is computed only for the replies
returned, in one more teacher-forced pass. Dimension key as :mod:`jumok.model.attention`, plus
``C`` candidates in the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jumok.data.splits import encoder_order, pad
from jumok.data.vocab import BOS_ID, EOS, EOS_ID, PAD_ID
from jumok.decoding.hypothesis import Hypothesis
from jumok.decoding.scoring import forced_pairs
from jumok.errors import ConfigError, DataError

if TYPE_CHECKING:
    from jumok.config import DecodeConfig

# Most logits (rows x steps x vocabulary, float32) one scoring pass makes: 16 M = 64 MB.
LOGIT_BUDGET = 1 << 24


@dataclass
class ReplySet:
    """Candidate replies, tokenized and encoded once (a server keeps one for all requests).

    Attributes:
        texts: the candidates as given.
        tokens: each candidate's target tokens (without eos).
        tgt_in_CT: bos + tokens, right-padded.
        tgt_out_CT: tokens + eos, right-padded.
        unknown: candidate tokens outside the target vocabulary (scored as <unk>).
    """

    texts: list[str]
    tokens: list[list[str]]
    tgt_in_CT: Tensor
    tgt_out_CT: Tensor
    unknown: int

    @classmethod
    def build(cls, translator, texts: Sequence[str], name: str = "reply set"):
        """Tokenize ``texts``; an empty one is refused, naming its line in ``name``."""
        if isinstance(texts, str):
            raise TypeError("the reply set is a list of strings")
        if not texts:
            raise DataError(f"{name}: no candidate replies; expected one per line")
        tokens, rows, unknown = [], [], 0
        for number, text in enumerate(texts, start=1):
            toks = translator.tgt_tok.tokenize(text) if text.strip() else []
            if not toks:
                raise DataError(f"{name}: line {number}: empty reply; expected some text")
            encoded = translator.tgt_vocab.encode(toks)
            tokens.append(toks)
            rows.append(encoded.ids)
            unknown += encoded.unknown
        return cls(
            list(texts),
            tokens,
            pad([[BOS_ID, *ids] for ids in rows]),
            pad([[*ids, EOS_ID] for ids in rows]),
            unknown,
        )

    def __len__(self) -> int:
        return len(self.texts)


def similarity(a: str, b: str) -> float:
    """Sentence chrF of ``a`` against ``b`` (sacrebleu, character 6-grams, beta 2), in [0, 1].

    chrF rather than token Jaccard: short replies that differ by punctuation or one inflection
    ("Sounds good!" / "Sounds good.") share most character n-grams but few whole tokens.
    """
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(a, [b]).score / 100.0


def choose(
    scores_C: Sequence[float], texts: Sequence[str], n_best: int, diversity: float | None
) -> list[int]:
    """The indices of the ``n_best`` highest scores, best first; with ``diversity`` T, a
    candidate whose :func:`similarity` to one already chosen is >= T is passed over (fewer than
    ``n_best`` come back when the set runs out)."""
    order = sorted(range(len(scores_C)), key=lambda c: -scores_C[c])
    if diversity is None:
        return order[:n_best]
    chosen: list[int] = []
    for c in order:
        if all(similarity(texts[c], texts[k]) < diversity for k in chosen):
            chosen.append(c)
            if len(chosen) == n_best:
                break
    return chosen


def normalizer_C(lengths_C: Tensor, kind: str, alpha: float) -> Tensor:
    """Divisors of the candidates' log-probabilities, as beam search's ``length_normalizer``:
    1, ((5 + n) / 6) ** alpha or n, n counting eos."""
    n_C = lengths_C.double()
    if kind == "gnmt":
        return ((5.0 + n_C) / 6.0) ** alpha
    if kind == "average":
        return n_C.clamp(min=1.0)
    return torch.ones_like(n_C)


@torch.no_grad()
def score_table(model, src_BS: Tensor, src_len_B: Tensor, replies: ReplySet, V: int) -> Tensor:
    """log P(candidate | source) for every source row and candidate: logp_BC (float64); V is
    the target vocabulary's size (it sizes the passes).

    The source batch is encoded once; the candidates run against it in passes of M candidates
    x B sources sentence-major (decoder row n reads source n // M) of at most LOGIT_BUDGET logits.
    An ensemble (no shared-encoder decoder) re-encodes the source for each row instead.
    """
    B, device = src_BS.shape[0], src_BS.device
    C = len(replies)
    shared = hasattr(model, "decoder") and hasattr(model, "encode")
    enc = model.encode(src_BS, src_len_B) if shared else None
    logp_BC = torch.empty(B, C, dtype=torch.float64)
    T_all = replies.tgt_in_CT.shape[1]
    M = max(1, LOGIT_BUDGET // max(1, B * T_all * V))  # candidates per pass
    for start in range(0, C, M):
        out_MT = replies.tgt_out_CT[start : start + M]
        T = int((out_MT != PAD_ID).sum(1).max())
        in_MT, out_MT = replies.tgt_in_CT[start : start + M, :T], out_MT[:, :T]
        m = in_MT.shape[0]
        in_NT, out_NT = in_MT.repeat(B, 1).to(device), out_MT.repeat(B, 1).to(device)
        rows_N = torch.arange(B, device=device).repeat_interleave(m)
        if enc is not None:
            logits_NTV, _, _ = model.decoder(in_NT, enc.state.select(rows_N), enc)
        else:
            logits_NTV, _ = model(src_BS[rows_N], src_len_B[rows_N], in_NT)
        logp_NT = logits_NTV.float().log_softmax(-1).gather(-1, out_NT.unsqueeze(-1)).squeeze(-1)
        logp_NT = logp_NT.masked_fill(out_NT == PAD_ID, 0.0)
        logp_BC[:, start : start + m] = logp_NT.sum(1).double().reshape(B, m).cpu()
    return logp_BC


def reply(
    translator,
    texts: Sequence[str],
    replies: ReplySet | Sequence[str],
    opts: DecodeConfig,
    diversity: float | None = None,
    attention: bool = True,
) -> list:
    """Answer each text with the best candidates of ``replies`` (:meth:`Translator.reply`):
    one ``Translation`` per text, its ``hypotheses`` the chosen replies, best first.

    ``translator`` builds the results (its ``_candidate`` and ``_assemble``, as for a search),
    so that this module does not import it back.
    """
    if translator.model_type == "lm":
        raise ConfigError("reply sets need a sequence-to-sequence run; this is a language model")
    if diversity is not None and not 0.0 < diversity <= 1.0:
        raise ConfigError(f"reply diversity: expected a chrF threshold in (0, 1], got {diversity}")
    if not isinstance(replies, ReplySet):
        replies = ReplySet.build(translator, replies)
    src_tokens, encoded = translator._encode(texts)  # noqa: SLF001 - the translator's own reading
    kept = [i for i, tokens in enumerate(src_tokens) if tokens]
    reverse, fill = translator.config.data.reverse_source, translator.config.data.fill_source_to
    n_C = (replies.tgt_out_CT != PAD_ID).sum(1)
    divisor_C = normalizer_C(n_C, opts.length_penalty, opts.alpha)
    # blank texts: translate's own skipped results (it decodes nothing for them)
    results = dict(zip(range(len(texts)), translator.translate([""] * len(texts)), strict=True))
    order = sorted(kept, key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), opts.batch_size):
        chunk = order[start : start + opts.batch_size]
        rows = [encoder_order(encoded[i].ids, reverse, fill) for i in chunk]
        src_BS = pad(rows).to(translator.device)
        src_len_B = torch.tensor([len(r) for r in rows], device=translator.device)
        V = len(translator.tgt_vocab)
        total_BC = score_table(translator.model, src_BS, src_len_B, replies, V)
        normalized_BC = total_BC / divisor_C
        picks = [
            choose(normalized_BC[b].tolist(), replies.texts, opts.n_best, diversity)
            for b in range(len(chunk))
        ]
        answers = _answers(translator.model, src_BS, src_len_B, replies, picks)
        for b, i in enumerate(chunk):
            shown = src_tokens[i] + [EOS] * (len(rows[b]) - len(src_tokens[i]))
            candidates = []
            for c, (logp_T, attention_TS) in zip(picks[b], answers[b], strict=True):
                ids = replies.tgt_out_CT[c, : int(n_C[c])].tolist()
                hyp = Hypothesis(
                    ids, float(total_BC[b, c]), logp_T, attention_TS, True,
                    float(normalized_BC[b, c]),
                )  # fmt: skip
                made = translator._candidate(hyp, shown, reverse, opts, attention)  # noqa: SLF001
                made.text = replies.texts[c]  # as given, not tokenized and detokenized again
                candidates.append(made)
            unknown = encoded[i].unknown
            results[i] = translator._assemble(texts[i], shown, candidates, unknown, opts)  # noqa: SLF001
    return [results[i] for i in range(len(texts))]


def _answers(model, src_BS: Tensor, src_len_B: Tensor, replies: ReplySet, picks):
    """Per input, per chosen candidate: (token log-probabilities, weights_TS or None) of one
    teacher-forced pass over all the chosen pairs."""
    pairs = [(b, c) for b, chosen in enumerate(picks) for c in chosen]
    rows_N = torch.tensor([b for b, _ in pairs], device=src_BS.device)
    cands = [c for _, c in pairs]
    in_NT = replies.tgt_in_CT[cands].to(src_BS.device)
    out_NT = replies.tgt_out_CT[cands].to(src_BS.device)
    logp_NT, weights_NTS = forced_pairs(model, src_BS[rows_N], src_len_B[rows_N], in_NT, out_NT)
    found: list[list[tuple[list[float], Tensor | None]]] = [[] for _ in picks]
    for n, (b, c) in enumerate(pairs):
        T, S = len(replies.tokens[c]) + 1, int(src_len_B[b])
        weights_TS = None if weights_NTS is None else weights_NTS[n, :T, :S].float().cpu()
        found[b].append((logp_NT[n, :T].tolist(), weights_TS))
    return found
