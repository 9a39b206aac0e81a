"""The pruning step of beam search: each sentence's 2K best (hypothesis, token) continuations,
found without building the (N, V) table of every total.

Row layout as in :mod:`jumok.decoding.beam`: row ``b * width + w`` is the w-th row of the b-th
live sentence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Columns per chunk in prune_chunked, and the vocabulary size from which prune uses it.
PRUNE_CHUNK = 64
CHUNKED_PRUNE_FROM = 16 * PRUNE_CHUNK


def prune(
    scores_N: Tensor, logp_NV: Tensor, width: int, K: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 2K best continuations of each sentence.

    Only a row's own 2K best tokens can be among its sentence's 2K best continuations (every
    token of a row gets the same score added), so the search over ``width * V`` totals is done
    as a top-2K per row followed by a top-2K over the ``width * 2K`` survivors, without
    building the (N, V) table of totals. Large vocabularies go through :func:`prune_chunked`,
    which finds the same continuations with less sorting.

    Args:
        width: rows per sentence (1 at the first step, when only the start row exists; K after).

    Returns:
        scores_B2K: their cumulative log-probabilities, best first;
        beam_B2K: which of the sentence's rows each continues;
        token_B2K: the token each appends;
        logp_B2K: that token's log-probability.
    """
    V = logp_NV.shape[1]
    if V >= CHUNKED_PRUNE_FROM:
        return prune_chunked(scores_N, logp_NV, width, K)
    n = min(2 * K, V)
    logp_Nn, token_Nn = logp_NV.topk(n, dim=1)
    total_BWn = (scores_N.unsqueeze(1) + logp_Nn).view(-1, width * n)
    scores_B2K, flat_B2K = total_BWn.topk(min(2 * K, width * n), dim=1)
    beam_B2K = flat_B2K // n
    pick = lambda x_Nn: x_Nn.view(-1, width * n).gather(1, flat_B2K)  # noqa: E731
    return scores_B2K, beam_B2K, pick(token_Nn), pick(logp_Nn)


def prune_chunked(
    scores_N: Tensor, logp_NV: Tensor, width: int, K: int, chunk: int = PRUNE_CHUNK
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`prune` for a large vocabulary: the same 2K continuations (up to the order of
    exact ties), found by sorting chunk maxima instead of whole rows.

    Each row's V log-probabilities are cut into chunks of ``chunk`` columns. The 2K best
    totals of a sentence lie in the 2K chunks (of its ``width`` rows) whose best totals are
    highest: a chunk holding one of them has a best total at least the 2K-th best, and fewer
    than 2K chunks can beat that. So only the chunk maxima (one vectorised pass) and those 2K
    chunks are sorted. PyTorch's top-k visits a row element by element; on the Multi30k
    model's 5,477 words, 320 rows, this took 0.54 ms against 1.38 ms (measured here).
    """
    N, V = logp_NV.shape
    C = chunk
    full, rest = divmod(V, C)  # whole chunks (read as a view, no copy), and the last one's size
    parts = [logp_NV[:, : full * C].view(N, full, C).amax(-1)] if full else []
    if rest:
        parts.append(logp_NV[:, full * C :].amax(-1, keepdim=True))
    best_Nc = torch.cat(parts, dim=1) + scores_N.unsqueeze(1)
    nC = best_Nc.shape[1]
    m = min(2 * K, width * nC)
    chunk_Bm = best_Nc.view(-1, width * nC).topk(m, dim=1).indices
    B = chunk_Bm.shape[0]
    first_B1 = torch.arange(B, device=logp_NV.device).unsqueeze(1) * width
    row_Bm, col_Bm = first_B1 + chunk_Bm // nC, chunk_Bm % nC
    token_BmC = col_Bm.unsqueeze(-1) * C + torch.arange(C, device=logp_NV.device)
    logp_BmC = logp_NV[row_Bm.unsqueeze(-1), token_BmC.clamp(max=V - 1)]
    logp_BmC = logp_BmC.masked_fill(token_BmC >= V, -math.inf)  # past the last chunk's end
    total_BmC = logp_BmC + scores_N[row_Bm].unsqueeze(-1)
    scores_B2K, flat_B2K = total_BmC.view(B, -1).topk(min(2 * K, m * C), dim=1)
    beam_B2K = row_Bm.gather(1, flat_B2K // C) - first_B1
    token_B2K = token_BmC.view(B, -1).gather(1, flat_B2K)
    logp_B2K = logp_BmC.view(B, -1).gather(1, flat_B2K)
    return scores_B2K, beam_B2K, token_B2K, logp_B2K
