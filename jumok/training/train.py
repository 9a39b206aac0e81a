"""The training loop: data -> vocabularies -> model -> Adam updates -> validation -> checkpoints.

A run directory holds everything about one run::

    config.yaml        the resolved config (after --set overrides)
    vocab.json         source and target vocabularies
    data/*.tsv         the generated splits, when the config generates its data
    metrics.jsonl      one JSON object per validation (every epoch, or every train.valid_every
                       updates); metrics.csv holds the same table. dev_bleu and dev_chrf are
                       null on generated data unless early stopping reads them
    learning_curve.png loss and dev scores so far, redrawn at validations at most every
                       CURVE_EVERY_SECONDS, and at the end
    best.safetensors   weights + config + vocabularies with the best dev score
                       (train.early_stopping.metric)
    last.safetensors   the same, after the latest validation
    checkpoints/       the k best (train.keep_best > 1)
    resume.state       everything needed to continue the run exactly (see jumok.training.resume)
    tensorboard/       the same metrics as TensorBoard events, when tensorboard is installed

Every file is written atomically (a temporary file, then a rename; see jumok.checkpoint), so an
interruption at any moment leaves each file either as it was or complete. A directory that
already holds a run is never reused: :func:`prepare_run_dir` refuses it; ``train(...,
resume=True)`` (``jumok train --resume RUN_DIR``) continues an unfinished one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from jumok.checkpoint import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    remove_temporary_files,
    save_checkpoint,
)
from jumok.config import Config, TrainConfig, config_to_yaml
from jumok.data.splits import (
    Batch,
    EncodedPairs,
    Pair,
    Splits,
    batch_order,
    encode_pairs,
    iterate_batches,
    load_splits,
    pairs_text,
    streamed_batches,
)
from jumok.data.vocab import PAD_ID, Vocab
from jumok.data.vocabularies import Vocabularies, build_vocabularies
from jumok.decoding import copies
from jumok.decoding.greedy import greedy_stream
from jumok.errors import ConfigError, DataError, RunDirError, WriteError
from jumok.fast import packing, runtime
from jumok.fast.feeding import without_token_tables
from jumok.fast.sliced_loss import release_workspaces
from jumok.model.seq2seq import Seq2Seq, build_model
from jumok.training.distributed import SINGLE, World, current_world
from jumok.training.metrics import bleu, chrf, exact_match, token_accuracy
from jumok.training.resume import (
    STATE_FILE,
    Progress,
    SignalGuard,
    TrainingInterrupted,
    check_vocabularies,
    collect,
    keep_first_rows,
    load_resumable,
    restore,
    resume_command,
)
from jumok.training.resume import save_state as save_resume_state
from jumok.training.schedules import EarlyStopping, Schedule

RUN_MARKERS = (
    "config.yaml",
    "metrics.jsonl",
    "best.safetensors",
    "last.safetensors",
    STATE_FILE,
)
METRICS = {
    "exact_match": "dev_exact_match",
    "bleu": "dev_bleu",
    "chrf": "dev_chrf",
    "loss": "dev_loss",
}


@dataclass
class EpochRecord:
    """What one validation measured; one line of ``metrics.jsonl`` and of ``metrics.csv``.

    ``epoch_seconds`` and ``train_tokens_per_second`` cover the training since the previous
    validation (a whole epoch unless ``train.valid_every`` is set).
    """

    epoch: int
    step: int
    train_loss: float
    dev_loss: float
    dev_exact_match: float
    dev_token_accuracy: float
    dev_bleu: float | None  # None on generated data, unless early stopping reads it
    dev_chrf: float | None
    lr: float
    epoch_seconds: float
    elapsed_seconds: float
    train_tokens_per_second: float


ValidationRecord = EpochRecord


@dataclass
class TrainResult:
    run_dir: Path
    history: list[EpochRecord]
    best_exact_match: float
    stopped_by_budget: bool
    stopped_early: bool
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
            + (f"; if it is unfinished: {resume_command(run_dir)}" if STATE_FILE in taken else "")
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def _clear(run_dir: Path) -> None:
    """Empty a run folder this process created and wrote nothing lasting to."""
    for item in sorted(run_dir.rglob("*"), reverse=True):
        item.rmdir() if item.is_dir() else item.unlink()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunDirError("train.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def loss_fn(
    logits_BTV: torch.Tensor,
    tgt_out_BT: torch.Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy per real target token (padding ignored): the mean, or the sum."""
    return F.cross_entropy(
        logits_BTV.reshape(-1, logits_BTV.shape[-1]).float(),
        tgt_out_BT.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the lecture), or AdamW when ``train.weight_decay`` > 0.

    PyTorch's fused implementation (one kernel over all parameters) where the device has it: on
    the Multi30k model it makes a CPU update ~10% faster than the default for-each one.
    """
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None  # None: the default
    if cfg.weight_decay > 0:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=cfg.lr, fused=fused)


def accumulated_update(
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    cfg: TrainConfig,
    device: torch.device,
    world: World = SINGLE,
) -> tuple[float, int]:
    """One update from the gradients of ``batches`` (``train.accumulate`` of them).

    Each batch's summed loss is divided by the token count of *all* of them, so the gradient is
    the one of a single batch holding every example (the same mean over the same tokens). Under
    data-parallel training every rank is given the same whole batches, computes the loss of its
    own rows only (:meth:`Batch.shard`), and the gradients are summed over the ranks: the
    same gradient again.

    Returns:
        (summed loss, number of target tokens) over the batches (over all ranks).
    """
    total_tokens = sum(b.n_target_tokens for b in batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for batch in batches:
        batch = batch.shard(world.rank, world.size)
        if batch.src_len_B.shape[0] == 0:
            continue  # fewer rows than ranks: this rank adds nothing to the gradient
        batch = batch.to(device)
        with autocast(cfg.precision, device):  # the output layer and the loss in slices
            loss = model.loss(
                batch.src_BS,
                batch.src_len_B,
                batch.tgt_in_BT,
                batch.tgt_out_BT,
                cfg.label_smoothing,
            )
        (loss / total_tokens).backward()
        loss_sum += loss.item()
    if world.size > 1:
        params = [p for p in model.parameters() if p.requires_grad]
        (loss_sum,) = world.sum_gradients(params, loss_sum)
    clip_gradients(model, optimizer, cfg.clip_grad_norm)
    optimizer.step()
    return loss_sum, total_tokens


def clip_gradients(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float
) -> None:
    """Scale the gradients so that their global norm is at most ``max_norm`` (0: leave them).

    ``clip_grad_norm_`` multiplies every gradient by ``min(1, max_norm / norm)``, one pass over
    all of them. With PyTorch's fused Adam (:func:`make_optimizer`) the factor is handed to the
    optimizer instead, as its ``grad_scale`` (what ``torch.amp.GradScaler`` uses to unscale): the
    fused step divides each gradient by it as it reads it, so the extra pass is gone (on the
    Task B model it took ~1.7 % of a CPU update under torch.profiler). The gradients and the
    step are the same (tested against ``clip_grad_norm_``).
    """
    fused = getattr(optimizer, "defaults", {}).get("fused")
    if fused:
        optimizer.grad_scale = None  # type: ignore[attr-defined]
    if not max_norm:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if not fused:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s own factor
    optimizer.grad_scale = factor.reciprocal()  # type: ignore[attr-defined]


def grouped(items: Iterator[Batch], size: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``size`` (the last one may be shorter)."""
    group: list[Batch] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    cfg: Config,
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    resume: bool = False,
    handle_signals: bool = False,
) -> TrainResult:
    """Train the model described by ``cfg`` and write the run into ``run_dir``.

    Args:
        resume: continue the unfinished run in ``run_dir`` from its ``resume.state``; ``cfg``
            must be the run's config (see :func:`jumok.training.resume.load_resumable`). The result is
            the one an uninterrupted run gives.
        handle_signals: the first SIGINT/SIGTERM finishes the current update, saves a
            resumable state and raises :class:`~jumok.training.resume.TrainingInterrupted`; a second
            exits at once (``jumok train`` sets this).

    Inside a ``torch.distributed`` process group (``torchrun``; see jumok.training.distributed), every
    process calls this with the same arguments; they train one model on the shared global batch
    and only rank 0 writes ``run_dir`` and calls ``log``.

    Raises:
        RunDirError: ``run_dir`` already holds a run (or, with ``resume``, cannot be resumed).
        WriteError: a file could not be written (a full disk); what was on disk is unchanged.
    """
    run_dir = Path(run_dir)
    world = current_world()
    saved, created = None, False
    if not world.is_main:
        log, progress = _quiet, False
    elif resume:
        # Read onto the CPU: the RNG states must be CPU tensors, and loading the model and
        # optimizer state dicts copies each tensor to its parameter's device.
        saved = load_resumable(run_dir, cfg)
    else:
        created = not run_dir.exists() or not any(run_dir.iterdir())
        prepare_run_dir(run_dir)
    if resume:
        saved = world.broadcast(saved)  # the other ranks may not see rank 0's disk
    with SignalGuard(run_dir, enabled=handle_signals) as signals:
        try:
            return _train(cfg, run_dir, log, progress, saved, signals, world)
        except (DataError, ConfigError):
            # Bad data found while setting up a new run: take back the folder this call made
            # (it held nothing before), so that fixing the data and re-running just works.
            if created and not (run_dir / STATE_FILE).exists():
                _clear(run_dir)
            raise
        except WriteError as err:
            if not (run_dir / STATE_FILE).exists():
                raise
            raise WriteError(
                f"{err}. Once there is room, continue from the last saved state with: "
                f"{resume_command(run_dir)}"
            ) from None


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


