"""Teacher-forced scoring: log P(target | source) of given pairs, the body of
:meth:`jumok.decoding.translator.Translator.score` (MMI reranking, reply sets).

Dimension key as :mod:`jumok.model.attention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from jumok.data.splits import encode_pairs, iterate_batches
from jumok.data.vocab import PAD_ID


@torch.no_grad()
def forced_pairs(
    model, src_BS: Tensor, src_len_B: Tensor, tgt_in_BT: Tensor, tgt_out_BT: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Teacher-forced token log-probabilities logp_BT (0 at padding) and attention weights_BTS
    (None without attention) of a batch of pairs."""
    logits_BTV, weights_BTS = model(src_BS, src_len_B, tgt_in_BT)
    logp_BT = logits_BTV.float().log_softmax(-1).gather(-1, tgt_out_BT.unsqueeze(-1)).squeeze(-1)
    return logp_BT.masked_fill(tgt_out_BT == PAD_ID, 0.0), weights_BTS


def score_pairs(
    translator: Any,  # a jumok.decoding.translator.Translator (not imported: it imports this)
    sources: Sequence[str],
    targets: Sequence[str],
    batch_size: int | None = None,
) -> list[float]:
    """log P(target | source) of each pair (eos included); see ``Translator.score``."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources for {len(targets)} targets")
    if not targets:
        return []
    if translator.model_type == "lm":
        sources = ["x"] * len(targets)  # read by no encoder
    # an empty source (an empty reply scored by a reverse model) is read as one unknown token
    sources = [s if s.strip() else "\ufffd" for s in sources]
    data = encode_pairs(
        list(zip(sources, targets, strict=True)),
        translator.src_vocab,
        translator.tgt_vocab,
        translator.config.data.reverse_source,
        tokenize_source=translator.src_tok.tokenize,
        tokenize_target=translator.tgt_tok.tokenize,
        fill_source_to=translator.config.data.fill_source_to,
    )
    totals = [0.0] * len(targets)
    for batch in iterate_batches(data, batch_size or translator.config.decode.batch_size):
        batch = batch.to(translator.device)
        logp_BT, _ = forced_pairs(
            translator.model, batch.src_BS, batch.src_len_B, batch.tgt_in_BT, batch.tgt_out_BT
        )
        for index, value in zip(batch.index_B.tolist(), logp_BT.sum(1).tolist(), strict=True):
            totals[index] = value
    return totals
