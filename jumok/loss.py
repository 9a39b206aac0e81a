"""The training loss: the output layer and the cross-entropy together, a slice of rows at a time.

The plain way, ``cross_entropy(output(features).float(), targets)``, keeps several (N, V) tensors
alive at once: the logits, their float32 copy, the log-softmax, and in the backward pass the
gradient of each (N target tokens, V the target vocabulary). On the Multi30k "Task B" model a
batch of 64 long sentences gives N ~ 3,000 rows of V ~ 8,000: ~100 MB per float32 copy, and about
ten passes of memory traffic over them per update.

:func:`output_cross_entropy` computes the same loss and gradients a slice of rows at a time
(``SLICE_LOGITS`` logits per slice), padding rows (``ignore_index``) left out. For each slice,
in the forward pass, it computes the logits, their softmax p (float32, one pass), the loss
``-log p_target``, and at once the gradient of the loss with respect to the logits, ``p - q``
(q: the target distribution, one-hot or label-smoothed), and from it the gradients of the
features, the weight and the bias. Only those gradients are kept; the backward pass scales them
by the incoming gradient (the loss is a sum, so that is one number). No (N, V) tensor ever
exists. Under autocast the products run in its dtype (bf16), as ``nn.Linear``'s would. A row
whose p_target is below ``1e-30`` (float32 would lose it) takes ``lse - z_target`` instead.

Label smoothing is PyTorch's: q = (1 - eps) one_hot + eps / V, so a row's loss is
``(1 - eps) * (lse - z_target) + eps * (lse - mean(z))`` (z: the row's logits, lse: their
log-sum-exp, here ``z_target - log p_target``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Most logits per slice (rows x V): 4 Mi float32 entries, 16 MB. On the Task B output layer
# (512 -> 7,794, bf16) slices of 1-2 Mi made the loss slower than the plain way at ~1,100 rows
# (thinner weight-gradient products); 4 Mi was no slower there and ~1.35x faster than the plain
# way at 3,000 rows, as was 8 Mi (measured here). Below 32 MB a slice's buffers are reused by
# glibc rather than mapped afresh, and a softmax over 34 MB took 17x the time of one over 12 MB.
SLICE_LOGITS = 2**22


def output_cross_entropy(
    features_NF: Tensor,
    output: nn.Linear,
    target_N: Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = 0,
) -> Tensor:
    """``cross_entropy(output(features_NF), target_N, reduction="sum")``, without the (N, V) logits.

    Args:
        features_NF: what the output layer reads, one row per target token.
        output: the output layer (V, F); its weight may be tied to an embedding.
        target_N: the target token of each row; ``ignore_index`` rows add nothing.
        label_smoothing: eps, as in ``torch.nn.functional.cross_entropy``.

    Returns:
        The summed loss, a float32 scalar; differentiable in the features, weight and bias.
    """
    device = features_NF.device.type
    dtype = (
        torch.get_autocast_dtype(device)
        if torch.is_autocast_enabled(device)
        else output.weight.dtype
    )
    bias = output.bias
    tensors = (features_NF, output.weight) + (() if bias is None else (bias,))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    with torch.autocast(device, enabled=False):
        if not needs_grad:
            return _loss(
                features_NF,
                output.weight,
                bias,
                target_N,
                label_smoothing,
                ignore_index,
                dtype,
                grads=False,
            )[0]
        return _OutputCrossEntropy.apply(
            features_NF, output.weight, bias, target_N, label_smoothing, ignore_index, dtype
        )


class _OutputCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features_NF, weight_VF, bias_V, target_N, smoothing, ignore_index, dtype):
        loss, grads = _loss(
            features_NF, weight_VF, bias_V, target_N, smoothing, ignore_index, dtype, grads=True
        )
        ctx.grads = grads
        ctx.dtypes = (weight_VF.dtype, None if bias_V is None else bias_V.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x_NF, grad_w_VF, grad_b_V = ctx.grads
        ctx.grads = None
        w_dtype, b_dtype = ctx.dtypes
        scale = grad_loss.float()
        return (
            grad_x_NF * scale.to(grad_x_NF.dtype),
            grad_w_VF.mul_(scale).to(w_dtype),
            None if grad_b_V is None else grad_b_V.mul_(scale).to(b_dtype),
            None,
            None,
            None,
            None,
        )


def _loss(
    x_NF: Tensor,
    weight_VF: Tensor,
    bias_V: Tensor | None,
    target_N: Tensor,
    eps: float,
    ignore_index: int,
    dtype: torch.dtype,
    grads: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None] | None]:
    """The summed loss and, with ``grads``, its gradients in x, the weight and the bias."""
    V = weight_VF.shape[0]
    w_VF = weight_VF.to(dtype)
    b_V = None if bias_V is None else bias_V.to(dtype)
    real_R = (target_N != ignore_index).nonzero().squeeze(1)  # padding rows are left out
    xs_RF, target_R = x_NF.index_select(0, real_R), target_N.index_select(0, real_R)
    loss = torch.zeros((), dtype=torch.float32, device=x_NF.device)
    if grads:
        grad_x_RF = torch.empty_like(xs_RF)
        grad_w_VF = None  # the first slice's product, then the others added
        grad_b_V = None if bias_V is None else torch.zeros_like(bias_V, dtype=torch.float32)
    rows = max(1, SLICE_LOGITS // max(V, 1))
    for start in range(0, xs_RF.shape[0], rows):
        x_CF = xs_RF[start : start + rows].to(dtype)
        t_C1 = target_R[start : start + rows].unsqueeze(1)
        z_CV = x_CF @ w_VF.t() if b_V is None else torch.addmm(b_V, x_CF, w_VF.t())
        p_CV = torch.softmax(z_CV, dim=1, dtype=torch.float32)  # one pass, read in z's dtype
        loss_C = _nll(p_CV, z_CV, t_C1)
        if eps:  # lse - mean(z), with lse = z_target + nll
            lse_C = z_CV.gather(1, t_C1).squeeze(1).float() + loss_C
            loss_C = (1 - eps) * loss_C + eps * (lse_C - z_CV.mean(dim=1, dtype=torch.float32))
        loss = loss + loss_C.sum()
        if not grads:
            continue
        # d loss / d z = softmax(z) - q: p_CV becomes the gradient
        if eps:
            p_CV.sub_(eps / V)
        p_CV.scatter_add_(1, t_C1, p_CV.new_full(t_C1.shape, eps - 1))
        if grad_b_V is not None:
            grad_b_V += p_CV.sum(dim=0)
        g_CV = p_CV.to(dtype)
        grad_x_RF[start : start + rows] = g_CV @ w_VF
        if grad_w_VF is None:
            grad_w_VF = (g_CV.t() @ x_CF).float()
        else:
            grad_w_VF += g_CV.t() @ x_CF
    if not grads:
        return loss, None
    if grad_w_VF is None:  # no real rows
        grad_w_VF = torch.zeros_like(weight_VF, dtype=torch.float32)
    grad_x_NF = torch.zeros_like(x_NF).index_copy_(0, real_R, grad_x_RF)
    return loss, (grad_x_NF, grad_w_VF, grad_b_V)


# Below this probability, -log p loses precision in float32 (and 0 would give inf): such rows take
# the log-sum-exp of their logits instead.
_SMALLEST_P = 1e-30


def _nll(p_CV: Tensor, z_CV: Tensor, t_C1: Tensor) -> Tensor:
    """-log p(target) per row, from the softmax (exact for tiny p too, from the logits)."""
    p_C = p_CV.gather(1, t_C1).squeeze(1)
    nll_C = -p_C.log()
    tiny_C = p_C < _SMALLEST_P
    if bool(tiny_C.any()):
        z_KV = z_CV[tiny_C].float()
        lse_K = torch.logsumexp(z_KV, dim=1)
        nll_C[tiny_C] = lse_K - z_KV.gather(1, t_C1[tiny_C]).squeeze(1)
    return nll_C