def _shared_vocabularies(
    cfg: Config, splits: Splits, run_dir: Path, log: Callable[[str], None], world: World
) -> Vocabularies:
    """:func:`build_vocabularies` on rank 0; the other ranks load rank 0's tokenizer files and
    build the vocabularies from their own copy of the data, which must give the same ones."""
    if world.is_main:
        v = build_vocabularies(cfg, splits, run_dir, log)
        world.broadcast(v.files)
    else:
        with tempfile.TemporaryDirectory(prefix="jumok-rank") as folder:
            for name, content in world.broadcast({}).items():
                (Path(folder) / name).write_bytes(content)
            v = build_vocabularies(cfg, splits, Path(folder), log)
    if world.size > 1:
        tokens = [v.src_vocab.tokens, v.tgt_vocab.tokens]
        if world.any(world.broadcast(tokens) != tokens):
            raise DataError(
                "the training processes built different vocabularies: every rank must read "
                f"the same data (check {cfg.data.train or 'data.generate'} on every machine)"
            )
    return v


def _train(
    cfg: Config,
    run_dir: Path,
    log: Callable[[str], None],
    progress: bool,
    saved: dict | None,
    signals: SignalGuard,
    world: World,
) -> TrainResult:
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    runtime.configure(t.kernel_cache)
    device = world.place(resolve_device(t.device))
    seed_everything(t.seed)

    splits = load_splits(cfg.data)
    for note in splits.notes:
        log(note)
    d = cfg.data
    v = _shared_vocabularies(cfg, splits, run_dir, log, world)
    src_tok, tgt_tok, src_vocab, tgt_vocab = v.src_tok, v.tgt_tok, v.src_vocab, v.tgt_vocab
    files, held_out, train_pairs = v.files, v.held_out, v.train_pairs
    vocab_tokens = {"source": src_vocab.tokens, "target": tgt_vocab.tokens}
    if saved is not None:
        check_vocabularies(saved, vocab_tokens, run_dir)
    elif world.is_main:  # rank 0 writes the run directory
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        atomic_write_text(run_dir / "vocab.json", json.dumps(vocab_tokens, ensure_ascii=False))
        if cfg.data.generate is not None:
            (run_dir / "data").mkdir(exist_ok=True)
            for name in ("train", "dev", "test"):
                atomic_write_text(
                    run_dir / "data" / f"{name}.tsv", pairs_text(getattr(splits, name))
                )

    def encode(pairs: list[Pair]) -> EncodedPairs:
        return encode_pairs(
            pairs,
            src_vocab,
            tgt_vocab,
            d.reverse_source,
            d.max_source_length,
            d.max_target_length,
            src_tok.tokenize,
            tgt_tok.tokenize,
            d.fill_source_to,
        )

    # Streaming: measure the epoch once (lengths only) so that progress and schedules know it.
    if d.streaming:
        train_data = _lengths_only(train_pairs(), src_tok, tgt_tok, d)
    else:
        train_data = encode(splits.train)
    if len(train_data.src_len_N) == 0:
        raise DataError(
            f"{d.train or 'the generated data'}: all {train_data.dropped} train pairs are longer "
            f"than data.max_source_length ({d.max_source_length}) or data.max_target_length "
            f"({d.max_target_length}) tokens; raise the limits, or check that the file holds "
            "one sentence pair per line"
        )
    if train_data.dropped:
        log(
            f"dropped {train_data.dropped} train pairs longer than data.max_source_length "
            f"({d.max_source_length}) or data.max_target_length ({d.max_target_length})"
        )
    dev_data = encode_pairs(
        splits.dev,
        src_vocab,
        tgt_vocab,
        d.reverse_source,
        tokenize_source=src_tok.tokenize,
        tokenize_target=tgt_tok.tokenize,
        fill_source_to=d.fill_source_to,
    )
    log(f"vocabulary: {len(src_vocab)} source, {len(tgt_vocab)} target tokens (4 special)")

    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; device {device}; precision {t.precision}")
    if world.size > 1:
        unit = "target tokens" if t.batch_type == "tokens" else "sentence pairs"
        log(
            f"data parallel: {world.size} processes share each batch of {t.batch_size} {unit} "
            f"(train.batch_size is the global batch; about {t.batch_size / world.size:g} each)"
        )
    optimizer = make_optimizer(model, t)
    generator = torch.Generator().manual_seed(t.seed)  # orders the batches
    by_tokens = t.batch_type == "tokens"
    tokens_N = train_data.tgt_len_N if by_tokens else None
    batches_per_epoch = len(
        batch_order(
            train_data.src_len_N, t.batch_size, True, t.bucketing, torch.Generator(), tokens_N
        )
    )
    updates_per_epoch = math.ceil(batches_per_epoch / t.accumulate)
    total_steps = min(t.max_steps or math.inf, t.epochs * updates_per_epoch)
    stopper = EarlyStopping(t.early_stopping)
    schedule = Schedule(optimizer, t.schedule, t.lr, int(total_steps), stopper.mode)
    detok = lambda ids: tgt_tok.detokenize(tgt_vocab.decode(ids))  # noqa: E731

    if saved is None:
        p = Progress(epoch_data_rng=generator.get_state())
    else:
        p = restore(saved, model, optimizer, schedule, stopper)
        if world.is_main:
            _forget_unsaved_rows(run_dir, len(p.history), log)
            for folder in (run_dir, run_dir / "checkpoints"):
                if folder.is_dir():
                    remove_temporary_files(folder)
        log(
            f"resuming {run_dir} at epoch {p.epoch}/{t.epochs}, update {p.step} "
            f"({p.updates_in_epoch} of {updates_per_epoch} done in this epoch)"
        )
    world.seed_dropout(t.seed, p.step)
    board = (
        _tensorboard(run_dir, purge_step=p.step + 1 if saved is not None else None)
        if world.is_main
        else None
    )
    start = time.perf_counter() - p.elapsed_seconds
    since_time = time.perf_counter() - p.since_seconds
    stopped = stopped_early = False

    def save_state() -> None:
        if not world.is_main:
            return
        now = time.perf_counter()
        p.elapsed_seconds, p.since_seconds = now - start, now - since_time
        state = collect(p, model, optimizer, schedule, stopper, cfg, vocab_tokens)
        save_resume_state(run_dir / STATE_FILE, state)

    def validate(epoch: int) -> None:
        nonlocal stopped_early, since_time
        seconds = time.perf_counter() - since_time
        release_workspaces()  # the loss's buffers (jumok.fast.sliced_loss): decoding needs the memory more
        scores = evaluate(model, dev_data, splits.dev, detok, cfg, device)
        runtime.release_free_memory()
        record = EpochRecord(
            epoch=epoch,
            step=p.step,
            train_loss=p.since_loss / max(p.since_tokens, 1),
            dev_loss=scores.loss,
            dev_exact_match=scores.exact_match,
            dev_token_accuracy=scores.token_accuracy,
            dev_bleu=scores.bleu,
            dev_chrf=scores.chrf,
            lr=schedule.lr,
            epoch_seconds=seconds,
            elapsed_seconds=time.perf_counter() - start,
            train_tokens_per_second=p.since_tokens / max(seconds, 1e-9),
        )
        p.history.append(asdict(record))
        p.validated_at = p.step
        if world.is_main:
            _write_metrics(run_dir, record, board)
        # Rank 0's score decides on every rank (the others computed the same, or nearly).
        value = world.broadcast(getattr(record, METRICS[t.early_stopping.metric]))
        improved = stopper.update(value)
        schedule.after_validation(value)
        if world.is_main:
            publish(epoch, record, scores, seconds, improved, value)
        if stopper.should_stop or stopper.reached_target:
            stopped_early = True
        model.train()
        p.since_loss, p.since_tokens = 0.0, 0
        since_time = time.perf_counter()

    def publish(epoch, record, scores, seconds, improved, value) -> None:
        """Rank 0's part of a validation: checkpoints, the log, the learning curve."""
        info = {
            "epoch": epoch,
            "step": p.step,
            **{k: getattr(record, v) for k, v in METRICS.items()},
        }
        save_checkpoint(run_dir / "last.safetensors", model, cfg, src_vocab, tgt_vocab, info, files)
        if improved:
            save_checkpoint(
                run_dir / "best.safetensors", model, cfg, src_vocab, tgt_vocab, info, files
            )
        if t.keep_best > 1:
            _keep_best(run_dir, model, cfg, (src_vocab, tgt_vocab, files), info, value, stopper)
        where = f"epoch {epoch}/{t.epochs}" + (f" step {p.step}" if t.valid_every else "")
        log(
            f"{where}  train loss {record.train_loss:.4f}  dev loss {scores.loss:.4f}  "
            f"dev exact match {100 * scores.exact_match:.2f}%"
            + (f"  BLEU {scores.bleu:.2f}  chrF {scores.chrf:.2f}" if _is_text(cfg) else "")
            + f"  ({seconds:.1f} s, {record.train_tokens_per_second:,.0f} target tok/s)"
        )
        for source, ref, hyp in _examples(splits.dev, scores.hyps, t.examples):
            log(f"    {source!r} -> {hyp!r}" + ("" if hyp == ref else f"  (reference {ref!r})"))
        if time.perf_counter() - drawn_at[0] >= CURVE_EVERY_SECONDS:
            draw_curve()

    # When learning_curve.png was drawn (first: CURVE_EVERY_SECONDS into the run, so that a
    # short run draws it once, at the end), and of how many validations.
    drawn_at, drawn_rows = [time.perf_counter()], [0]

    def draw_curve() -> None:
        _draw_curve(run_dir, p.history)
        drawn_at[0], drawn_rows[0] = time.perf_counter(), len(p.history)

    def stop_if_signalled() -> None:
        # torchrun passes a signal to every rank, not always between the same two updates.
        if world.any(signals.received is not None):
            save_state()
            raise TrainingInterrupted(signals.received or signal.SIGTERM, run_dir, p.step)

    if saved is None:
        save_state()  # resumable from the very start
    streamed_dropped = [0]
    try:
        stop_if_signalled()
        for epoch in range(p.epoch, t.epochs + 1):
            model.train()
            # The epoch's batches depend only on the generator's state when it began: resuming
            # mid-epoch rebuilds them and skips the updates already done (see jumok.training.resume).
            generator.set_state(p.epoch_data_rng)
            if d.streaming:
                batches = streamed_batches(
                    d,
                    held_out,
                    encode,
                    t.batch_size,
                    t.bucketing,
                    by_tokens,
                    generator,
                    t.seed + epoch,
                    streamed_dropped,
                )
            else:
                batches = iterate_batches(
                    train_data, t.batch_size, True, t.bucketing, generator, by_tokens
                )
            groups = itertools.islice(grouped(batches, t.accumulate), p.updates_in_epoch, None)
            bar = tqdm(
                groups,
                total=updates_per_epoch,
                initial=p.updates_in_epoch,
                desc=f"epoch {epoch}/{t.epochs}",
                disable=not progress,
                leave=False,
                file=sys.stderr,
                mininterval=0.5,
            )
            with contextlib.closing(bar):
                for group in bar:
                    loss_sum, n_tokens = accumulated_update(
                        model, optimizer, group, t, device, world
                    )
                    schedule.after_update()
                    p.step += 1
                    p.updates_in_epoch += 1
                    p.since_loss += loss_sum
                    p.since_tokens += n_tokens
                    if p.step % TRIM_EVERY == 0:
                        runtime.release_free_memory()
                    if progress:
                        elapsed = time.perf_counter() - since_time
                        bar.set_postfix(
                            loss=f"{p.since_loss / max(p.since_tokens, 1):.4f}",
                            tok_s=f"{p.since_tokens / max(elapsed, 1e-9):,.0f}",
                            lr=f"{schedule.lr:.2e}",
                            refresh=False,
                        )
                    if t.max_seconds and world.any(time.perf_counter() - start >= t.max_seconds):
                        stopped = True
                    if t.max_steps and p.step >= t.max_steps:
                        stopped = True
                    validated = bool(stopped or (t.valid_every and p.step % t.valid_every == 0))
                    if validated:
                        validate(epoch)
                    if stopped or stopped_early:
                        break
                    if validated or (t.resume_every and p.step % t.resume_every == 0):
                        save_state()
                    stop_if_signalled()
            if p.validated_at != p.step and not t.valid_every:
                validate(epoch)
            elif p.validated_at != p.step and t.valid_every and epoch == t.epochs:
                validate(epoch)  # the last updates are validated too
            if stopped:
                why = (
                    "train.max_steps"
                    if t.max_steps and p.step >= t.max_steps
                    else "the wall-clock budget"
                )
                log(f"stopped at {why} (step {p.step})")
                break
            if stopped_early:
                if stopper.reached_target:
                    log(
                        f"stopped: dev {t.early_stopping.metric} {stopper.best:.4f} reached "
                        f"train.early_stopping.target {t.early_stopping.target} (step {p.step})"
                    )
                else:
                    log(
                        f"stopped early: dev {t.early_stopping.metric} did not improve for "
                        f"{t.early_stopping.patience} validations (best {stopper.best:.4f})"
                    )
                break
            if epoch < t.epochs:
                p.begin_epoch(epoch + 1, generator.get_state())
                save_state()
                stop_if_signalled()
        p.finished = True
        save_state()  # a finished run is not resumed
        if world.is_main and p.history and drawn_rows[0] != len(p.history):
            draw_curve()  # the last validations, when the curve was drawn less often
    finally:
        if board is not None:
            board.close()
    history = [EpochRecord(**row) for row in p.history]
    best_em = max((r.dev_exact_match for r in history), default=0.0)
    return TrainResult(
        run_dir, history, best_em, stopped, stopped_early, src_vocab, tgt_vocab, splits.test
    )


