"""Decoding copies of a model: the same parameters, with the decoders' products packed for
oneDNN (:mod:`jumok.fast.packing`) where that is faster."""

from __future__ import annotations

import copy

import torch
from torch import nn

from jumok.fast.feeding import InputFeedingLSTM
from jumok.fast.packing import PackedLinear
from jumok.model.decoder import Decoder


def pack_decoders(model: nn.Module, dtype: torch.dtype) -> int:
    """Pack, in place, the output and attentional layers of every decoder in ``model`` (a model
    or an ensemble) and, in float32, let their LSTMs pack their step product; returns how many
    layers were packed."""
    packed = 0
    for module in model.modules():
        if not isinstance(module, Decoder) or not module.fast:  # JUMOK_FAST=0: plain layers
            continue
        for name in ("output", "attentional"):
            layer = getattr(module, name, None)
            if type(layer) is nn.Linear:
                setattr(module, name, PackedLinear(layer, dtype))
                packed += 1
        # bf16: the packed step product was no faster and changed 25 of 1,000 outputs (its
        # sum with the token gates rounds differently from addmm's); float32: 1.24 against
        # 1.98 ms per 64-row step
        if dtype == torch.float32 and isinstance(module.rnn, InputFeedingLSTM):
            module.rnn.pack_step_product = True
            packed += 1
    return packed


def float32_copy(model: nn.Module, pack: bool = True, token_tables: bool = True) -> nn.Module:
    """A float32 decoding copy of ``model``: its modules copied around its parameters and
    buffers (shared, not copied), in evaluation mode, with the decoders' products packed
    (``pack``, on a CPU). The copy follows the model's weights only until they change shape or
    are replaced; its packed weights are those of the moment it was made.

    ``token_tables`` False: the copy's input-feeding LSTMs never build a token-gate table
    (:meth:`jumok.fast.feeding.InputFeedingLSTM.token_gates`), as a training run's validations
    ask: each would build one anew and hold it on top of training's memory.
    """
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    made = copy.deepcopy(model, memo=shared).eval()
    if pack:
        pack_decoders(made, torch.float32)
    if not token_tables:
        for module in made.modules():
            if isinstance(module, InputFeedingLSTM):
                module.token_tables = False  # this copy's own module, not the model's
    return made
