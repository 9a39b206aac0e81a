"""The training loss: the output layer and the cross-entropy together, a slice of rows at a time.

The plain way, ``cross_entropy(output(features).float(), targets)``, keeps several (N, V) tensors
alive at once: the logits, their float32 copy, the log-softmax, and in the backward pass the
gradient of each (N target tokens, V the target vocabulary). On the Multi30k model in the peers' settings a
batch of 64 long sentences gives N ~ 3,000 rows of V ~ 8,000: ~100 MB per float32 copy, and about
ten passes of memory traffic over them per update.

:func:`output_cross_entropy` computes the same loss and gradients a slice of rows at a time
(``SLICE_LOGITS`` logits per slice, ``GRAD_SLICE_LOGITS`` with gradients), padding rows
(``ignore_index``) left out. For each slice, in the forward pass, it computes the logits, their
softmax p (float32, one pass), the loss ``-log p_target``, and at once the gradient of the loss
with respect to the logits, ``p - q`` (q: the target distribution, one-hot or label-smoothed),
and from it the gradients of the features, the weight and the bias. Only those gradients are
kept; the backward pass scales them by the incoming gradient (the loss is a sum, so that is one
number). No tensor larger than a slice's logits exists. Under autocast the products run in its
dtype (bf16), as ``nn.Linear``'s would. A row whose p_target is below ``1e-30`` (float32 would
lose it) takes ``lse - z_target`` instead.

In training with input feeding the decoder makes its features one step at a time, and
:class:`StepwiseCrossEntropy` computes the same loss a slice of steps at a time, as soon as the
loop has made them. Either way, when gradients are wanted the slices hold up to
``GRAD_SLICE_LOGITS`` logits and write into buffers kept from slice to slice and from update to
update (:class:`_Workspace`), not fresh tensors that the system would fault in again page by
page.

Label smoothing is PyTorch's: q = (1 - eps) one_hot + eps / V, so a row's loss is
``(1 - eps) * (lse - z_target) + eps * (lse - mean(z))`` (z: the row's logits, lse: their
log-sum-exp, here ``z_target - log p_target``).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor, nn

# Most logits per slice (rows x V): 4 Mi float32 entries, 16 MB. On the Multi30k output layer
# (512 -> 7,794, bf16) slices of 1-2 Mi made the loss slower than the plain way at ~1,100 rows
# (thinner weight-gradient products); 4 Mi was no slower there and ~1.35x faster than the plain
# way at 3,000 rows, as was 8 Mi (measured here). Below 32 MB a slice's buffers are reused by
# glibc rather than mapped afresh, and a softmax over 34 MB took 17x the time of one over 12 MB.
SLICE_LOGITS = 2**22
# Most logits per slice when gradients are computed (training), whose buffers are kept
# (:class:`_Workspace`) and so never mapped afresh: 16 Mi, most Multi30k batches in one slice.
# In-process A/B of Multi30k training updates (bf16, kept buffers): 8 Mi took 0.985 of the time of
# 4 Mi, and 16 Mi 0.986 of 8 Mi's (fewer float32 additions of weight-gradient products, fewer
# and larger products). The buffers then hold ~140 MB on that model; they are freed before each
# validation, whose own slices keep SLICE_LOGITS (the validation is a run's memory peak).
GRAD_SLICE_LOGITS = 2**24


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
    dtype = _compute_dtype(device, output)
    bias = output.bias
    tensors = (features_NF, output.weight) + (() if bias is None else (bias,))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    with torch.autocast(device, enabled=False), torch.no_grad():
        loss, grads = _loss(
            features_NF,
            output.weight,
            bias,
            target_N,
            label_smoothing,
            ignore_index,
            dtype,
            grads=needs_grad,
        )
    if not needs_grad:
        return loss
    return _GivenGradients.apply(features_NF, output.weight, bias, loss, grads)


class StepwiseCrossEntropy:
    """:func:`output_cross_entropy` over a decoder loop's (B, T) targets, computed as the loop
    runs: each step's features are handed to :meth:`add` as soon as the step has made them, and
    every ``GRAD_SLICE_LOGITS // (B V)`` steps (33 on the Multi30k model) the output layer and the
    loss of those steps are computed, with their gradients, as one slice; :meth:`total` computes
    the rest and gives the summed loss, differentiable as :func:`output_cross_entropy`'s. (Most
    Multi30k batches are shorter than 33 steps: one slice, at the end of the loop.)

    The same numbers, computed in another order: the slices follow the steps (all B rows of
    some steps) rather than the rows of the (B, T) batch, and no (B T, F) copy of the real rows
    is gathered first or its gradient scattered back at the end. Multi30k training updates took
    0.97 of the time of :func:`output_cross_entropy` after the loop, with slices of 8 steps
    (in-process A/B, benchmarks/HISTORY.md); the same step-wise slices computed after the loop
    instead of during it gave nearly the same gain.
    """

    def __init__(
        self,
        output: nn.Linear,
        target_BT: Tensor,
        label_smoothing: float = 0.0,
        ignore_index: int = 0,
    ):
        self.output, self.target_BT = output, target_BT
        self.eps, self.ignore_index = label_smoothing, ignore_index
        self.dtype = _compute_dtype(target_BT.device.type, output)
        # cast once for all slices, into a kept buffer (see _weight_copy)
        self.weight_VF = _weight_copy(output.weight.detach(), self.dtype)
        bias = output.bias
        self.bias_V = None if bias is None else bias.detach().to(self.dtype)
        B, V = target_BT.shape[0], self.weight_VF.shape[0]
        self.slice_steps = max(1, GRAD_SLICE_LOGITS // max(B * V, 1))
        self.waiting: list[Tensor] = []  # features (B, 1, F) of steps not yet in a slice
        self.done = 0  # steps computed
        self.loss = torch.zeros((), dtype=torch.float32, device=target_BT.device)
        self.grad_x: list[Tensor] = []  # (B, k, F) per slice
        self.grad_w_VF: Tensor | None = None  # float32, summed over the slices
        self.grad_b_V: Tensor | None = None

    def add(self, features_B1F: Tensor) -> None:
        """The features of the next step."""
        self.waiting.append(features_B1F.detach())
        if len(self.waiting) == self.slice_steps:
            self._compute()

    def _compute(self) -> None:
        k = len(self.waiting)
        x_BkF = torch.cat(self.waiting, dim=1)
        self.waiting = []
        B, _, F = x_BkF.shape
        target_Bk = self.target_BT[:, self.done : self.done + k]
        self.done += k
        device = x_BkF.device.type
        with torch.autocast(device, enabled=False), torch.no_grad():
            loss, (grad_x_NF, self.grad_w_VF, self.grad_b_V) = _loss(
                x_BkF.reshape(-1, F),
                self.weight_VF,
                self.bias_V,
                target_Bk.reshape(-1),
                self.eps,
                self.ignore_index,
                self.dtype,
                grads=True,
                grad_w_VF=self.grad_w_VF,
                grad_b_V=self.grad_b_V,
            )
            self.loss += loss
        self.grad_x.append(grad_x_NF.reshape(B, k, F))

    def total(self, features_BTF: Tensor) -> Tensor:
        """The summed loss of all steps; ``features_BTF``: the features :meth:`add` was given,
        as one (B, T, F) tensor (what its gradient flows to)."""
        if self.waiting:
            self._compute()
        T = self.target_BT.shape[1]
        if self.done != T or features_BTF.shape[1] != T:
            raise ValueError(
                f"stepwise loss: {T} target steps, but features of {self.done} steps were added "
                f"and the given features have {features_BTF.shape[1]}"
            )
        grads = (torch.cat(self.grad_x, dim=1), self.grad_w_VF, self.grad_b_V)
        output = self.output
        return _GivenGradients.apply(features_BTF, output.weight, output.bias, self.loss, grads)


def _compute_dtype(device: str, output: nn.Linear) -> torch.dtype:
    """The dtype of the output layer's products: autocast's, as ``nn.Linear``'s would be."""
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return output.weight.dtype


