"""Learning-rate schedules (``train.schedule``) and early stopping (``train.early_stopping``).

Step-based schedules are a multiplier of ``train.lr`` as a function of the update number, given
to PyTorch's ``LambdaLR``; ``plateau`` is PyTorch's ``ReduceLROnPlateau``, stepped once per
validation. Worked values, lr = 1e-3, warmup_steps = 100:

* ``inverse_sqrt``: step 50 -> 5e-4 (warm-up), step 100 -> 1e-3, step 400 -> 5e-4;
* ``cosine`` over 1,100 steps, min_lr 0: step 100 -> 1e-3, step 600 -> 5e-4, step 1,100 -> 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from jumok.config import EarlyStoppingConfig, ScheduleConfig


def lr_multiplier(cfg: ScheduleConfig, lr: float, total_steps: int) -> Callable[[int], float]:
    """The factor applied to ``lr`` after ``step`` updates (``LambdaLR`` convention: step 0 first).

    Args:
        cfg: ``train.schedule``.
        lr: the base learning rate (``train.lr``).
        total_steps: updates in the whole run (for ``cosine``).
    """
    warmup = cfg.warmup_steps

    def warm(step: int) -> float:
        # The update with index `step` is the (step + 1)-th: it uses (step + 1) / warmup.
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    if cfg.kind in ("constant", "plateau"):
        return warm
    if cfg.kind == "inverse_sqrt":
        return lambda step: (
            warm(step) if step + 1 <= warmup else math.sqrt(max(warmup, 1) / (step + 1))
        )
    if cfg.kind == "cosine":
        floor = cfg.min_lr / lr
        span = max(total_steps - warmup, 1)

        def cosine(step: int) -> float:
            if step + 1 <= warmup:
                return warm(step)
            done = min((step + 1 - warmup) / span, 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))

        return cosine
    raise ValueError(f"unknown schedule {cfg.kind!r}")


class Schedule:
    """Steps the learning rate: :meth:`after_update` every update, :meth:`after_validation`."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        lr: float,
        total_steps: int,
        mode: str,
    ):
        self.step_based = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_multiplier(cfg, lr, total_steps)
        )
        self.plateau = None
        if cfg.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
            )
        self.optimizer = optimizer
        self.warmup_steps = cfg.warmup_steps

    def after_update(self) -> None:
        # With 'plateau' the step-based part is only the warm-up: after it, ReduceLROnPlateau
        # owns the rate (LambdaLR would overwrite its reductions).
        if self.plateau is None or self.step_based.last_epoch < self.warmup_steps:
            self.step_based.step()

    def after_validation(self, value: float) -> None:
        if self.plateau is not None:
            self.plateau.step(value)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "step_based": self.step_based.state_dict(),
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_based.load_state_dict(state["step_based"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


class EarlyStopping:
    """Tracks the best value of the dev metric and how long ago it was reached.

    ``loss`` is lower-is-better, every other metric higher-is-better.
    """

    def __init__(self, cfg: EarlyStoppingConfig):
        self.metric, self.patience, self.target = cfg.metric, cfg.patience, cfg.target
        self.mode = "min" if cfg.metric == "loss" else "max"
        self.best: float | None = None
        self.bad_validations = 0

    def is_better(self, value: float, than: float | None) -> bool:
        if than is None:
            return not math.isnan(value)
        return value < than if self.mode == "min" else value > than

    def update(self, value: float) -> bool:
        """Record one validation; True when it is the best so far."""
        if self.is_better(value, self.best):
            self.best, self.bad_validations = value, 0
            return True
        self.bad_validations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_validations >= self.patience

    @property
    def reached_target(self) -> bool:
        """The best value so far is at (or beyond) ``early_stopping.target``."""
        if self.target is None or self.best is None:
            return False
        return self.best <= self.target if self.mode == "min" else self.best >= self.target

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_validations = state["best"], state["bad_validations"]
