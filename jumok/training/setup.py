"""A run prepared to train: data, vocabularies, model, optimizer, schedule and where it stands.

:func:`prepare_run` does every step before the first update, in an order that matters: what
draws from the global random generators (initialising the model) comes after
:func:`seed_everything` and before :func:`~jumok.training.resume.restore`, so that a resumed run
continues its random streams exactly where they were saved.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jumok.checkpoint import atomic_write_text, save_checkpoint
from jumok.config import Config, DataConfig, TrainConfig, config_to_yaml
from jumok.data.splits import (
    EncodedPairs,
    Pair,
    Splits,
    batch_order,
    encode_pairs,
    load_splits,
)
from jumok.data.vocabularies import Vocabularies, build_vocabularies
from jumok.errors import ConfigError, DataError, RunDirError
from jumok.fast import runtime
from jumok.model.seq2seq import Seq2Seq, build_model
from jumok.training.distributed import World
from jumok.training.resume import (
    STATE_FILE,
    Progress,
    check_vocabularies,
    collect,
    restore,
    save_state,
)
from jumok.training.rundir import MetricFiles, tidy_for_resume, write_run_files
from jumok.training.schedules import EarlyStopping, Schedule
from jumok.training.update import make_optimizer


@dataclass
class Run:
    """Everything a run trains with, built by :func:`prepare_run`.

    ``progress`` is where the loop is (saved in resume.state); ``start`` and ``since`` are the
    ``time.perf_counter()`` readings at which the run and the training since the last validation
    began (moved back by the time a resumed run had already spent). ``files`` are rank 0's metric
    files (None on the other ranks, which write nothing).
    """

    cfg: Config
    run_dir: Path
    world: World
    device: torch.device
    splits: Splits
    vocabs: Vocabularies
    train_data: EncodedPairs  # lengths only when streaming: enough to count the batches
    dev_data: EncodedPairs
    model: Seq2Seq
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    stopper: EarlyStopping
    generator: torch.Generator  # orders the batches
    updates_per_epoch: int
    progress: Progress
    files: MetricFiles | None
    start: float
    since: float
    # The one-item counter of the pairs a streamed epoch drops (see streamed_batches).
    streamed_dropped: list[int] = field(default_factory=lambda: [0])

    def encode(self, pairs: list[Pair]) -> EncodedPairs:
        """Training pairs as ids, dropping those over the data.max_*_length limits."""
        return encode_training_pairs(pairs, self.cfg.data, self.vocabs)

    def detokenize(self, ids: list[int]) -> str:
        """Target ids back to text."""
        return self.vocabs.tgt_tok.detokenize(self.vocabs.tgt_vocab.decode(ids))

    def save_state(self) -> None:
        """Save resume.state (rank 0; the other ranks hold the same state)."""
        if not self.world.is_main:
            return
        p, now = self.progress, time.perf_counter()
        p.elapsed_seconds, p.since_seconds = now - self.start, now - self.since
        state = collect(
            p,
            self.model,
            self.optimizer,
            self.schedule,
            self.stopper,
            self.cfg,
            vocab_tokens(self.vocabs),
        )
        save_state(self.run_dir / STATE_FILE, state)

    def save_checkpoint(self, path: Path, info: dict[str, Any]) -> None:
        """The model's weights with the config, vocabularies and tokenizer files, at ``path``."""
        v = self.vocabs
        save_checkpoint(path, self.model, self.cfg, v.src_vocab, v.tgt_vocab, info, v.files)


def prepare_run(
    cfg: Config,
    run_dir: Path,
    log: Callable[[str], None],
    saved: dict | None,
    world: World,
    launched: float | None = None,
) -> Run:
    """Everything before the first update of a new run, or of a resumed one (``saved``).

    ``launched`` (a ``time.perf_counter()`` reading) is when the process began this run: the
    train.max_seconds clock counts from there, so preparing the data is part of the budget.

    Rank 0 writes the new run's first files (config.yaml, vocab.json, generated data).
    """
    t = cfg.train
    device = _set_up_process(t, world)
    splits = load_splits(cfg.data)
    for note in splits.notes:
        log(note)
    vocabs = shared_vocabularies(cfg, splits, run_dir, log, world)
    if saved is not None:
        check_vocabularies(saved, vocab_tokens(vocabs), run_dir)
    train_data, dev_data = _encode_splits(cfg.data, splits, vocabs, log)
    model = _build_model(cfg, vocabs, device, world, log)
    optimizer = make_optimizer(model, t)
    if saved is None and world.is_main:
        # Rank 0 writes the run directory, once the model is built: a model that does not fit
        # in memory fails before the folder holds a run, so the same --run-dir can be used again.
        write_run_files(run_dir, cfg, vocab_tokens(vocabs), splits, train_data.dropped)
    generator = torch.Generator().manual_seed(t.seed)  # orders the batches
    updates_per_epoch = count_updates(train_data, t)
    total_steps = min(t.max_steps or math.inf, t.epochs * updates_per_epoch)
    stopper = EarlyStopping(t.early_stopping)
    schedule = Schedule(optimizer, t.schedule, t.lr, int(total_steps), stopper.mode)
    if saved is None:
        progress = Progress(epoch_data_rng=generator.get_state())
    else:
        progress = restore(saved, model, optimizer, schedule, stopper)
        if world.is_main:
            tidy_for_resume(run_dir, len(progress.history), log)
            if "extended" in saved:  # the run's config is now the larger budget's
                atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        log(_resuming_line(run_dir, saved, progress, t.epochs, updates_per_epoch))
    world.seed_dropout(t.seed, progress.step)
    purge_step = progress.step + 1 if saved is not None else None
    files = MetricFiles(run_dir, purge_step) if world.is_main else None
    now = time.perf_counter()  # the speed clock starts once everything is set up
    return Run(
        cfg=cfg,
        run_dir=run_dir,
        world=world,
        device=device,
        splits=splits,
        vocabs=vocabs,
        train_data=train_data,
        dev_data=dev_data,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        stopper=stopper,
        generator=generator,
        updates_per_epoch=updates_per_epoch,
        progress=progress,
        files=files,
        start=(now if launched is None else launched) - progress.elapsed_seconds,
        since=now - progress.since_seconds,
    )


