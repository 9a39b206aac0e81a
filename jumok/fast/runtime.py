"""Process-wide knobs of PyTorch's CPU kernels and of the C heap, set by the commands that run
(``jumok train``, ``jumok translate``, ..., :func:`jumok.load`), never at import.

- :func:`configure`: how many compiled oneDNN kernels the process keeps. PyTorch's CPU kernels for
  LSTMs and bf16 products (oneDNN, through ideep) compile one kernel per shape and keep it, with
  its buffers, in two caches of up to 1,024 entries each (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``,
  ``LRU_CACHE_CAPACITY``). Batches of varying lengths keep adding shapes, so a run's memory grew
  while the caches had room (past 1.5 GB on Multi30k); jumok keeps 32 of each unless the
  environment says otherwise. ``train.kernel_cache`` raises oneDNN's cap for one run: at 32 the
  date model's kernels evict each other and some are compiled again at every update.
  Both variables are read when the first such kernel runs, so they must be set before it.
- :func:`release_free_memory`: hand the C heap's free pages back to the system (glibc's
  ``malloc_trim``), which keeps what batches of varying shapes leave behind.
- :func:`quick_exit`: end the program without the interpreter's teardown of PyTorch's modules.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

# jumok's default for both kernel caches (a value already in the environment is kept).
KERNEL_CACHE = 32


def configure(kernel_cache: int | None = None) -> None:
    """Cap the oneDNN and ideep kernel caches at :data:`KERNEL_CACHE` unless the environment set
    them, and oneDNN's at ``kernel_cache`` when given (``train.kernel_cache``).

    Takes effect only in a process that has not run a oneDNN kernel yet: the commands call it
    before their first model runs.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE))
    os.environ.setdefault("LRU_CACHE_CAPACITY", str(KERNEL_CACHE))
    if kernel_cache is not None:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(kernel_cache)


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere a no-op).

    Batches of varying shapes leave the heap fragmented, and glibc keeps what is freed: on
    Multi30k the resident memory of a run grew by ~100 MB an epoch. Trimming after each
    validation and every few dozen updates costs a few milliseconds; after every update it would
    cost much of the speed (pages are faulted in again).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def import_torch() -> None:
    """Import PyTorch with Ctrl-C held back until the import is done.

    A KeyboardInterrupt raised while torch's C++ extensions initialise does not unwind: it
    aborts the process ("terminate called after throwing an instance of
    'pybind11::error_already_set'"). A Ctrl-C that arrives during the import is noted and
    raised right after it, where the command line reports it as one line with status 130.
    """
    if "torch" in sys.modules or threading.current_thread() is not threading.main_thread():
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def quick_exit(code: int) -> None:
    """End the program at once with ``code``, once every file is closed and the output flushed:
    the interpreter's own teardown of PyTorch's modules takes most of a second, longer than a
    validation of the date task."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # closed when the program started (``>&-``)
            continue
        try:
            stream.flush()
        except BrokenPipeError:  # the reader went away after the last write: as a SIGPIPE
            code = code or 141
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
