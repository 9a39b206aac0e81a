"""The speed and memory layer: every trick that makes jumok faster or smaller on a CPU without
changing what it computes. The model (:mod:`jumok.model`) calls each at one named place, with the
readable version beside it (nanoGPT's ``if self.flash: ... else: # manual implementation``):

- ``padded_rnn``: a one-layer encoder RNN over the padded batch in one kernel call
  (plain: one call per distinct length, :func:`jumok.model.encoder.run_by_length`);
- ``dropout``: a cheaper dropout mask (plain: ``nn.Dropout``);
- ``step_attention``: a training loop's attention with the keys' gradients summed once
  (plain: the attention module's ``forward`` at every step);
- ``feeding``: the input-feeding LSTM with every step's input work done at once, per-loop weight
  gradients and token-gate tables (plain: :meth:`InputFeedingLSTM.plain_step`, the LSTM equations
  one step at a time);
- ``sliced_loss``: the output layer and the cross-entropy in slices, never the whole (N, V) logits
  (plain: ``F.cross_entropy`` on the logits);
- ``packing``: weights laid out once for oneDNN in decoding copies (plain: ``nn.Linear``);
- ``quantize``: int8 decoding, asked for by ``decode.quantize``;
- ``runtime``: process-wide kernel-cache and heap knobs, set by the commands.

The layer can be switched off as a whole: ``train.fast: false`` for a training run, or the
environment variable ``JUMOK_FAST=0`` for everything a process builds (training, decoding, the
server). Each trick has a test that it computes the same thing as its plain version.
"""

from __future__ import annotations

import os

# The environment variable that switches the fast layer off (0, false, no, off) for a process.
ENV = "JUMOK_FAST"


def enabled() -> bool:
    """Whether the fast layer is on for models built from now on (``JUMOK_FAST`` unset or on).

    Read at each call, never cached: a model reads it once, when it is built, and keeps its own
    ``fast`` attribute."""
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "false", "no", "off"}