def _resuming_line(
    run_dir: Path, saved: dict, p: Progress, epochs: int, updates_per_epoch: int
) -> str:
    """Where a resumed run continues from (and, for a finished run, which budget was raised)."""
    if p.updates_in_epoch >= updates_per_epoch:
        where = f"after update {p.step}, the end of epoch {p.epoch}/{epochs}"
    else:
        where = (
            f"at epoch {p.epoch}/{epochs}, update {p.step} "
            f"({p.updates_in_epoch} of {updates_per_epoch} done in this epoch)"
        )
    if "extended" in saved:
        return f"extending the finished run {run_dir} ({saved['extended']}): continuing {where}"
    return f"resuming {run_dir} {where}"


def vocab_tokens(v: Vocabularies) -> dict[str, list[str]]:
    """The vocabularies' tokens, as vocab.json and resume.state keep them."""
    return {"source": v.src_vocab.tokens, "target": v.tgt_vocab.tokens}


def resolve_device(name: str) -> torch.device:
    """The torch device ``train.device`` names (``auto``: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunDirError("train.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's and PyTorch's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def _set_up_process(t: TrainConfig, world: World) -> torch.device:
    """Threads, kernel cache and seed of this process; returns the device it trains on."""
    if t.threads:
        torch.set_num_threads(t.threads)
    runtime.configure(t.kernel_cache)
    device = world.place(resolve_device(t.device))
    seed_everything(t.seed)
    return device


def shared_vocabularies(
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


def encode_training_pairs(pairs: list[Pair], d: DataConfig, v: Vocabularies) -> EncodedPairs:
    """Training pairs as ids, dropping those over the data.max_*_length limits."""
    return encode_pairs(
        pairs,
        v.src_vocab,
        v.tgt_vocab,
        d.reverse_source,
        d.max_source_length,
        d.max_target_length,
        v.src_tok.tokenize,
        v.tgt_tok.tokenize,
        d.fill_source_to,
    )


def _encode_splits(
    d: DataConfig, splits: Splits, v: Vocabularies, log: Callable[[str], None]
) -> tuple[EncodedPairs, EncodedPairs]:
    """The training split (lengths only when streaming) and the dev split, as ids.

    Raises:
        DataError: every training pair is over the length limits.
    """
    # Streaming: measure the epoch once (lengths only) so that progress and schedules know it.
    if d.streaming:
        train_data = lengths_only(v.train_pairs(), v.src_tok, v.tgt_tok, d)
    else:
        train_data = encode_training_pairs(splits.train, d, v)
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
        v.src_vocab,
        v.tgt_vocab,
        d.reverse_source,
        tokenize_source=v.src_tok.tokenize,
        tokenize_target=v.tgt_tok.tokenize,
        fill_source_to=d.fill_source_to,
    )
    log(f"vocabulary: {len(v.src_vocab)} source, {len(v.tgt_vocab)} target tokens (4 special)")
    return train_data, dev_data


def lengths_only(pairs, src_tok, tgt_tok, d: DataConfig) -> EncodedPairs:
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


def _build_model(
    cfg: Config, v: Vocabularies, device: torch.device, world: World, log: Callable[[str], None]
) -> Seq2Seq:
    """The model on ``device`` (its initial weights drawn from the seeded generator)."""
    t = cfg.train
    # train.fast: false builds the plain model (jumok.fast off); true leaves it to JUMOK_FAST
    fast = None if t.fast else False
    try:
        model = build_model(cfg.model, len(v.src_vocab), len(v.tgt_vocab), fast=fast).to(device)
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError | torch.OutOfMemoryError) and (
            "allocate" not in str(err)
        ):
            raise  # not a failed allocation: a bug, keep its traceback
        raise ConfigError(
            f"model: the weights of a model this size do not fit in memory on {device} "
            f"({str(err).splitlines()[0][:160]}); make model.encoder and model.decoder "
            "smaller (hidden_size, embedding_size, num_layers)"
        ) from None
    n_params = sum(p.numel() for p in model.parameters())
    plain = "" if model.fast else "; the plain model (train.fast: false or JUMOK_FAST=0)"
    log(f"model: {n_params:,} parameters; device {device}; precision {t.precision}{plain}")
    if world.size > 1:
        unit = "target tokens" if t.batch_type == "tokens" else "sentence pairs"
        log(
            f"data parallel: {world.size} processes share each batch of {t.batch_size} {unit} "
            f"(train.batch_size is the global batch; about {t.batch_size / world.size:g} each)"
        )
    return model


def count_updates(train_data: EncodedPairs, t: TrainConfig) -> int:
    """Updates per epoch: its batches (counted with a throwaway generator) / train.accumulate."""
    tokens_N = train_data.tgt_len_N if t.batch_type == "tokens" else None
    batches_per_epoch = len(
        batch_order(
            train_data.src_len_N, t.batch_size, True, t.bucketing, torch.Generator(), tokens_N
        )
    )
    return math.ceil(batches_per_epoch / t.accumulate)
