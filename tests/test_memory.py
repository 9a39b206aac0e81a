"""Memory that must not grow with the number of batch shapes a run has seen."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter (the caches' sizes are read once per process): an LSTM and a
# linear layer under bf16 autocast, forward and backward, on a new (rows, length) shape each
# time, as training on batches of varying lengths does. Prints how much the C heap in use grew
# (MiB) over the shapes after the first 40.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import torch
    from jumok.fast import runtime

    runtime.configure()  # caps the kernel caches unless the environment set them, as commands do

    torch.set_num_threads(1)
    libc = ctypes.CDLL("libc.so.6")

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]

    libc.mallinfo2.restype = Info

    def in_use():
        info = libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    torch.manual_seed(0)
    lstm, linear = torch.nn.LSTM(64, 64, batch_first=True), torch.nn.Linear(64, 256)

    def step(k):
        x = torch.randn(1 + k % 37, 1 + k // 37, 64, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = lstm(x)
            z = linear(y)
        z.float().sum().backward()

    for k in range(40):
        step(k)
    before = in_use()
    for k in range(40, 300):
        step(k)
    print(in_use() - before)
    """
)


def _growth(**env: str) -> float:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("CACHE_CAPACITY")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's mallinfo2")
def test_kernel_caches_stay_small_over_many_batch_shapes():
    # Measured here: with PyTorch's defaults (1,024 kernels in each cache) the heap grew by
    # ~260 MiB over these 260 shapes (~100 MiB from ideep's cache, ~160 from oneDNN's); with
    # jumok's caps by ~0.
    assert _growth() < 20
    # the probe can fail: with either cache at PyTorch's default size the heap grows
    assert _growth(LRU_CACHE_CAPACITY="1024") > 40
    assert _growth(ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024") > 40