def _lengths_only(pairs, src_tok, tgt_tok, d) -> EncodedPairs:
    """Source and target lengths of a streamed training set, for counting its batches."""
    src_len, tgt_len, dropped = [], [], 0
    for source, target in pairs:
        n_src, n_tgt = len(src_tok.tokenize(source)), len(tgt_tok.tokenize(target))
        if n_src > d.max_source_length or n_tgt > d.max_target_length or not n_src:
            dropped += 1
            continue
        src_len.append(n_src)
        tgt_len.append(n_tgt + 1)
    empty = torch.zeros(len(src_len), 0, dtype=torch.long)
    return EncodedPairs(
        src_NS=empty,
        src_len_N=torch.tensor(src_len, dtype=torch.long),
        tgt_NT=empty,
        tgt_len_N=torch.tensor(tgt_len, dtype=torch.long),
        dropped=dropped,
    )


def _is_text(cfg: Config) -> bool:
    """BLEU and chrF are printed for real data, not the toy tasks scored by exact match."""
    return cfg.data.generate is None


def _examples(pairs: list[Pair], hyps: list[str], k: int) -> list[tuple[str, str, str]]:
    """The first k dev items with their outputs (the same ones at every validation)."""
    return [(s, r, h) for (s, r), h in zip(pairs[:k], hyps[:k], strict=False)]


