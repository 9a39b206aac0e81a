"""The attention layer of the lecture: scores, masked softmax, context vector (points 4-7).

Dimension key, used in names across jumok (``weights_BTS`` is a (B, T, S) tensor). One meaning
per letter; a new dimension gets a new letter here:

    B batch (sentences)    S source length    T target length (output steps)
    E embedding size    H hidden size    V vocabulary size    K beam size
    C context size: the width of a row of the encoder's states ``hs`` and of the context
      vector (H in the lecture's model; 2H with a bidirectional encoder)
    L layers    G gates of an LSTM layer (4H)    F features (what the output layer reads)
    I input width of a layer (what a linear layer or an RNN reads, e.g. ``[x; feed; h]``)
    O output width of a linear layer (whose weight is ``weight_OI``)
    N rows: a batch flattened or a whole split (B x K hypotheses, B x T tokens, examples)
    M decoder rows per encoder row (hypotheses sharing their sentence's states; N = B x M)
    Q queries per sentence (M x T)    J sentences joining a running beam search
    X every row of every step of a decode    D any width (code that works for every width)
    R rows of a slice (the loss computes R rows at a time)
    A actual rows: the rows of N whose target is not padding
    U rows whose target probability underflows float32

A digit is that size (``weights_B1S``: one step); a lowercase letter is a count the code names
(``x_BkF``: k steps). ``hs_BSH`` and ``summary_BH`` keep the lecture's name for public arguments
and attributes; their rows are C wide.

For each output step the decoder's LSTM output ``h`` is compared with every row of the encoder's
stacked states ``hs`` by a dot product (point 6), the scores are normalised by a softmax over
source positions, with padding masked to exactly 0 (point 5), and the context vector is the
weighted sum of the rows of ``hs``. Every step of a sentence is handled at once: with T queries
the whole thing is two batched matrix products.

Worked example (2 output steps, 3 source positions, H = 1): ``hs = [[1], [2], [0]]`` with the
last position padding, queries ``[[0], [1]]``. Scores are ``[[0, 0, -inf], [1, 2, -inf]]``;
softmax gives weights ``[[0.5, 0.5, 0], [0.269, 0.731, 0]]``; contexts are ``[1.5, 1.731]``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from jumok.fast.step_attention import decoding_under_autocast


def masked_softmax(scores_BTS: Tensor, mask_BS: Tensor) -> Tensor:
    """Softmax over source positions with padding at exactly 0.

    Args:
        scores_BTS: raw scores.
        mask_BS: True at real source tokens, False at padding; every row has a True.

    Returns:
        weights_BTS: non-negative, each (b, t) row sums to 1, exactly 0 where ``mask_BS`` is False.
    """
    scores_BTS = scores_BTS.masked_fill(~mask_BS.unsqueeze(1), float("-inf"))
    return scores_BTS.softmax(dim=-1)


def dot_scores(queries_BTH: Tensor, keys_BSH: Tensor) -> Tensor:
    """The lecture's score: dot product between each query and each row of ``hs`` (point 6).

    Returns:
        scores_BTS with ``scores[b, t, s] = queries[b, t] . keys[b, s]``.
    """
    return queries_BTH @ keys_BSH.transpose(1, 2)


class DotAttention(nn.Module):
    """Dot-product attention (Luong et al. 2015, "dot"); the lecture's layer; no parameters.

    Every attention module has the same interface: :meth:`prepare_keys` turns ``hs`` into keys
    once per sentence, and :meth:`forward` scores T queries against them. For ``dot`` the keys
    are ``hs`` itself. Modules are stateless: weights are returned, nothing is stored.
    """

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor:
        return hs_BSH

    def scores(self, queries_BTH: Tensor, keys_BSH: Tensor) -> Tensor:
        return dot_scores(queries_BTH, keys_BSH)

    def forward(
        self, queries_BTH: Tensor, hs_BSH: Tensor, mask_BS: Tensor, keys_BSH: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend from T decoder states to the S encoder states.

        Args:
            queries_BTH: decoder LSTM outputs, one row per output step.
            hs_BSH: encoder states (lecture point 3's matrix ``hs``), the values summed; C wide.
            mask_BS: True at real source tokens.
            keys_BSH: ``prepare_keys(hs_BSH)`` computed once per sentence; computed here if None.

        Returns:
            context_BTC: the weighted sums of ``hs`` (point 5's context vector).
            weights_BTS: the attention weights.
        """
        # Shared by every score: the subclasses differ only in prepare_keys and scores.
        keys_BSH = self.prepare_keys(hs_BSH) if keys_BSH is None else keys_BSH
        check_shapes(queries_BTH, keys_BSH, mask_BS)
        device = queries_BTH.device.type
        precision = contextlib.nullcontext()
        if keys_BSH.dtype == hs_BSH.dtype == torch.float32 and decoding_under_autocast(device):
            # float32 keys and values (jumok.fast.step_attention.attention_in_float32): stay in float32
            precision = torch.autocast(device, enabled=False)
            queries_BTH = queries_BTH.float()
        with precision:
            scores_BTS = self.scores(queries_BTH, keys_BSH)
            weights_BTS = masked_softmax(scores_BTS, mask_BS)
            context_BTC = weights_BTS @ hs_BSH
        return context_BTC, weights_BTS


