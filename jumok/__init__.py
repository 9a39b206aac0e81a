"""jumok (주목, "attention"): attention-based sequence-to-sequence models.

The folders are the architecture; imports go one way, from left to right (a module imports its
own folder or the ones to its left, never the ones to its right):

    config, errors ← data ← fast ← model ← checkpoint, plot ← decoding ← training ← app

- ``config``, ``errors``: the typed config tree and the user-facing errors.
- ``data/``: text in, ids and batches out (readers, tokenizers, vocabularies, generated tasks).
- ``fast/``: the speed and memory layer; every trick has a plain version beside it.
- ``model/``: the lecture's model (attention, encoder, decoder, seq2seq wiring).
- ``checkpoint``, ``plot``: weights with their config on disk; pictures (matplotlib).
- ``decoding/``: greedy, beam and sampling search, ensembles, diagnostics, the translator.
- ``training/``: the loop, validation, resume, schedules, distributed training, metrics.
- ``app/``: the ``jumok`` command, the demo, the ladder, evaluation, the server.

``tests/test_layout.py`` holds the rule, imports inside functions included.

>>> import jumok
>>> model = jumok.load("runs/date")                  # a run directory written by `jumok train`
>>> [t.text for t in model.translate(["Sep 27, 1994"])]
['1994-09-27']
"""

from __future__ import annotations

import os

# PyTorch's CPU kernels for LSTMs and bf16 matrix products (oneDNN, through ideep) compile one
# kernel per shape they see and keep it, with its buffers, in two caches of up to 1,024 entries
# each: oneDNN's own (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and ideep's (LRU_CACHE_CAPACITY).
# Batches of varying lengths keep adding shapes, so a training run's resident set grew for
# as long as the caches had room: ~100 MB an epoch on Multi30k, past 1.5 GB. With 32 kept in
# each, the C heap in use stayed at 358 MB over 300 updates instead of growing from 422 to
# 510 MB (benchmarks in docs/benchmarks.md). A value the user set is kept. Both are read when
# the first such kernel runs, so importing jumok before running any PyTorch operation is
# enough. At 32 an update of a model whose batches vary in length also compiles some of its
# kernels again (they evict each other): `train.kernel_cache` raises oneDNN's cap for a run
# (jumok.training.train.apply_kernel_cache), which pays for small models such as the date model.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
os.environ.setdefault("LRU_CACHE_CAPACITY", "32")

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir, which: str = "best", device: str = "cpu"):
    """Load a trained run for decoding; see :func:`jumok.decoding.translator.load`."""
    from jumok.decoding.translator import load as _load

    return _load(run_dir, which=which, device=device)
