"""The training loop: data -> vocabularies -> model -> Adam updates -> validation -> checkpoints.

A run directory holds everything about one run::

    config.yaml        the resolved config (after --set overrides)
    vocab.json         source and target vocabularies
    data/*.tsv         the generated splits, when the config generates its data
    metrics.jsonl      one JSON object per validation (every epoch)
    best.safetensors   weights + config + vocabularies with the best dev exact match
    last.safetensors   the same, after the latest epoch (or the wall-clock budget)

A directory that already holds a run is never reused: :func:`prepare_run_dir` refuses it.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from jumok.checkpoint import atomic_write_text, save_checkpoint
from jumok.config import Config, config_to_yaml
from jumok.data import EncodedPairs, Pair, encode_pairs, iterate_batches, load_splits, write_pairs
from jumok.errors import RunDirError
from jumok.metrics import exact_match, token_accuracy
from jumok.model import Seq2Seq, build_model
from jumok.search import greedy
from jumok.vocab import PAD_ID, Vocab, detokenize_chars, tokenize_chars

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors")


@dataclass
class EpochRecord:
    """What one validation measured; one line of ``metrics.jsonl``."""

    epoch: int
    step: int
    train_loss: float
    dev_loss: float
    dev_exact_match: float
    dev_token_accuracy: float
    epoch_seconds: float
    elapsed_seconds: float
    train_tokens_per_second: float


@dataclass
class TrainResult:
    run_dir: Path
    history: list[EpochRecord]
    best_exact_match: float
    stopped_by_budget: bool
    src_vocab: Vocab
    tgt_vocab: Vocab
    test_pairs: list[Pair]


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir``, refusing one that already holds a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken:
        raise RunDirError(
            f"{run_dir}: already holds a run ({', '.join(taken)}); nothing was changed. "
            "Choose a new --run-dir (or delete this one yourself)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunDirError("train.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def loss_fn(logits_BTV: torch.Tensor, tgt_out_BT: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per real target token (padding ignored)."""
    return F.cross_entropy(
        logits_BTV.reshape(-1, logits_BTV.shape[-1]).float(),
        tgt_out_BT.reshape(-1),
        ignore_index=PAD_ID,
    )


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    cfg: Config,
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    """Train the model described by ``cfg`` and write the run into ``run_dir``."""
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir)
    start = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)

    splits = load_splits(cfg.data)
    for note in splits.notes:
        log(note)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in splits.train)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in splits.train)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    atomic_write_text(
        run_dir / "vocab.json",
        json.dumps({"source": src_vocab.tokens, "target": tgt_vocab.tokens}, ensure_ascii=False),
    )
    if cfg.data.generate is not None:
        (run_dir / "data").mkdir(exist_ok=True)
        for name in ("train", "dev", "test"):
            write_pairs(run_dir / "data" / f"{name}.tsv", getattr(splits, name))

    d = cfg.data
    train_data = encode_pairs(
        splits.train,
        src_vocab,
        tgt_vocab,
        d.reverse_source,
        d.max_source_length,
        d.max_target_length,
    )
    if train_data.dropped:
        log(
            f"dropped {train_data.dropped} train pairs longer than data.max_source_length "
            f"({d.max_source_length}) or data.max_target_length ({d.max_target_length})"
        )
    dev_data = encode_pairs(splits.dev, src_vocab, tgt_vocab, d.reverse_source)
    log(f"vocabulary: {len(src_vocab)} source, {len(tgt_vocab)} target tokens (4 special)")

    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; device {device}; precision {cfg.train.precision}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    generator = torch.Generator().manual_seed(cfg.train.seed)

    history: list[EpochRecord] = []
    best = -1.0
    step = 0
    stopped = False
    metrics_path = run_dir / "metrics.jsonl"
    for epoch in range(1, cfg.train.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        loss_sum, token_sum = 0.0, 0
        n_batches = math.ceil(len(train_data) / cfg.train.batch_size)
        bar = tqdm(
            iterate_batches(train_data, cfg.train.batch_size, True, cfg.train.bucketing, generator),
            total=n_batches,
            desc=f"epoch {epoch}/{cfg.train.epochs}",
            disable=not progress,
            leave=False,
            file=sys.stderr,
            mininterval=0.5,
        )
        for batch in bar:
            batch = batch.to(device)
            with autocast(cfg.train.precision, device):
                logits_BTV, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
            loss = loss_fn(logits_BTV, batch.tgt_out_BT)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            optimizer.step()
            step += 1
            n_tokens = batch.n_target_tokens
            loss_sum += loss.item() * n_tokens
            token_sum += n_tokens
            if progress:
                elapsed = time.perf_counter() - epoch_start
                bar.set_postfix(
                    loss=f"{loss_sum / token_sum:.4f}",
                    tok_s=f"{token_sum / elapsed:,.0f}",
                    refresh=False,
                )
            if cfg.train.max_seconds and time.perf_counter() - start >= cfg.train.max_seconds:
                stopped = True
                break
        bar.close()
        epoch_seconds = time.perf_counter() - epoch_start
        dev_loss, dev_em, dev_acc = evaluate(model, dev_data, splits.dev, tgt_vocab, cfg, device)
        record = EpochRecord(
            epoch=epoch,
            step=step,
            train_loss=loss_sum / max(token_sum, 1),
            dev_loss=dev_loss,
            dev_exact_match=dev_em,
            dev_token_accuracy=dev_acc,
            epoch_seconds=epoch_seconds,
            elapsed_seconds=time.perf_counter() - start,
            train_tokens_per_second=token_sum / epoch_seconds,
        )
        history.append(record)
        with open(metrics_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(record)) + "\n")
        info = {"epoch": epoch, "step": step, "dev_exact_match": dev_em, "dev_loss": dev_loss}
        save_checkpoint(run_dir / "last.safetensors", model, cfg, src_vocab, tgt_vocab, info)
        if dev_em > best:
            best = dev_em
            save_checkpoint(run_dir / "best.safetensors", model, cfg, src_vocab, tgt_vocab, info)
        log(
            f"epoch {epoch}/{cfg.train.epochs}  train loss {record.train_loss:.4f}  "
            f"dev loss {dev_loss:.4f}  dev exact match {100 * dev_em:.2f}%  "
            f"({epoch_seconds:.1f} s, {record.train_tokens_per_second:,.0f} target tok/s)"
        )
        if stopped:
            log(f"stopped at the wall-clock budget (train.max_seconds = {cfg.train.max_seconds})")
            break
    return TrainResult(run_dir, history, best, stopped, src_vocab, tgt_vocab, splits.test)