def check_shapes(queries_BTH: Tensor, keys_BSH: Tensor, mask_BS: Tensor) -> None:
    """Cheap shape checks with expected and actual shapes in the message."""
    B, S, H = keys_BSH.shape
    if queries_BTH.dim() != 3 or queries_BTH.shape[0] != B or queries_BTH.shape[2] != H:
        raise ValueError(f"queries: expected ({B}, T, {H}), got {tuple(queries_BTH.shape)}")
    if tuple(mask_BS.shape) != (B, S):
        raise ValueError(f"mask: expected ({B}, {S}), got {tuple(mask_BS.shape)}")


class ScaledDotAttention(nn.Module):
    """Dot product divided by sqrt(H) (Vaswani et al. 2017); no parameters. Not in the lecture.

    The scaling keeps the softmax from saturating when H is large; with H = 1 it is ``dot``.
    """

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor:
        return hs_BSH

    def scores(self, queries_BTH: Tensor, keys_BSH: Tensor) -> Tensor:
        return dot_scores(queries_BTH, keys_BSH) / math.sqrt(queries_BTH.shape[-1])

    forward = DotAttention.forward


class GeneralAttention(nn.Module):
    """Bilinear score ``q . (W hs_s)`` (Luong et al. 2015, "general", eq. 8: h_t^T W_a h_s).

    ``W`` is applied to ``hs`` once per sentence (:meth:`prepare_keys`), not at every step. With
    ``W`` the identity this is exactly :class:`DotAttention`. ``W`` maps the encoder's state size
    to the decoder's, so the two may differ (e.g. a bidirectional encoder).
    """

    def __init__(self, query_size: int, key_size: int | None = None):
        super().__init__()
        self.key_proj = nn.Linear(key_size or query_size, query_size, bias=False)

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor:
        return self.key_proj(hs_BSH)

    def scores(self, queries_BTH: Tensor, keys_BSH: Tensor) -> Tensor:
        return dot_scores(queries_BTH, keys_BSH)

    forward = DotAttention.forward


class AdditiveAttention(nn.Module):
    """MLP score ``v . tanh(W_k hs_s + W_q q)`` (Bahdanau et al. 2015, eq. 6's ``v_a^T tanh(W_a s + U_a h)``).

    The key projection is computed once per sentence (:meth:`prepare_keys`). Scoring builds a
    (B, T, S, H) tensor, so this variant costs more memory than the others on long inputs. The
    hidden size of the MLP is the decoder's hidden size.
    """

    def __init__(self, query_size: int, key_size: int | None = None):
        super().__init__()
        self.key_proj = nn.Linear(key_size or query_size, query_size, bias=False)
        self.query_proj = nn.Linear(query_size, query_size, bias=True)
        self.energy = nn.Linear(query_size, 1, bias=False)

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor:
        return self.key_proj(hs_BSH)

    def scores(self, queries_BTH: Tensor, keys_BSH: Tensor) -> Tensor:
        hidden_BTSH = (keys_BSH.unsqueeze(1) + self.query_proj(queries_BTH).unsqueeze(2)).tanh()
        return self.energy(hidden_BTSH).squeeze(-1)

    forward = DotAttention.forward


def build_attention(kind: str, query_size: int, key_size: int | None = None) -> nn.Module:
    """The attention module named by ``model.attention`` (``none`` has no module).

    Args:
        kind: dot, scaled_dot, general or additive.
        query_size: the decoder's hidden size.
        key_size: the size of each row of hs (default: query_size).
    """
    if kind == "dot":
        return DotAttention()
    if kind == "scaled_dot":
        return ScaledDotAttention()
    if kind == "general":
        return GeneralAttention(query_size, key_size)
    if kind == "additive":
        return AdditiveAttention(query_size, key_size)
    raise ValueError(f"unknown attention {kind!r}; expected dot, scaled_dot, general or additive")


def step_attention(module: nn.Module | None) -> bool:
    """Whether ``module``'s scores are dot products of the query with its prepared keys, so that
    :class:`jumok.fast.step_attention.StepAttention` can compute its attention."""
    return isinstance(module, (DotAttention, ScaledDotAttention, GeneralAttention))


def dot_product_scale(module: nn.Module, keys_BSH: Tensor) -> float:
    """The factor of a dot-product module's scores (1, or 1 / sqrt(d) for scaled_dot)."""
    return 1.0 / math.sqrt(keys_BSH.shape[-1]) if isinstance(module, ScaledDotAttention) else 1.0
