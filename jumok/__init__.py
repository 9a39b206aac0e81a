"""jumok (주목, "attention"): attention-based sequence-to-sequence models.

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
# as long as the caches had room: ~100 MB an epoch on Multi30k, past 1.5 GB. Capped, the caches
# hold a bounded number. ideep's cache is kept at 32: its kernels are looked up rarely enough
# that the cap costs no speed. oneDNN's is kept at 256: each update of a Task B or date batch
# uses a few dozen kernels (products whose rows are batch x length, LSTMs per length), and at
# 32 they evicted each other, so that kernels were compiled again at almost every update:
# 12 times an update on Task B (9.9 ms of compiling per update of ~220 ms) and 5 times on the
# date model (3 ms of ~30 ms), counted with ONEDNN_VERBOSE=profile_create over 300 real
# batches. At 256 that fell to 3.2 ms on Task B and to the first sight of each shape on the
# date model; the C heap in use after 300 Task B updates was 552 MiB against 494 MiB at 32
# (and 701 MiB, still growing, at 1,024). A value the user set is kept. Both are read when the
# first such kernel runs, so importing jumok before running any PyTorch operation is enough.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
os.environ.setdefault("LRU_CACHE_CAPACITY", "32")

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir, which: str = "best", device: str = "cpu"):
    """Load a trained run for decoding; see :func:`jumok.translator.load`."""
    from jumok.translator import load as _load

    return _load(run_dir, which=which, device=device)
