"""jumok (주목, "attention"): attention-based sequence-to-sequence models.

The folders are the architecture; imports go one way, from left to right (a module imports its
own folder or the ones to its left, never the ones to its right):

    config, errors ← data ← fast ← model ← checkpoint, plot ← decoding ← training ← app

- ``config/``, ``errors``: the typed config tree (one module per section) and the user-facing errors.
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

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir, which: str = "best", device: str = "cpu"):
    """Load a trained run for decoding; see :func:`jumok.decoding.translator.load`."""
    from jumok.decoding.translator import load as _load
    from jumok.fast import runtime

    runtime.configure()  # before the model's first kernel (nothing is set at import)
    return _load(run_dir, which=which, device=device)
