"""Shared fixtures: tiny models (H=8, V~12) with fixed seeds, so each test runs in seconds."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import budget

from jumok.config import DecoderConfig, EncoderConfig, ModelConfig
from jumok.model.seq2seq import Seq2Seq, build_model

SRC_V, TGT_V = 12, 10


@pytest.fixture(autouse=True)
def _own_kernel_cache_setting(monkeypatch):
    """``train.kernel_cache`` writes the process environment (the date configs set it): each
    test's change is undone after it, so processes later tests start inherit jumok's default."""
    key = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    monkeypatch.setenv(key, os.environ.get(key, "32"))


def tiny_model_config(hidden: int = 8, embedding: int = 6) -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig(embedding_size=embedding, hidden_size=hidden),
        decoder=DecoderConfig(embedding_size=embedding, hidden_size=hidden),
    )


@pytest.fixture
def tiny_model() -> Seq2Seq:
    torch.manual_seed(0)
    return build_model(tiny_model_config(), SRC_V, TGT_V)


def random_batch(B: int = 4, S: int = 7, T: int = 5, seed: int = 1):
    """Right-padded random ids (4..V-1) with lengths between 1 and S, one sentence at full S."""
    g = torch.Generator().manual_seed(seed)
    src_len_B = torch.randint(1, S + 1, (B,), generator=g)
    src_len_B[0] = S
    src_BS = torch.randint(4, SRC_V, (B, S), generator=g)
    src_BS[torch.arange(S).unsqueeze(0) >= src_len_B.unsqueeze(1)] = 0
    tgt_in_BT = torch.randint(4, TGT_V, (B, T), generator=g)
    tgt_in_BT[:, 0] = 1  # bos
    return src_BS, src_len_B, tgt_in_BT


# ------------------------------------------------------------------------- a real jumok serve
class ServeProcess:
    """``jumok serve RUN`` in a subprocess on a free loopback port, ready when constructed."""

    def __init__(self, run_dir, log_path, timeout: float = 60):
        import json
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jumok", "serve", str(run_dir), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + budget(timeout)
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/ready", timeout=2) as r:
                    if json.loads(r.read())["ready"]:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"jumok serve did not start: {self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture(params=["fast", "plain"])
def fast_layer(request, monkeypatch):
    """Run a test twice: with jumok.fast on, and with it off (``JUMOK_FAST=0``: every model the
    test builds runs the plain version of each trick). Model test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("fast_layer")``."""
    monkeypatch.setenv("JUMOK_FAST", "1" if request.param == "fast" else "0")
    return request.param == "fast"
