"""Weights laid out once for oneDNN: faster products when decoding on a CPU.

PyTorch's ``linear`` on a CPU hands the weight to its matrix library in the plain layout at
every call (under bf16, oneDNN rearranges it into the blocked layout its kernels read before
each product; in float32 it goes to a general BLAS routine). A decoder applies the same
matrices at every step, so the decoding copy of a model (``Translator._decoding_model``) has
oneDNN lay them out once and calls its kernel on the packed weight, as PyTorch's own compiler
does for frozen models. Packed: the output layer (V x H), the attentional layer, and in float32
the decoder LSTM's step product (``[W_f | W_h]``, :meth:`jumok.fast.feeding.InputFeedingLSTM.fused_layer0`).

Measured here (2 threads; the Multi30k output layer 512 x 5,477; ms per call):

=========  ==============  ==============  ==============  ==============
rows       bf16 plain      bf16 packed     fp32 plain      fp32 packed
=========  ==============  ==============  ==============  ==============
1          0.16            0.06            0.28            0.14
8          0.24            0.13            1.32            0.40
64         1.01            0.84            3.30            1.72
320        4.79            4.30            16.2            9.0
=========  ==============  ==============  ==============  ==============

A packed product's row does not depend on the other rows in the call (a plain float32 one
does: one row alone goes another way); a packed float32 product differs from the plain one in
the last bits (~1e-5 relative), bf16 not at all. Decoding Multi30k test2016 with the packed
layers gave the same 1,000 outputs as before in bf16 and in float32, greedy and beam 5 (float32
checked again with the LSTM product packed); figures in docs/decoding.md.

The packed weights are copies: the layers live only in a decoding copy of the model, rebuilt
when the model's weights change.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Rows per call the packed layout is chosen for; any number of rows works (measured: the
# choice between 1 and 320 changed the time of a bf16 call by under 3 %).
ROWS_HINT = 64
DTYPES = (torch.float32, torch.bfloat16)


def available(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether this PyTorch build can pack ``dtype`` weights for oneDNN on ``device`` (bf16 also
    needs a CPU whose oneDNN kernels support it)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    if dtype == torch.bfloat16:
        supported = getattr(ops, "_is_mkldnn_bf16_supported", None)
        return supported is not None and bool(supported())
    return dtype == torch.float32


def pack(weight_OI: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight_OI`` (out, in) in ``dtype``, laid out for :func:`packed_linear`."""
    plain = weight_OI.detach().to(dtype).contiguous()
    return torch.ops.mkldnn._reorder_linear_weight(plain, ROWS_HINT)


def packed_linear(x_NI: Tensor, packed: Tensor, bias_O: Tensor | None) -> Tensor:
    """``x_NI @ W.T + b`` for a weight made by :func:`pack` (x in the weight's dtype)."""
    return torch.ops.mkldnn._linear_pointwise(x_NI, packed, bias_O, "none", [], "")


def compute_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype a product on ``x`` runs in when packing applies (a CPU tensor, no gradients,
    float32 without autocast or bf16), else None."""
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return dtype if dtype == torch.bfloat16 else None
    return x.dtype if x.dtype in DTYPES else None


class PackedLinear(nn.Module):
    """``nn.Linear`` for decoding on a CPU, its weight packed once for oneDNN.

    Args:
        linear: the layer to pack (its parameters are kept for the plain path).
        dtype: what the packed copy is made for (float32 or bf16). An input computed in
            another dtype, with gradients on, or off the CPU, gets the plain ``linear``.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.dtype = dtype
        # plain attributes: not parameters, not in a state dict
        self._packed = pack(linear.weight, dtype)
        self._bias = None if linear.bias is None else linear.bias.detach().to(dtype).contiguous()

    def forward(self, x_NI: Tensor) -> Tensor:
        if compute_dtype(x_NI) != self.dtype:
            return nn.functional.linear(x_NI, self.weight, self.bias)
        rows_NI = x_NI.reshape(-1, self.in_features).to(self.dtype)
        out_NO = packed_linear(rows_NI, self._packed, self._bias)
        return out_NO.reshape(*x_NI.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.dtype}"
