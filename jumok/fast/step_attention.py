"""Two tricks of the attention: a training loop that steps one token at a time (input feeding)
computes the gradients of its keys and values once for all steps instead of at every step
(:class:`StepAttention`); and a bf16 decode on a CPU keeps the dot-product attention in float32
(:func:`attention_in_float32`), where oneDNN runs its tiny products faster.

The readable version is the attention module's own ``forward`` (:mod:`jumok.model.attention`),
which the decoder calls when this is off; ``tests/test_attention.py`` checks that both give the
same outputs and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor


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

    For the dot-product scores (dot, scaled_dot, general: ``scores = scale * q . k`` with the
    module's prepared keys; :func:`jumok.model.attention.dot_product_scale` gives the scale, or
    None for a module whose scores are not dot products). Make one per loop (per forward pass),
    with the batch's keys.

    Args:
        keys_BSH: the module's prepared keys (``prepare_keys(hs)``).
        hs_BSH: the values (the encoder states).
        mask_BS: True at real source positions.
        scale: the factor of the dot products.
    """

    def __init__(self, keys_BSH: Tensor, hs_BSH: Tensor, mask_BS: Tensor, scale: float = 1.0):
        self.keys_BSH = keys_BSH.float()
        self.values_BSC = hs_BSH.float()
        self.scale = scale
        # the padding as -inf added to the scores: exactly 0 weight after the softmax
        bias_B1S = torch.zeros(mask_BS.shape, dtype=torch.float32, device=mask_BS.device)
        self.bias_B1S = bias_B1S.masked_fill_(~mask_BS, float("-inf")).unsqueeze(1)
        self.steps: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (q, dscores, w, dcontext)
        self.calls = 0

    def __call__(self, queries_B1H: Tensor) -> tuple[Tensor, Tensor]:
        """(context_B1C, weights_B1S) of one step, as the module's forward would return them."""
        first = self.calls == 0
        self.calls += 1
        with torch.autocast(queries_B1H.device.type, enabled=False):
            return _DeferredAttention.apply(
                queries_B1H.float(), self.keys_BSH, self.values_BSC, self, first
            )


class _DeferredAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_B1H, keys_BSH, values_BSC, owner, first):
        scores_B1S = torch.baddbmm(
            owner.bias_B1S, q_B1H, keys_BSH.transpose(1, 2), alpha=owner.scale
        )
        weights_B1S = scores_B1S.softmax(dim=-1)
        context_B1C = weights_B1S @ values_BSC
        ctx.save_for_backward(q_B1H, weights_B1S)
        ctx.owner, ctx.first = owner, first
        return context_B1C, weights_B1S

    @staticmethod
    def backward(ctx, g_context_B1C, g_weights_B1S):
        q_B1H, w_B1S = ctx.saved_tensors
        owner = ctx.owner
        g_w_B1S = g_context_B1C @ owner.values_BSC.transpose(1, 2)
        if g_weights_B1S is not None:
            g_w_B1S = g_w_B1S + g_weights_B1S
        # softmax backward; padding has w = 0, so its score gradient is 0
        g_s_B1S = w_B1S * (g_w_B1S - (w_B1S * g_w_B1S).sum(dim=-1, keepdim=True))
        if owner.scale != 1.0:
            g_s_B1S = g_s_B1S * owner.scale
        owner.steps.append((q_B1H, g_s_B1S, w_B1S, g_context_B1C))
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


def attention_in_float32(dot_product: bool, hs_BSH: Tensor) -> bool:
    """Whether a decode computes the attention in float32 although bf16 autocast is on
    (``dot_product``: the model's scores are dot products,
    :func:`jumok.model.attention.step_attention`).

    When decoding on a CPU under bf16 autocast, the dot-product scores and the context of one
    query per sentence are tiny batched products, and oneDNN runs them slower in bf16 than in
    float32: inside Multi30k greedy steps (64 sentences, 512-wide states; medians of 236 steps,
    measured here) 220 + 199 us in bf16 against 123 + 115 us in float32. So :meth:`jumok.model.seq2seq.Seq2Seq.encode` keeps
    ``hs`` and the keys in float32 then (converted once per batch, not at every step), and the
    attention runs in float32 on them; the other products stay bf16. Training is unchanged.
    """
    return (
        dot_product
        and hs_BSH.device.type == "cpu"
        and decoding_under_autocast("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def decoding_under_autocast(device: str) -> bool:
    """Whether this is a decode (no gradients) under autocast on ``device``."""
    return not torch.is_grad_enabled() and torch.is_autocast_enabled(device)