def _write_metrics(run_dir: Path, record: EpochRecord, board) -> None:
    """Append one record to metrics.jsonl and metrics.csv (and TensorBoard when present).

    Each file is rewritten whole, atomically, with the new row at its end: an interruption
    leaves it with or without that row, never with half of it.
    """
    row = asdict(record)
    jsonl, csv_path = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
    atomic_write_bytes(jsonl, _read_or_empty(jsonl) + (json.dumps(row) + "\n").encode("utf-8"))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(row), lineterminator="\n")
    if not csv_path.exists():
        writer.writeheader()
    writer.writerow(row)
    atomic_write_bytes(csv_path, _read_or_empty(csv_path) + text.getvalue().encode("utf-8"))
    if board is not None:
        for key, value in row.items():
            if key not in ("epoch", "step"):
                board.add_scalar(key, value, record.step)
        board.flush()


def _read_or_empty(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _forget_unsaved_rows(run_dir: Path, rows: int, log: Callable[[str], None]) -> None:
    """Drop metrics rows written after the saved state: the resumed run writes them again."""
    dropped = keep_first_rows(run_dir / "metrics.jsonl", rows, header=False)
    keep_first_rows(run_dir / "metrics.csv", rows, header=True)
    if dropped:
        log(f"metrics: dropped {dropped} row(s) written after the saved state; redoing them")


def _tensorboard(run_dir: Path, purge_step: int | None = None):
    """A TensorBoard writer in run_dir/tensorboard when the tensorboard package is installed.

    ``purge_step`` (on resume) hides events a lost part of the run logged at that step or later.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


def _draw_curve(run_dir: Path, history: list[dict]) -> None:
    from jumok import plot

    with atomic_path(run_dir / "learning_curve.png") as tmp:
        plot.learning_curve(tmp, history)


def _keep_best(run_dir, model, cfg, vocabs_and_files, info, value, stopper) -> None:
    """Keep the k best validations as checkpoints/step-N.safetensors; delete the rest."""
    k = cfg.train.keep_best
    src_vocab, tgt_vocab, files = vocabs_and_files
    folder = run_dir / "checkpoints"
    folder.mkdir(exist_ok=True)
    index_path = folder / "index.json"
    kept = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else []
    # A resumed run may validate a step again that a lost part of the run already recorded.
    kept = [e for e in kept if e["step"] != info["step"]]
    kept.append({"step": info["step"], "value": value})
    reverse = stopper.mode == "max"
    kept.sort(
        key=lambda e: e["value"] if not math.isnan(e["value"]) else -math.inf, reverse=reverse
    )
    keep, drop = kept[:k], kept[k:]
    if any(e["step"] == info["step"] for e in keep):
        save_checkpoint(
            folder / f"step-{info['step']}.safetensors",
            model,
            cfg,
            src_vocab,
            tgt_vocab,
            info,
            files,
        )
    atomic_write_text(index_path, json.dumps(keep))
    for e in drop:
        (folder / f"step-{e['step']}.safetensors").unlink(missing_ok=True)


@dataclass
class DevScores:
    loss: float
    exact_match: float
    token_accuracy: float
    bleu: float | None
    chrf: float | None
    hyps: list[str]


# learning_curve.png is redrawn at a validation only if the last drawing is at least this old
# (drawing takes ~0.3 s, more than a validation of the date task), and always at the end.
CURVE_EVERY_SECONDS = 20.0


# Most target positions (rows x steps) per teacher-forced pass when validating: the encoder's
# and decoder's activations of 500 Multi30k dev sentences at once raised a run's resident memory
# by ~300 MB; ~180 rows at a time by ~180 MB, at the same speed. The date task's 1,000 dev items
# (~11 steps) take one or two passes.
LOSS_POSITIONS = 8192
# Updates between two trims of the C heap while training (see release_free_memory).
TRIM_EVERY = 50


@torch.no_grad()
def evaluate(
    model: Seq2Seq,
    data: EncodedPairs,
    pairs: list[Pair],
    detokenize: Callable[[list[int]], str],
    cfg: Config,
    device: torch.device,
) -> DevScores:
    """Teacher-forced loss; greedy exact match, token accuracy, BLEU and chrF on a split."""
    if len(data) == 0:
        return DevScores(float("nan"), 0.0, 0.0, 0.0, 0.0, [])
    model.eval()
    loss_sum, token_sum = 0.0, 0
    hyps: list[str] = [""] * len(data)
    max_length = max(int(data.tgt_len_N.max()) + 5, 1)
    batches = []
    for batch in iterate_batches(data, cfg.train.eval_batch_size, bucketing=True):
        batch = batch.to(device)
        # LOSS_POSITIONS (rows x steps) per teacher-forced pass; the output layer and the loss
        # a slice of rows at a time within it (jumok.fast.sliced_loss)
        per_pass = max(1, LOSS_POSITIONS // batch.tgt_in_BT.shape[1])
        for rows in torch.arange(batch.src_BS.shape[0]).split(per_pass):
            loss_sum += float(
                model.loss(
                    batch.src_BS[rows],
                    batch.src_len_B[rows],
                    batch.tgt_in_BT[rows],
                    batch.tgt_out_BT[rows],
                )
            )
        token_sum += batch.n_target_tokens
        batches.append(batch)
    # greedy search streams the batches through eval_batch_size slots (jumok.decoding.search), without
    # the decoding-only token tables (they would sit on top of training's memory), on a CPU
    # with the decoder's products packed (jumok.fast.packing: a copy around the same parameters)
    decoding = copies.float32_copy(model) if packing.available(device) else model
    with without_token_tables():
        found = greedy_stream(
            decoding,
            [(b.src_BS, b.src_len_B) for b in batches],
            max_length,
            cfg.train.eval_batch_size,
        )
    for batch, hyps_B in zip(batches, found, strict=True):
        for i, hyp in zip(batch.index_B.tolist(), hyps_B, strict=True):
            hyps[i] = detokenize(hyp.token_ids)
    refs = [t for _, t in pairs]
    # BLEU and chrF are for real text; the generated tasks are scored by exact match (their
    # two sacrebleu passes took ~0.08 s of each date validation), unless early stopping asks.
    text = _is_text(cfg) or cfg.train.early_stopping.metric in ("bleu", "chrf")
    return DevScores(
        loss=loss_sum / token_sum,
        exact_match=exact_match(hyps, refs),
        token_accuracy=token_accuracy([list(h) for h in hyps], [list(r) for r in refs]),
        bleu=bleu(hyps, refs) if text else None,
        chrf=chrf(hyps, refs) if text else None,
        hyps=hyps,
    )