@torch.no_grad()
def evaluate(
    model: Seq2Seq,
    data: EncodedPairs,
    pairs: list[Pair],
    tgt_vocab: Vocab,
    cfg: Config,
    device: torch.device,
) -> tuple[float, float, float]:
    """Teacher-forced loss, greedy exact match and token accuracy on a split."""
    if len(data) == 0:
        return float("nan"), 0.0, 0.0
    model.eval()
    loss_sum, token_sum = 0.0, 0
    hyps: list[str] = [""] * len(data)
    max_length = max(int(data.tgt_len_N.max()) + 5, 1)
    for batch in iterate_batches(data, cfg.train.eval_batch_size, bucketing=True):
        batch = batch.to(device)
        logits_BTV, _ = model(batch.src_BS, batch.src_len_B, batch.tgt_in_BT)
        n_tokens = batch.n_target_tokens
        loss_sum += float(loss_fn(logits_BTV, batch.tgt_out_BT)) * n_tokens
        token_sum += n_tokens
        for i, hyp in zip(
            batch.index_B.tolist(),
            greedy(model, batch.src_BS, batch.src_len_B, max_length),
            strict=True,
        ):
            hyps[i] = detokenize_chars(tgt_vocab.decode(hyp.token_ids))
    refs = [t for _, t in pairs]
    return (
        loss_sum / token_sum,
        exact_match(hyps, refs),
        token_accuracy([list(h) for h in hyps], [list(r) for r in refs]),
    )
