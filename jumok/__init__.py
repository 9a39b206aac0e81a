"""jumok (주목, "attention"): attention-based sequence-to-sequence models.

>>> import jumok
>>> model = jumok.load("runs/date")                  # a run directory written by `jumok train`
>>> [t.text for t in model.translate(["Sep 27, 1994"])]
['1994-09-27']
"""

from __future__ import annotations

import os

# oneDNN (PyTorch's CPU kernels for LSTMs and bf16 matrix products) keeps up to 1,024 compiled
# kernels, one per shape it has seen, each with its buffers. Batches of varying lengths keep
# adding shapes, and a Multi30k training run grew from ~1.0 to 1.43 GB resident over 400
# updates; with 32 kept the peak was 1.22 GB at the same speed (measured here). A value the
# user set is kept. oneDNN reads it when it first runs, so importing jumok before running any
# PyTorch operation is enough.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir, which: str = "best", device: str = "cpu"):
    """Load a trained run for decoding; see :func:`jumok.translator.load`."""
    from jumok.translator import load as _load

    return _load(run_dir, which=which, device=device)
