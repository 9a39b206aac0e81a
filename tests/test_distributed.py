"""Data-parallel training: two CPU processes (torchrun, gloo) update the model as one process does.

``train.batch_size`` is the global batch (docs/distributed.md): two ranks sharing each batch must
end with the weights one process reaches on the same batches, up to float rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from jumok.checkpoint import load_checkpoint
from jumok.config import load_config
from jumok.data.splits import encode_pairs, iterate_batches
from jumok.data.synthetic import generate
from jumok.data.vocab import PAD_ID, Vocab, tokenize_chars
from jumok.model.seq2seq import build_model
from jumok.training.train import train

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this PyTorch build has no torch.distributed with gloo",
)

# 395 pairs - 50 dev - 50 test = 295 train = 42 batches of 7 + one of 1: rank 1 gets no row of
# that last batch. An odd batch size splits 4 + 3; accumulate 2 adds two batches per update;
# dropout 0 makes the two runs comparable (rank 1 draws its own dropout masks).
OVERRIDES = [
    "data.generate.size=395",
    "data.generate.dev_size=50",
    "data.generate.test_size=50",
    "model.encoder.hidden_size=16",
    "model.decoder.hidden_size=16",
    "model.dropout.embeddings=0",
    "model.dropout.attentional=0",
    "train.epochs=1",
    "train.batch_size=7",
    "train.accumulate=2",
    "train.bucketing=true",
    "train.clip_grad_norm=1.0",
    "train.threads=1",
    "train.device=cpu",
]


def initial_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The weights the run started from (the model is built right after seeding)."""
    saved = load_checkpoint(checkpoint)
    torch.manual_seed(saved.config.train.seed)
    model = build_model(saved.config.model, len(saved.src_vocab), len(saved.tgt_vocab))
    return model.state_dict()


def test_shards_split_each_batch_once_with_their_own_padding():
    pairs = generate("date", 30, seed=1)
    vocab = Vocab.build(tokenize_chars(s + t) for s, t in pairs)
    data = encode_pairs(pairs, vocab, vocab, reverse_source=True)
    (batch,) = iterate_batches(data, batch_size=30)
    shards = [batch.shard(rank, 4) for rank in range(4)]
    rows = torch.cat([s.index_B for s in shards]).sort().values
    assert rows.tolist() == batch.index_B.sort().values.tolist()
    assert sum(s.n_target_tokens for s in shards) == batch.n_target_tokens
    for rank, s in enumerate(shards):
        assert s.index_B.tolist() == batch.index_B[rank::4].tolist()
        assert s.src_BS.shape[1] == int(s.src_len_B.max())  # trimmed to its own longest
        assert (s.tgt_out_BT[:, -1] != PAD_ID).any()
        assert torch.equal(s.src_BS, batch.src_BS[rank::4, : s.src_BS.shape[1]])
    assert batch.shard(0, 1) is batch
    one = next(iter(iterate_batches(data, batch_size=1)))
    assert len(one.shard(1, 2).index_B) == 0  # fewer rows than processes: an empty part


@pytest.mark.slow
def test_two_processes_update_as_one_process_does(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "jumok",
        "train",
        str(ROOT / "examples/date.yaml"),
        "--run-dir",
        str(two),
        "--no-progress",
        *(arg for o in OVERRIDES for arg in ("--set", o)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "data parallel: 2 processes" in done.stdout
    assert done.stdout.count("run directory:") == 1  # rank 1 prints nothing

    train(
        load_config(ROOT / "examples/date.yaml", OVERRIDES), one, log=lambda _: None, progress=False
    )

    both = [json.loads((d / "metrics.jsonl").read_text()) for d in (two, one)]
    assert both[0]["step"] == both[1]["step"] == 22  # ceil(43 batches / 2)
    weights = [load_checkpoint(d / "last.safetensors").state_dict for d in (two, one)]
    assert weights[0].keys() == weights[1].keys()
    start = initial_weights(one / "last.safetensors")
    largest = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in start)
    print(f"largest difference from one process: {largest:.2e}")
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[0][name], value, atol=1e-5, rtol=0, msg=name)
        assert not torch.equal(value, start[name]), f"{name} never changed: the test is idle"
    assert both[0]["train_loss"] == pytest.approx(both[1]["train_loss"], rel=1e-5)
    # Rank 0 alone wrote the run directory: the same files as one process.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
