"""``train``: the optimizer, batches, precision, schedules, early stopping, budgets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jumok.config.base import MAX_SEED
from jumok.config.base import Frozen as _Frozen

# Counts of updates and validations: a billion updates is far past any run jumok can make.
MAX_STEPS = 10**9


# -------------------------------------------------------------------------------------- train
class ScheduleConfig(_Frozen):
    """How the learning rate changes during training. The lecture uses a constant Adam rate."""

    kind: Literal["constant", "plateau", "inverse_sqrt", "cosine"] = Field(
        "constant",
        description="'constant' (the lecture); 'plateau' multiplies the rate by factor after "
        "patience validations without improvement of train.early_stopping.metric; "
        "'inverse_sqrt' warms up linearly for warmup_steps, then decays as "
        "sqrt(warmup_steps / step) (Vaswani et al.); 'cosine' warms up, then follows half a "
        "cosine from lr to min_lr over the run's steps (train.max_steps, or epochs x batches).",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Linear warm-up from 0 to train.lr over this many updates.",
    )
    factor: float = Field(0.5, gt=0, lt=1, description="'plateau': multiply the rate by this.")
    patience: int = Field(
        2,
        ge=0,
        le=MAX_STEPS,
        description="'plateau': validations without improvement before reducing.",
    )
    min_lr: float = Field(
        0.0, ge=0, le=10, description="Lowest learning rate ('plateau', 'cosine'); at most 10."
    )


class EarlyStoppingConfig(_Frozen):
    """Which dev metric picks the best checkpoint, and when to stop."""

    metric: Literal["exact_match", "bleu", "chrf", "loss"] = Field(
        "exact_match",
        description="Dev metric that chooses best.safetensors, drives early stopping and the "
        "'plateau' schedule (loss: lower is better; the others: higher). A language model "
        "(model.type: lm) has no outputs to score: loss, its default, is its only choice.",
    )
    patience: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="Stop after this many validations without improvement; null = never stop "
        "early.",
    )
    target: float | None = Field(
        None,
        description="Stop as soon as a validation reaches this value of the metric (at least it; "
        "at most it for loss), e.g. 0.999 exact match; null = no target. A jumok addition.",
    )


class TrainConfig(_Frozen):
    """The training loop."""

    epochs: int = Field(
        10, gt=0, le=1_000_000, description="Passes over the training pairs (at most 10^6)."
    )
    max_steps: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="Stop after this many updates (whichever of epochs comes first; at most 10^9).",
    )
    batch_size: int = Field(
        128,
        gt=0,
        le=10_000_000,
        description="Sentence pairs per batch (book: 128), or target tokens per batch with "
        "batch_type: tokens (at most 10^7). Under torchrun this is the global batch, shared by "
        "the processes: the same updates whatever their number (docs/distributed.md).",
    )
    batch_type: Literal["sentences", "tokens"] = Field(
        "sentences",
        description="Count batch_size in sentence pairs or in target tokens (padding excluded).",
    )
    accumulate: int = Field(
        1,
        gt=0,
        le=10_000,
        description="Add the gradients of this many batches before each update: the same update "
        "as one batch this many times larger, in the memory of one (at most 10^4).",
    )
    lr: float = Field(
        1e-3,
        gt=0,
        le=10,
        description="Adam learning rate (book: 0.001). At most 10: Adam diverges far below it.",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Decoupled weight decay (AdamW) when > 0; the lecture has none. At most 10.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Spread this much of each target's probability over the vocabulary "
        "(Szegedy et al. 2016); the lecture has none.",
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="Learning-rate schedule."
    )
    valid_every: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="Validate every this many updates; null = at the end of every epoch.",
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Best checkpoint and early stopping."
    )
    keep_best: int = Field(
        1,
        gt=0,
        le=1000,
        description="How many of the best checkpoints to keep (at most 1000). best.safetensors "
        "is always the best; with k > 1 the k best are also kept as "
        "checkpoints/step-N.safetensors and worse ones are deleted.",
    )
    examples: int = Field(
        3,
        ge=0,
        le=10_000,
        description="Dev translations printed at each validation, next to references.",
    )
    clip_grad_norm: float | None = Field(
        5.0,
        gt=0,
        description="Clip the global gradient norm to this value (book: 5.0); null = off.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="Seed of initialisation, shuffling, SentencePiece and everything random: "
        "0 to 2^32 - 1, the range SentencePiece's generator accepts.",
    )
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget in seconds, counted from the launch (preparing the data "
        "included): stop cleanly after the update that crosses it, validate and keep a "
        "checkpoint. null = no budget.",
    )
    resume_every: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="Also save the resumable state (resume.state) every this many updates; null = "
        "only before the first update, after every validation, at the end of every epoch and on "
        "SIGINT/SIGTERM (docs/reliability.md).",
    )
    bucketing: bool = Field(
        True,
        description="Group sentences of similar length into the same batch (target length "
        "first, then source length: less padding, fewer decoder steps, same examples per epoch). "
        "A jumok addition; the book pads every input to 29 characters.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16' runs the forward pass under bfloat16 autocast with float32 master weights.",
    )
    threads: int | None = Field(
        None,
        gt=0,
        le=1024,
        description="CPU threads for PyTorch (at most 1024); null = PyTorch's default.",
    )
    fast: bool = Field(
        True,
        description="Use jumok's speed layer (jumok/fast/: the same maths, faster on a CPU); "
        "false runs the plain version of every trick, as does JUMOK_FAST=0 in the environment.",
    )
    kernel_cache: int | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Compiled oneDNN kernels kept on a CPU (ONEDNN_PRIMITIVE_CACHE_CAPACITY, one "
        "per product or LSTM shape); null = the environment's value, else jumok's 32. More "
        "speeds up a small model whose batches vary in length and costs memory with a large "
        "output layer (docs/performance.md); it takes effect only in a process that has not yet "
        "run a oneDNN kernel, as in `jumok train`.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="Where to train; 'auto' picks CUDA when available."
    )
    eval_batch_size: int = Field(
        500, gt=0, le=1_000_000, description="Sentences per batch when validating (at most 10^6)."
    )
