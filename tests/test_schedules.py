"""Learning-rate schedules give hand-computed rates; early stopping stops where it should."""

from __future__ import annotations

import pytest
import torch

from jumok.config import EarlyStoppingConfig, ScheduleConfig
from jumok.training.schedules import EarlyStopping, Schedule


def rates(kind: str, steps: int, total: int = 1100, **cfg) -> list[float]:
    """The learning rate used by each of the first ``steps`` updates (index 0 = update 1)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    schedule = Schedule(optimizer, ScheduleConfig(kind=kind, **cfg), 1e-3, total, mode="max")
    used = []
    for _ in range(steps):
        used.append(schedule.lr)
        optimizer.step()
        schedule.after_update()
    return used


def test_constant_is_constant_and_warms_up_linearly():
    assert rates("constant", 5) == [1e-3] * 5
    assert rates("constant", 5, warmup_steps=4) == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_inverse_sqrt_hand_computed():
    used = rates("inverse_sqrt", 400, warmup_steps=100)
    assert used[49] == pytest.approx(5e-4)  # update 50 of a 100-update warm-up
    assert used[99] == pytest.approx(1e-3)
    assert used[399] == pytest.approx(5e-4)  # sqrt(100 / 400)
    assert used[224] == pytest.approx(1e-3 * (100 / 225) ** 0.5)


def test_cosine_hand_computed():
    used = rates("cosine", 1100, total=1100, warmup_steps=100, min_lr=1e-4)
    assert used[99] == pytest.approx(1e-3)
    assert used[599] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way down
    assert used[1099] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(used[99:], used[100:], strict=False))


def test_plateau_reduces_after_patience_validations():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    cfg = ScheduleConfig(kind="plateau", factor=0.5, patience=1)
    schedule = Schedule(optimizer, cfg, 1e-3, 100, mode="max")
    seen = []
    for value in [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]:
        optimizer.step()
        schedule.after_update()
        schedule.after_validation(value)
        seen.append(schedule.lr)
    # 0.6 twice without improvement (> patience 1) halves once; same again after 0.7.
    assert seen == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4])


@pytest.mark.parametrize(
    ("metric", "values", "stop_at"),
    [
        ("exact_match", [0.1, 0.3, 0.3, 0.2, 0.4, 0.4, 0.39, 0.1], 8),  # best 0.4 at 5
        ("loss", [3.0, 2.0, 2.5, 2.1, 1.9, 2.0], None),  # 1.9 improves: never 3 bad in a row
        ("loss", [3.0, 2.0, 2.5, 2.1, 2.0, 2.0], 5),
        ("bleu", [float("nan"), 10.0, 9.0, 9.0, 9.0], 5),
    ],
)
def test_early_stopping_stops_at_the_expected_validation(metric, values, stop_at):
    stopper = EarlyStopping(EarlyStoppingConfig(metric=metric, patience=3))
    stopped = None
    for index, value in enumerate(values, start=1):
        stopper.update(value)
        if stopper.should_stop:
            stopped = index
            break
    assert stopped == stop_at


def test_without_patience_never_stops_and_state_round_trips():
    stopper = EarlyStopping(EarlyStoppingConfig(metric="chrf"))
    for value in [50.0, 40.0, 30.0, 20.0]:
        stopper.update(value)
    assert not stopper.should_stop and stopper.best == 50.0
    again = EarlyStopping(EarlyStoppingConfig(metric="chrf", patience=2))
    again.load_state_dict(stopper.state_dict())
    assert again.should_stop  # 3 bad validations already


@pytest.mark.parametrize(
    ("metric", "target", "values", "reached_at"),
    [
        ("exact_match", 0.999, [0.5, 0.998, 0.999, 1.0], 3),  # at least the target
        ("loss", 0.1, [0.5, 0.2, 0.15, 0.1], 4),  # at most, for loss
        ("bleu", 30.0, [10.0, 20.0], None),  # never reached
    ],
)
def test_a_target_stops_at_the_first_validation_that_reaches_it(metric, target, values, reached_at):
    stopper = EarlyStopping(EarlyStoppingConfig(metric=metric, target=target))
    reached = None
    for i, value in enumerate(values, start=1):
        stopper.update(value)
        if stopper.reached_target and reached is None:
            reached = i
    assert reached == reached_at and not stopper.should_stop
