"""Why the book's dot-attention date model learns in 2-3 epochs and the same model on jumok's
default data layout does not.

The book (Deep Learning from Scratch 2, ch. 8) trains its ``AttentionSeq2seq`` on ``date.txt``,
whose sources are padded with spaces to 29 characters; it reverses the padded array, so the
encoder reads the padding before the reversed sentence, and it uses one character vocabulary for
both sides, so the decoder scores all 59 characters. jumok by default strips the padding (and
masks it) and builds one vocabulary per side. This script trains the book's model (jumok's
``Seq2Seq`` with ``model.init: book`` and ``decoder.init: last_h``, which computes exactly the
book's forward pass) on the book's split of ``date.txt`` in a plain loop, with each of those two
choices switched, and prints test exact match per epoch.

    python benchmarks/book_padding.py --data ../shared/data/dlfs2/date.txt --epochs 2
    python benchmarks/book_padding.py --layout stripped --vocab separate   # jumok's defaults

Measured figures are in docs/ladder.md. Each run takes about 40 s per epoch on 2 threads.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from jumok.config import ModelConfig
from jumok.model.seq2seq import build_model

SPECIALS = 4  # jumok reserves ids 0-3 (pad, bos, eos, unk); the book's ids are shifted past them


def load(path: str, layout: str, vocab: str):
    """The book's split (seed 1984, last 10% test) as id arrays in the encoder's reading order."""
    lines = open(path, encoding="utf-8").read().splitlines()
    chars = sorted(set("".join(lines)))
    ids = {c: i + SPECIALS for i, c in enumerate(chars)}
    sources = [line[: line.index("_")] for line in lines]
    targets = [line[line.index("_") :] for line in lines]  # '_' starts the decoder
    order = np.random.RandomState(1984).permutation(len(lines))  # the book's load_data
    width = len(sources[0])
    src_NS = np.zeros((len(lines), width), dtype=np.int64)
    len_N = np.zeros(len(lines), dtype=np.int64)
    for row, text in enumerate(sources):
        if layout == "fixed":  # the book: padded, reversed as a whole -> padding read first
            src_NS[row] = [ids[c] for c in text[::-1]]
            len_N[row] = width
        else:  # jumok's default: the sentence alone, reversed, padding masked
            kept = text.rstrip(" ")
            src_NS[row, : len(kept)] = [ids[c] for c in kept[::-1]]
            len_N[row] = len(kept)
    tgt_NT = np.array([[ids[c] for c in t] for t in targets])
    n_src, n_tgt = len(chars) + SPECIALS, len(chars) + SPECIALS
    if vocab == "separate":  # only the target's own characters in the decoder
        used = np.unique(tgt_NT)
        remap = np.zeros(n_tgt, dtype=np.int64)
        remap[used] = np.arange(len(used)) + SPECIALS
        tgt_NT, n_tgt = remap[tgt_NT], len(used) + SPECIALS
    split = len(lines) - len(lines) // 10
    train, test = order[:split], order[split:]
    pick = lambda rows: tuple(torch.from_numpy(a[rows]) for a in (src_NS, len_N, tgt_NT))  # noqa: E731
    return pick(train), pick(test), n_src, n_tgt


def exact_match(model, src_NS, len_N, tgt_NT) -> float:
    """Greedy decoding of the whole test set, the book's ``eval_seq2seq`` criterion."""
    model.eval()
    with torch.no_grad():
        enc = model.encode(src_NS, len_N)
        state, token_B, out = enc.state, tgt_NT[:, 0], []
        for _ in range(tgt_NT.shape[1] - 1):
            logits_BV, state, _ = model.decode_step(token_B, state, enc)
            token_B = logits_BV.argmax(-1)
            out.append(token_B.unsqueeze(1))
    model.train()
    return float((torch.cat(out, 1) == tgt_NT[:, 1:]).all(1).float().mean()) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/dlfs2/date.txt")
    parser.add_argument("--layout", choices=["fixed", "stripped"], default="fixed")
    parser.add_argument("--vocab", choices=["shared", "separate"], default="shared")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (src, lens, tgt), test, n_src, n_tgt = load(args.data, args.layout, args.vocab)
    torch.manual_seed(args.seed)
    cfg = ModelConfig.model_validate(
        {
            "encoder": {"embedding_size": 16, "hidden_size": 256},
            "decoder": {"embedding_size": 16, "hidden_size": 256, "init": "last_h"},
            "attention": "dot",
            "init": "book",
        }
    )
    model = build_model(cfg, n_src, n_tgt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, args.epochs + 1):
        started, losses = time.perf_counter(), []
        perm = torch.randperm(len(src))
        for start in range(0, len(src) - 127, 128):  # the book drops the last partial batch
            rows = perm[start : start + 128]
            logits_BTV, _ = model(src[rows], lens[rows], tgt[rows, :-1])
            loss = F.cross_entropy(logits_BTV.flatten(0, 1), tgt[rows, 1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append(loss.item())
        result = {
            "layout": args.layout,
            "vocab": args.vocab,
            "epoch": epoch,
            "train_loss": round(float(np.mean(losses)), 4),
            "test_exact_match": round(exact_match(model, *test), 2),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