class _GivenGradients(torch.autograd.Function):
    """The loss, with the gradients of the features, weight and bias computed alongside it: the
    backward pass only scales them by the incoming gradient (the loss is a sum: one number)."""

    @staticmethod
    def forward(ctx, features_NF, weight_VF, bias_V, loss, grads):
        ctx.grads = grads
        ctx.dtypes = (weight_VF.dtype, None if bias_V is None else bias_V.dtype)
        return loss.clone()

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
        )


def _loss(  # noqa: C901, PLR0913 (pyproject.toml: lint exceptions)
    x_NF: Tensor,
    weight_VF: Tensor,
    bias_V: Tensor | None,
    target_N: Tensor,
    eps: float,
    ignore_index: int,
    dtype: torch.dtype,
    grads: bool,
    grad_w_VF: Tensor | None = None,
    grad_b_V: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None] | None]:
    """The summed loss and, with ``grads``, its gradients in x, the weight and the bias (float32;
    added into ``grad_w_VF`` and ``grad_b_V`` when those are given)."""
    V = weight_VF.shape[0]
    w_VF = weight_VF.to(dtype)
    b_V = None if bias_V is None else bias_V.to(dtype)
    real_A = (target_N != ignore_index).nonzero().squeeze(1)  # padding rows are left out
    xs_AF, target_A = x_NF.index_select(0, real_A), target_N.index_select(0, real_A)
    loss = torch.zeros((), dtype=torch.float32, device=x_NF.device)
    rows = max(1, (GRAD_SLICE_LOGITS if grads else SLICE_LOGITS) // max(V, 1))
    space = None
    if grads:
        grad_x_AF = torch.empty_like(xs_AF, dtype=dtype)
        # grad_w_VF: None until the first slice's product, then the others added
        if grad_b_V is None and bias_V is not None:
            grad_b_V = torch.zeros_like(bias_V, dtype=torch.float32)
        space = _workspace(min(rows, xs_AF.shape[0]), w_VF)
    for start in range(0, xs_AF.shape[0], rows):
        x_RF = xs_AF[start : start + rows].to(dtype)
        t_R1 = target_A[start : start + rows].unsqueeze(1)
        R = x_RF.shape[0]
        if space is None:
            z_RV = x_RF @ w_VF.t() if b_V is None else torch.addmm(b_V, x_RF, w_VF.t())
            p_RV = torch.softmax(z_RV, dim=1, dtype=torch.float32)  # one pass, read in z's dtype
        else:  # the same, in the workspace's buffers
            z_RV = space.z_RV[:R]
            if b_V is None:
                torch.mm(x_RF, w_VF.t(), out=z_RV)
            else:
                torch.addmm(b_V, x_RF, w_VF.t(), out=z_RV)
            p_RV = space.p_RV[:R].copy_(z_RV)
            torch.ops.aten._softmax.out(p_RV, 1, False, out=p_RV)  # in place, row by row
        loss_R = _nll(p_RV, z_RV, t_R1)
        if eps:  # lse - mean(z), with lse = z_target + nll
            lse_R = z_RV.gather(1, t_R1).squeeze(1).float() + loss_R
            loss_R = (1 - eps) * loss_R + eps * (lse_R - z_RV.mean(dim=1, dtype=torch.float32))
        loss = loss + loss_R.sum()
        if not grads:
            continue
        # d loss / d z = softmax(z) - q: p_RV becomes the gradient
        if eps:
            p_RV.sub_(eps / V)
        p_RV.scatter_add_(1, t_R1, p_RV.new_full(t_R1.shape, eps - 1))
        if grad_b_V is not None:
            grad_b_V += p_RV.sum(dim=0)
        g_RV = space.g_RV[:R].copy_(p_RV)
        torch.mm(g_RV, w_VF, out=grad_x_AF[start : start + R])
        product_VF = torch.mm(g_RV.t(), x_RF, out=space.product_VF)
        if grad_w_VF is None:  # a new tensor: it becomes the weight's gradient
            grad_w_VF = product_VF.to(torch.float32, copy=True)
        else:
            grad_w_VF += product_VF
    if not grads:
        return loss, None
    if grad_w_VF is None:  # no real rows
        grad_w_VF = torch.zeros_like(weight_VF, dtype=torch.float32)
    grad_x_NF = torch.zeros_like(x_NF).index_copy_(0, real_A, grad_x_AF.to(x_NF.dtype))
    return loss, (grad_x_NF, grad_w_VF, grad_b_V)


class _Workspace:
    """The buffers one slice of :func:`_loss` writes, kept from slice to slice and from update
    to update: the logits z and their gradient g (R x V, in the products' dtype), the softmax p
    (R x V, float32) and the weight-gradient product (V x F), R the most rows a slice has had.
    Fresh tensors of these sizes (8-16 MB each on the Multi30k model) were handed back to the
    system when freed and faulted in again page by page when next allocated: three slices of 512
    rows took 134 against 112 ms with the buffers kept (measured here). Kept, the slices can also
    be larger (``GRAD_SLICE_LOGITS``): ~140 MB on that model. The weight gradient itself is a new
    tensor each time, since it becomes the parameter's ``.grad``.
    """

    def __init__(self, rows: int, w_VF: Tensor):
        V, F = w_VF.shape
        self.z_RV = w_VF.new_empty(rows, V)
        self.p_RV = w_VF.new_empty(rows, V, dtype=torch.float32)
        self.g_RV = w_VF.new_empty(rows, V)
        self.product_VF = w_VF.new_empty(V, F)


_WORKSPACES = threading.local()  # one per thread: two threads training side by side share none


def _kept(name: str) -> dict:
    """This thread's dict of kept buffers called ``name`` (made empty on first use)."""
    if not hasattr(_WORKSPACES, name):
        setattr(_WORKSPACES, name, {})
    return getattr(_WORKSPACES, name)


def _workspace(rows: int, w_VF: Tensor) -> _Workspace:
    """A workspace for slices of ``rows`` rows through ``w_VF``: this thread's, made on first
    use and made again larger when a slice needs more rows (so it holds the largest slice seen,
    not the most a slice may have)."""
    key = (*w_VF.shape, w_VF.dtype, w_VF.device)
    spaces = _kept("spaces")
    space = spaces.get(key)
    if space is None or space.z_RV.shape[0] < rows:
        spaces.clear()  # another model, or too small: the old buffers are not kept
        spaces[key] = space = _Workspace(rows, w_VF)
    return space


def _weight_copy(weight_VF: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight_VF`` in ``dtype``: itself when it has it, else a copy written into a buffer this
    thread keeps until :func:`release_workspaces` (a fresh 8 MB bf16 copy of the Multi30k output
    layer was faulted in page by page at every update: 0.8 ms)."""
    if weight_VF.dtype == dtype:
        return weight_VF
    key = (*weight_VF.shape, dtype, weight_VF.device)
    spaces = _kept("weights")
    buffer = spaces.get(key)
    if buffer is None:
        spaces.clear()
        buffer = spaces[key] = torch.empty_like(weight_VF, dtype=dtype)
    return buffer.copy_(weight_VF)


def release_workspaces() -> None:
    """Free this thread's loss workspaces (before a validation, say: it needs the memory more)."""
    _WORKSPACES.spaces = {}
    _WORKSPACES.weights = {}


# Below this probability, -log p loses precision in float32 (and 0 would give inf): such rows take
# the log-sum-exp of their logits instead.
_SMALLEST_P = 1e-30


def _nll(p_RV: Tensor, z_RV: Tensor, t_R1: Tensor) -> Tensor:
    """-log p(target) per row, from the softmax (exact for tiny p too, from the logits)."""
    p_R = p_RV.gather(1, t_R1).squeeze(1)
    nll_R = -p_R.log()
    tiny_R = p_R < _SMALLEST_P
    if bool(tiny_R.any()):
        z_UV = z_RV[tiny_R].float()
        lse_U = torch.logsumexp(z_UV, dim=1)
        nll_R[tiny_R] = lse_U - z_UV.gather(1, t_R1[tiny_R]).squeeze(1)
    return nll_R
