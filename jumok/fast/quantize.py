"""int8 dynamic quantization of a trained model for decoding on the CPU (``decode.quantize``).

:func:`quantize_int8` returns a copy of the model in which every ``nn.LSTM``, ``nn.GRU`` and
``nn.Linear`` is replaced by PyTorch's dynamically quantized counterpart
(``torch.ao.quantization.quantize_dynamic``): the weights are stored as int8 with one scale per
output row (Linear) or per matrix (LSTM/GRU), and at every call the activations are quantized
to 8 bits on the fly, multiplied in int8 with int32 accumulation and the result turned back into
float32. In jumok's models that covers

* the encoder's LSTM/GRU (each direction, each layer),
* the decoder's LSTM/GRU; an input-feeding LSTM's layer 0 as one Linear over
  ``[y_t; feed; h]`` (:meth:`jumok.fast.feeding.InputFeedingLSTM.join_layer0`), so a step quantizes
  its input and multiplies once instead of three times (Multi30k test2016, beam 5: 2.95 s
  against 3.29 s, BLEU 33.92 against 33.96; greedy 1.20 s against 1.28 s, BLEU 31.64 against
  31.59; medians of three alternated rounds),
* the output layer (hidden -> vocabulary, the largest matrix product of decoding),
* the attentional layer ``tanh(W [context; h])``, the ``bridge`` and the attention's key and
  query projections (``general``, ``additive``), where the model has them.

What stays float32: the embeddings (a table look-up, no arithmetic to speed up), the attention
scores, softmax and context vectors (products of activations with activations, no weights),
``log_softmax`` and the search itself. A tied output layer gets its own int8 copy of the shared
matrix; the embedding keeps the float32 one.

Nothing is written to disk: quantizing the Multi30k model takes a fraction of a second, so it is
done when a decode first asks for it (checkpoints keep float32 weights, and safetensors has no
format for PyTorch's packed int8 parameters). The quantized kernels run on the CPU only.

``torch.ao.quantization`` is marked deprecated in favour of the separate ``torchao`` package
(which quantizes Linear layers but has no LSTM); it still works in the pinned torch, and its
deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from jumok.errors import ConfigError
from jumok.fast.feeding import InputFeedingLSTM

# The float modules that are replaced, and their quantized counterparts' class names.
QUANTIZED_TYPES = (nn.LSTM, nn.GRU, nn.Linear)


def _quantization_api():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )
    return quantize_dynamic, default_dynamic_qconfig, per_channel_dynamic_qconfig


def check_supported(device: torch.device) -> None:
    """Raise :class:`ConfigError` when int8 decoding cannot run here."""
    if device.type != "cpu":
        raise ConfigError(
            f"decode.quantize: int8 runs on the CPU only (PyTorch's dynamically quantized LSTM "
            f"and Linear kernels); this model is on {device.type}. Use --device cpu or "
            "decode.quantize: none"
        )
    if torch.backends.quantized.engine == "none":
        raise ConfigError(
            "decode.quantize: int8: this PyTorch build has no quantized engine "
            f"(supported: {torch.backends.quantized.supported_engines}); use decode.quantize: none"
        )


def quantize_int8(model: nn.Module, per_channel: bool = True) -> nn.Module:
    """A copy of ``model`` (float32, on the CPU) with its LSTM, GRU and Linear layers in int8.

    ``model`` itself is not changed. The copy is in eval mode and has no gradients.
    ``per_channel=False`` gives the Linear layers one scale per matrix too (for comparison).
    """
    quantize_dynamic, per_tensor, per_channel_qconfig = _quantization_api()
    float_copy = copy.deepcopy(model).float().eval()
    for module in float_copy.modules():
        if isinstance(module, InputFeedingLSTM):
            module.join_layer0()  # one int8 product per step for layer 0, not three
    for p in float_copy.parameters():
        p.requires_grad_(False)
    # Linear: one scale per output row; the quantized LSTM and GRU take one per weight matrix.
    linear = per_channel_qconfig if per_channel else per_tensor
    spec = {nn.Linear: linear, nn.LSTM: per_tensor, nn.GRU: per_tensor}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        return quantize_dynamic(float_copy, spec, dtype=torch.qint8, inplace=True)


def quantized_modules(model: nn.Module) -> dict[str, str]:
    """Name -> class name of every dynamically quantized module of ``model`` (for tests, docs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.nn.quantized import dynamic

    kinds = (dynamic.LSTM, dynamic.GRU, dynamic.Linear)
    return {
        name: module._get_name()  # e.g. DynamicQuantizedLSTM
        for name, module in model.named_modules()
        if isinstance(module, kinds)
    }


def float_modules(model: nn.Module) -> list[str]:
    """Names of the LSTM, GRU and Linear modules of ``model`` still in floating point."""
    return [name for name, module in model.named_modules() if type(module) in QUANTIZED_TYPES]
