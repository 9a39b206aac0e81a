"""jumok (주목, "attention"): attention-based sequence-to-sequence models.

>>> import jumok
>>> model = jumok.load("runs/date")                  # a run directory written by `jumok train`
>>> [t.text for t in model.translate(["Sep 27, 1994"])]
['1994-09-27']
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir, which: str = "best", device: str = "cpu"):
    """Load a trained run for decoding; see :func:`jumok.translator.load`."""
    from jumok.translator import load as _load

    return _load(run_dir, which=which, device=device)
