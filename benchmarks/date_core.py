"""Training throughput of the lecture's model on the date task, against a naive baseline.

Both models are the lecture's architecture (embedding 16, LSTM 256, dot attention, output layer
over [context; h]) trained with Adam on the same batches (batch 128, generated date data,
reversed input). The baseline is the straightforward PyTorch port a learner writes from the book:
``nn.LSTMCell`` stepped in a Python loop, over the encoder and then the decoder, with the
attention computed one output step at a time. jumok runs the fused LSTM over whole sequences and
all attention steps as batched matrix products.

The figures are target tokens (non-pad, eos included) per second over the same updates, measured
in one process and interleaved (A, B, A, B) so that machine noise hits both. Prints a table and
one JSON line per result.

    python benchmarks/date_core.py [--steps 60] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from jumok.config import load_config
from jumok.data.splits import encode_pairs, iterate_batches, load_splits
from jumok.data.vocab import PAD_ID, Vocab, tokenize_chars
from jumok.model.seq2seq import build_model
from jumok.training.train import autocast, loss_fn


class NaiveSeq2Seq(nn.Module):
    """The lecture's model written step by step with LSTMCell (the baseline)."""

    def __init__(self, src_v: int, tgt_v: int, E: int = 16, H: int = 256):
        super().__init__()
        self.src_emb = nn.Embedding(src_v, E, padding_idx=PAD_ID)
        self.tgt_emb = nn.Embedding(tgt_v, E, padding_idx=PAD_ID)
        self.enc = nn.LSTMCell(E, H)
        self.dec = nn.LSTMCell(E, H)
        self.out = nn.Linear(2 * H, tgt_v)

    def forward(self, src_BS, src_len_B, tgt_in_BT):
        B, S = src_BS.shape
        H = self.enc.hidden_size
        h = c = torch.zeros(B, H)
        states = []
        x = self.src_emb(src_BS)
        for s in range(S):
            h_new, c_new = self.enc(x[:, s], (h, c))
            real = (s < src_len_B).unsqueeze(1)
            h, c = torch.where(real, h_new, h), torch.where(real, c_new, c)
            states.append(h_new * real)
        hs = torch.stack(states, 1)  # (B, S, H)
        mask = torch.arange(S).unsqueeze(0) < src_len_B.unsqueeze(1)
        y = self.tgt_emb(tgt_in_BT)
        logits = []
        for t in range(tgt_in_BT.shape[1]):
            h, c = self.dec(y[:, t], (h, c))
            scores = (hs * h.unsqueeze(1)).sum(-1).masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            context = (weights.unsqueeze(-1) * hs).sum(1)
            logits.append(self.out(torch.cat([context, h], -1)))
        return torch.stack(logits, 1), None


def timed_steps(model, optimizer, batches, precision):
    device = torch.device("cpu")
    tokens = 0
    start = time.perf_counter()
    for batch in batches:
        with autocast(precision, device):
            logits, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
        loss = loss_fn(logits, batch.tgt_out_BT)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        tokens += batch.n_target_tokens
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed updates per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config("examples/date.yaml")
    splits = load_splits(cfg.data)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in splits.train)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in splits.train)
    data = encode_pairs(splits.train, src_vocab, tgt_vocab, True)
    batches = list(iterate_batches(data, 128, True, True, torch.Generator().manual_seed(0)))[
        : args.steps + 5
    ]

    torch.manual_seed(0)
    systems = {
        "naive LSTMCell loop, fp32": (NaiveSeq2Seq(len(src_vocab), len(tgt_vocab)), "fp32"),
        "jumok, fp32": (build_model(cfg.model, len(src_vocab), len(tgt_vocab)), "fp32"),
        "jumok, bf16 autocast": (build_model(cfg.model, len(src_vocab), len(tgt_vocab)), "bf16"),
    }
    optimizers = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, (m, _) in systems.items()}
    for name, (model, precision) in systems.items():  # warm-up
        timed_steps(model, optimizers[name], batches[:5], precision)
    rates: dict[str, list[float]] = {k: [] for k in systems}
    for _ in range(args.rounds):
        for name, (model, precision) in systems.items():
            rates[name].append(timed_steps(model, optimizers[name], batches[5:], precision))
    base = max(rates["naive LSTMCell loop, fp32"])
    print(
        f"date task, batch 128, {args.steps} updates x {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}"
    )
    print(f"{'system':32} {'target tok/s (best round)':>26} {'ratio to naive':>15}")
    for name, values in rates.items():
        best = max(values)
        print(f"{name:32} {best:>26,.0f} {best / base:>15.2f}")
        print(
            json.dumps(
                {
                    "benchmark": "date_train_throughput",
                    "system": name,
                    "target_tokens_per_s": round(best, 1),
                    "rounds": [round(v, 1) for v in values],
                    "ratio_to_naive": round(best / base, 3),
                    "threads": torch.get_num_threads(),
                }
            )
        )


if __name__ == "__main__":
    main()
