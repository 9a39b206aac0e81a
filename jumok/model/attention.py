"""The attention layer of the lecture: scores, masked softmax, context vector (points 4-7).

Dimension key, used in names across jumok (``weights_BTS`` is a (B, T, S) tensor):

    B batch    S source length    T target length (output steps)
    E embedding size    H hidden size    V vocabulary size    K beam size

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
            hs_BSH: encoder states (lecture point 3's matrix ``hs``), the values summed.
            mask_BS: True at real source tokens.
            keys_BSH: ``prepare_keys(hs_BSH)`` computed once per sentence; computed here if None.

        Returns:
            context_BTH: the weighted sums of ``hs`` (point 5's context vector).
            weights_BTS: the attention weights.
        """
        # Shared by every score: the subclasses differ only in prepare_keys and scores.
        keys_BSH = self.prepare_keys(hs_BSH) if keys_BSH is None else keys_BSH
        check_shapes(queries_BTH, keys_BSH, mask_BS)
        device = queries_BTH.device.type
        precision = contextlib.nullcontext()
        if keys_BSH.dtype == hs_BSH.dtype == torch.float32 and _decoding_under_autocast(device):
            # float32 keys and values (Seq2Seq.encode, see decode_in_float32): stay in float32
            precision = torch.autocast(device, enabled=False)
            queries_BTH = queries_BTH.float()
        with precision:
            scores_BTS = self.scores(queries_BTH, keys_BSH)
            weights_BTS = masked_softmax(scores_BTS, mask_BS)
            context_BTH = weights_BTS @ hs_BSH
        return context_BTH, weights_BTS


def decode_in_float32(module: nn.Module | None, hs_BSH: Tensor) -> bool:
    """Whether a decode computes ``module``'s attention in float32 although bf16 autocast is on.

    When decoding on a CPU under bf16 autocast, the dot-product scores and the context of one
    query per sentence are tiny batched products, and oneDNN runs them slower in bf16 than in
    float32: inside Multi30k greedy steps (64 sentences, 512-wide states; medians of 236 steps,
    measured here) 220 + 199 us in bf16 against 123 + 115 us in float32. So :meth:`jumok.model.seq2seq.Seq2Seq.encode` keeps
    ``hs`` and the keys in float32 then (converted once per batch, not at every step), and the
    attention runs in float32 on them; the other products stay bf16. Training is unchanged.
    """
    return (
        step_attention(module)
        and hs_BSH.device.type == "cpu"
        and _decoding_under_autocast("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def _decoding_under_autocast(device: str) -> bool:
    return not torch.is_grad_enabled() and torch.is_autocast_enabled(device)


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


class StepAttention:
    """One attention applied at every step of a training loop (input feeding), the gradients of
    its keys and values computed once for all steps.

    At each step autograd would compute a (B, S, H) gradient for the keys and another for the
    values, and add each to the sum so far: four batched products and two additions of the whole
    encoder output per step. Here each step's backward keeps its (query, score gradient) and
    (weights, context gradient) pairs, and the backward of the first step, which runs last,
    computes ``sum_t`` of them as one batched product each (as :class:`jumok.fast.feeding.StepLinear`
    does for weights). The arithmetic is float32 whatever the autocast: these products are tiny
    (one query per sentence), and were no faster in bf16 here.

    For the dot-product scores (dot, scaled_dot, general); :func:`step_attention` says whether a
    module has one. Make one per loop (per forward pass), with the batch's keys.
    """

    def __init__(self, module: nn.Module, hs_BSH: Tensor, mask_BS: Tensor, keys_BSH: Tensor | None):
        keys_BSH = module.prepare_keys(hs_BSH) if keys_BSH is None else keys_BSH
        self.keys_BSH = keys_BSH.float()
        self.values_BSH = hs_BSH.float()
        self.scale = (
            1.0 / math.sqrt(keys_BSH.shape[-1]) if isinstance(module, ScaledDotAttention) else 1.0
        )
        # the padding as -inf added to the scores: exactly 0 weight after the softmax
        bias_B1S = torch.zeros(mask_BS.shape, dtype=torch.float32, device=mask_BS.device)
        self.bias_B1S = bias_B1S.masked_fill_(~mask_BS, float("-inf")).unsqueeze(1)
        self.steps: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (q, dscores, w, dcontext)
        self.calls = 0

    def __call__(self, queries_B1H: Tensor) -> tuple[Tensor, Tensor]:
        """(context_B1H, weights_B1S) of one step, as the module's forward would return them."""
        first = self.calls == 0
        self.calls += 1
        with torch.autocast(queries_B1H.device.type, enabled=False):
            return _DeferredAttention.apply(
                queries_B1H.float(), self.keys_BSH, self.values_BSH, self, first
            )


def step_attention(module: nn.Module | None) -> bool:
    """Whether :class:`StepAttention` computes ``module``'s attention (scores are dot products)."""
    return isinstance(module, (DotAttention, ScaledDotAttention, GeneralAttention))


class _DeferredAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_B1H, keys_BSH, values_BSH, owner, first):
        scores_B1S = torch.baddbmm(
            owner.bias_B1S, q_B1H, keys_BSH.transpose(1, 2), alpha=owner.scale
        )
        weights_B1S = scores_B1S.softmax(dim=-1)
        context_B1H = weights_B1S @ values_BSH
        ctx.save_for_backward(q_B1H, weights_B1S)
        ctx.owner, ctx.first = owner, first
        return context_B1H, weights_B1S

    @staticmethod
    def backward(ctx, g_context_B1H, g_weights_B1S):
        q_B1H, w_B1S = ctx.saved_tensors
        owner = ctx.owner
        g_w_B1S = g_context_B1H @ owner.values_BSH.transpose(1, 2)
        if g_weights_B1S is not None:
            g_w_B1S = g_w_B1S + g_weights_B1S
        # softmax backward; padding has w = 0, so its score gradient is 0
        g_s_B1S = w_B1S * (g_w_B1S - (w_B1S * g_w_B1S).sum(dim=-1, keepdim=True))
        if owner.scale != 1.0:
            g_s_B1S = g_s_B1S * owner.scale
        owner.steps.append((q_B1H, g_s_B1S, w_B1S, g_context_B1H))
        grad_keys = grad_values = None
        if ctx.first:  # the last backward of the loop: every step's pairs are in
            q_BTH, g_s_BTS, w_BTS, g_c_BTH = (
                torch.cat(parts, dim=1) for parts in zip(*owner.steps, strict=True)
            )
            owner.steps.clear()
            grad_keys = g_s_BTS.transpose(1, 2) @ q_BTH
            grad_values = w_BTS.transpose(1, 2) @ g_c_BTH
        grad_q = g_s_B1S @ owner.keys_BSH
        return grad_q, grad_keys, grad_values, None, None
