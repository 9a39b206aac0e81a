"""Validation: scores on the dev split, and what a run does with them.

:func:`evaluate` measures a model on a split. A :class:`Validator` runs it during training and
publishes the result: a row of the metrics files, early stopping and the schedule's plateau
bookkeeping, then (rank 0) the checkpoints, the log line and the learning curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from jumok.config import Config
from jumok.data.splits import EncodedPairs, Pair, iterate_batches
from jumok.decoding import copies
from jumok.decoding.greedy import greedy_stream
from jumok.fast import packing, runtime
from jumok.fast.sliced_loss import release_workspaces
from jumok.model.seq2seq import Seq2Seq
from jumok.training.metrics import bleu, chrf, exact_match, token_accuracy
from jumok.training.rundir import keep_best
from jumok.training.setup import Run

# Which field of an EpochRecord each train.early_stopping.metric reads. A language model
# (model.type: lm) has only loss: its config refuses the others (jumok.config.tree).
METRICS = {
    "exact_match": "dev_exact_match",
    "bleu": "dev_bleu",
    "chrf": "dev_chrf",
    "loss": "dev_loss",
}

# Most target positions (rows x steps) per teacher-forced pass when validating: the encoder's
# and decoder's activations of 500 Multi30k dev sentences at once raised a run's resident memory
# by ~300 MB; ~180 rows at a time by ~180 MB, at the same speed. The date task's 1,000 dev items
# (~11 steps) take one or two passes.
LOSS_POSITIONS = 8192


@dataclass
class EpochRecord:
    """What one validation measured; one line of ``metrics.jsonl`` and of ``metrics.csv``.

    ``epoch_seconds`` and ``train_tokens_per_second`` cover the training since the previous
    validation (a whole epoch unless ``train.valid_every`` is set). A language model
    (``model.type: lm``) decodes nothing to score: its exact match, token accuracy, BLEU and
    chrF are None, and ``dev_perplexity`` is its measure.
    """

    epoch: int
    step: int
    train_loss: float
    dev_loss: float
    dev_exact_match: float | None  # None for a language model
    dev_token_accuracy: float | None
    dev_bleu: float | None  # None on generated data, unless early stopping reads it
    dev_chrf: float | None
    lr: float
    epoch_seconds: float
    elapsed_seconds: float
    train_tokens_per_second: float
    # exp(dev_loss); last, with a default, so that the rows of a run saved before it existed
    # (resume.state) still load
    dev_perplexity: float | None = None


ValidationRecord = EpochRecord


@dataclass
class DevScores:
    """What :func:`evaluate` measured on a split, with the greedy outputs (``hyps``); for a
    language model, only the loss and the perplexity."""

    loss: float
    exact_match: float | None
    token_accuracy: float | None
    bleu: float | None
    chrf: float | None
    hyps: list[str]

    @property
    def perplexity(self) -> float:
        """exp(loss): the loss is the mean cross-entropy per target token, in nats."""
        return perplexity(self.loss)


def is_text(cfg: Config) -> bool:
    """BLEU and chrF are printed for real data, not the toy tasks scored by exact match."""
    return cfg.data.generate is None


def is_language_model(cfg: Config) -> bool:
    """A language model (``model.type: lm``) has no source, so no output to score: its dev
    measure is the perplexity."""
    return cfg.model.type == "lm"


def perplexity(loss: float) -> float:
    """exp(loss), the perplexity of a mean cross-entropy per token (inf past float range,
    nan for the nan loss of an empty split)."""
    return math.inf if loss > 709.0 else math.exp(loss)  # exp(709.8) overflows a float


@torch.no_grad()
def evaluate(
    model: Seq2Seq,
    data: EncodedPairs,
    pairs: list[Pair],
    detokenize: Callable[[list[int]], str],
    cfg: Config,
    device: torch.device,
) -> DevScores:
    """Teacher-forced loss; greedy exact match, token accuracy, BLEU and chrF on a split.

    A language model gets the loss alone: greedy decoding from no source gives the same
    sentence for every item, which no reference can score.
    """
    lm = is_language_model(cfg)
    if len(data) == 0:
        return DevScores(float("nan"), *((None,) * 4 if lm else (0.0,) * 4), [])
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
    if lm:
        return DevScores(loss_sum / token_sum, None, None, None, None, [])
    # greedy search streams the batches through eval_batch_size slots (jumok.decoding.search), without
    # the decoding-only token tables (they would sit on top of training's memory), on a CPU
    # with the decoder's products packed (jumok.fast.packing: a copy around the same parameters)
    decoding = copies.float32_copy(model, pack=packing.available(device), token_tables=False)
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
    text = is_text(cfg) or cfg.train.early_stopping.metric in ("bleu", "chrf")
    return DevScores(
        loss=loss_sum / token_sum,
        exact_match=exact_match(hyps, refs),
        token_accuracy=token_accuracy([list(h) for h in hyps], [list(r) for r in refs]),
        bleu=bleu(hyps, refs) if text else None,
        chrf=chrf(hyps, refs) if text else None,
        hyps=hyps,
    )


def examples(pairs: list[Pair], hyps: list[str], k: int) -> list[tuple[str, str, str]]:
    """The first k dev items with their outputs (the same ones at every validation)."""
    return [(s, r, h) for (s, r), h in zip(pairs[:k], hyps[:k], strict=False)]


class Validator:
    """Validates a prepared run on its dev split and publishes the result.

    ``stopped_early`` turns true at the validation after which early stopping ends the run
    (``train.early_stopping``: its target reached, or its patience run out).
    """

    def __init__(self, run: Run, log: Callable[[str], None]):
        """Validate ``run``; report on ``log``."""
        self.run, self.log = run, log
        self.stopped_early = False

    def validate(self, epoch: int) -> None:
        """Score the model on the dev split, record it, and restart the train-loss count."""
        run, p = self.run, self.run.progress
        seconds = time.perf_counter() - run.since
        release_workspaces()  # the loss's buffers (jumok.fast.sliced_loss): decoding needs the memory more
        scores = evaluate(
            run.model, run.dev_data, run.splits.dev, run.detokenize, run.cfg, run.device
        )
        runtime.release_free_memory()
        record = self._record(epoch, scores, seconds)
        p.history.append(asdict(record))
        p.validated_at = p.step
        if run.world.is_main:
            run.files.append(asdict(record))
        # Rank 0's score decides on every rank (the others computed the same, or nearly).
        value = run.world.broadcast(getattr(record, METRICS[run.cfg.train.early_stopping.metric]))
        improved = run.stopper.update(value)
        run.schedule.after_validation(value)
        if run.world.is_main:
            self._publish(record, scores, improved, value)
        if run.stopper.should_stop or run.stopper.reached_target:
            self.stopped_early = True
        run.model.train()
        p.since_loss, p.since_tokens = 0.0, 0
        run.since = time.perf_counter()

    def _record(self, epoch: int, scores: DevScores, seconds: float) -> EpochRecord:
        """The metrics row of this validation; ``seconds`` of training since the last one."""
        run, p = self.run, self.run.progress
        return EpochRecord(
            epoch=epoch,
            step=p.step,
            train_loss=p.since_loss / max(p.since_tokens, 1),
            dev_loss=scores.loss,
            dev_exact_match=scores.exact_match,
            dev_token_accuracy=scores.token_accuracy,
            dev_bleu=scores.bleu,
            dev_chrf=scores.chrf,
            lr=run.schedule.lr,
            epoch_seconds=seconds,
            elapsed_seconds=time.perf_counter() - run.start,
            train_tokens_per_second=p.since_tokens / max(seconds, 1e-9),
            dev_perplexity=scores.perplexity,
        )

    def _publish(
        self, record: EpochRecord, scores: DevScores, improved: bool, value: float
    ) -> None:
        """Rank 0's part of a validation: checkpoints, the log, the learning curve."""
        run, t = self.run, self.run.cfg.train
        info = {
            "epoch": record.epoch,
            "step": record.step,
            **{k: getattr(record, v) for k, v in METRICS.items()},
        }
        run.save_checkpoint(run.run_dir / "last.safetensors", info)
        if improved:
            run.save_checkpoint(run.run_dir / "best.safetensors", info)
        if t.keep_best > 1:
            keep_best(
                run.run_dir / "checkpoints",
                t.keep_best,
                record.step,
                value,
                higher_is_better=run.stopper.mode == "max",
                save=lambda path: run.save_checkpoint(path, info),
            )
        self._log(record, scores)
        run.files.draw_curve_if_due(run.progress.history)

    def _log(self, record: EpochRecord, scores: DevScores) -> None:
        """The validation's log line, and the first train.examples dev outputs."""
        cfg, t = self.run.cfg, self.run.cfg.train
        where = f"epoch {record.epoch}/{t.epochs}" + (
            f" step {record.step}" if t.valid_every else ""
        )
        if is_language_model(cfg):
            scored = f"dev perplexity {scores.perplexity:.2f}"
        else:
            scored = f"dev exact match {100 * scores.exact_match:.2f}%" + (
                f"  BLEU {scores.bleu:.2f}  chrF {scores.chrf:.2f}" if is_text(cfg) else ""
            )
        self.log(
            f"{where}  train loss {record.train_loss:.4f}  dev loss {scores.loss:.4f}  {scored}"
            + f"  ({record.epoch_seconds:.1f} s, {record.train_tokens_per_second:,.0f} target tok/s)"
        )
        for source, ref, hyp in examples(self.run.splits.dev, scores.hyps, t.examples):
            self.log(
                f"    {source!r} -> {hyp!r}" + ("" if hyp == ref else f"  (reference {ref!r})")
            )
