"""Shared fixtures and helpers (test files import helpers with ``from conftest import ...``;
no test file imports from another ``test_*.py``).

Fixtures: tiny models (H=8, V~12) with fixed seeds, so each test runs in seconds."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from jumok.checkpoint import load_checkpoint
from jumok.config import DecoderConfig, EncoderConfig, ModelConfig, load_config
from jumok.model.seq2seq import Seq2Seq, build_model

SRC_V, TGT_V = 12, 10

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda _: None, "progress": False}


# ------------------------------------------------------------------------------- time budgets
def time_factor() -> float:
    """``JUMOK_TIME_FACTOR`` (default 1.0): how much slower than a developer's machine this
    one may be. Read at each call, so a test can set it."""
    value = os.environ.get("JUMOK_TIME_FACTOR") or "1.0"
    try:
        factor = float(value)
    except ValueError:
        factor = 0.0
    if not factor > 0:
        raise ValueError(f"JUMOK_TIME_FACTOR must be a number above 0, not {value!r}")
    return factor


def budget(seconds: float) -> float:
    """A wall-clock budget of ``seconds``, widened by ``JUMOK_TIME_FACTOR``."""
    return seconds * time_factor()


# ------------------------------------------------------------------------ small training runs
def small_config(*extra: str):
    """The date example at hidden 32 on 1,400 generated pairs, 2 epochs (plus ``extra``)."""
    return load_config(
        ROOT / "examples/date.yaml",
        [
            "data.generate.size=1400",
            "data.generate.dev_size=100",
            "data.generate.test_size=100",
            "model.encoder.hidden_size=32",
            "model.decoder.hidden_size=32",
            "train.epochs=2",
            "train.batch_size=64",
            *extra,
        ],
    )


# One epoch is 19 updates of (up to) 32 pairs: 600 train pairs.
TINY = (
    "data.generate.size=700",
    "data.generate.dev_size=50",
    "data.generate.test_size=50",
    "model.encoder.embedding_size=8",
    "model.decoder.embedding_size=8",
    "model.encoder.hidden_size=16",
    "model.decoder.hidden_size=16",
    "train.epochs=2",
    "train.batch_size=32",
    "train.threads=1",
    "train.examples=0",
)


def tiny_config(*extra: str):
    """The date example with the ``TINY`` overrides (plus ``extra``): a run of seconds."""
    return load_config(ROOT / "examples/date.yaml", [*TINY, *extra])


# ---------------------------------------------------------------------------- comparing runs
def digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (relative path) to its SHA-256."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def rows(run_dir: Path) -> list[dict]:
    """The run's metrics rows without the fields that measure time."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    timing = ("epoch_seconds", "elapsed_seconds", "train_tokens_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs logged the same metrics and saved the same weights, to the bit."""
    assert rows(a) == rows(b)
    for name in ("last.safetensors", "best.safetensors"):
        wa, wb = weights(a / name), weights(b / name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


# ------------------------------------------------------------------------ model-variant grid
ATTENTIONS = ["none", "dot", "scaled_dot", "general", "additive"]
ENCODERS = [  # (bidirectional, num_layers, rnn)
    (bi, layers, rnn) for bi in (False, True) for layers in (1, 2) for rnn in ("lstm", "gru")
]


def variant(
    attention: str,
    peeky: bool = False,
    input_feeding: bool = False,
    bidirectional: bool = False,
    layers: int = 1,
    rnn: str = "lstm",
    **decoder,
) -> ModelConfig:
    """A tiny model; the decoder is sized to take the encoder's last state (init 'last')."""
    H = 8
    return ModelConfig.model_validate(
        {
            "encoder": {
                "embedding_size": 6,
                "hidden_size": H,
                "rnn": rnn,
                "num_layers": layers,
                "bidirectional": bidirectional,
            },
            "decoder": {
                "embedding_size": 6,
                "hidden_size": H * (2 if bidirectional else 1),
                "rnn": rnn,
                "num_layers": layers,
                "peeky": peeky,
                "input_feeding": input_feeding,
                **decoder,
            },
            "attention": attention,
        }
    )


# attention x encoder x Peeky x input feeding
GRID = [
    (attention, encoder, peeky, feeding)
    for attention, encoder, peeky, feeding in itertools.product(
        ATTENTIONS, ENCODERS, (False, True), (False, True)
    )
    if not (feeding and attention == "none")  # rejected by the config (tested in test_variants)
]


def variant_id(case) -> str:
    """A GRID case's test id, e.g. ``dot-bi2gru-peeky-feed``."""
    attention, (bi, layers, rnn), peeky, feeding = case
    return (
        f"{attention}-{'bi' if bi else 'uni'}{layers}{rnn}"
        f"{'-peeky' if peeky else ''}{'-feed' if feeding else ''}"
    )


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


# ------------------------------------------------------------------------ the bad-input matrix
# Each hostile-input test file (test_bad_input*.py) lists Cases; ``assert_refused`` runs one in a
# ``work`` folder and checks the exit status, the one message and that nothing on disk changed.
MATRIX_TINY = """\
data:
  train: pairs.tsv
  dev_size: 2
model:
  encoder: {embedding_size: 8, hidden_size: 16}
  decoder: {embedding_size: 8, hidden_size: 16}
  attention: dot
train: {epochs: 1, batch_size: 4}
"""
MATRIX_PAIRS = "".join(f"abc{i}\tcba{i}\n" for i in range(12))


@pytest.fixture(scope="session")
def matrix_run(tmp_path_factory) -> Path:
    """A finished date run (one epoch of the small config), trained once per session."""
    from jumok.training.train import train

    run = tmp_path_factory.mktemp("matrix") / "run"
    train(small_config("train.epochs=1"), run, **QUIET)
    return run


@pytest.fixture
def work(tmp_path, matrix_run) -> Path:
    """A work folder: a finished run (``run/``), a tiny config (``tiny.yaml``) and its data."""
    shutil.copytree(matrix_run, tmp_path / "run")
    (tmp_path / "tiny.yaml").write_text(MATRIX_TINY, encoding="utf-8")
    (tmp_path / "pairs.tsv").write_text(MATRIX_PAIRS, encoding="utf-8")
    return tmp_path


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes the mistake under the folder, returns the argv
    says: tuple[str, ...]  # what the one-line message must contain


def assert_refused(case: Case, work: Path, capsys) -> None:
    """``jumok ARGV`` exits non-zero with one ``jumok: error:`` message holding every fragment of
    ``case.says``, prints no traceback, and leaves every file under ``work`` as it was."""
    from jumok.app.cli import main

    argv = case.make(work)
    before = digest(work)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, f"{case.name}: exit 0"
    lines = err.splitlines()
    assert lines and lines[-1].startswith("jumok: error: ") or lines[0].startswith("jumok: error:")
    message = "\n".join(line for line in lines if not line.startswith("  warnings.warn"))
    for fragment in case.says:
        assert fragment in message, f"{case.name}: {fragment!r} not in {message!r}"
    assert "Traceback" not in err
    assert digest(work) == before, f"{case.name}: something on disk changed"
