"""Attention diagnostics: entropy, coverage, monotonicity and collapse on matrices worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jumok.decoding.diagnostics import (
    AttentionDiagnostics,
    diagnose,
    format_summary,
    longest_non_decreasing,
    summarize,
)


def one_hot_rows(argmax_T: list[int], S: int) -> np.ndarray:
    weights_TS = np.zeros((len(argmax_T), S))
    weights_TS[np.arange(len(argmax_T)), argmax_T] = 1.0
    return weights_TS


def collapsed_rows(T: int, S: int, on: int = -1, weight: float = 0.8) -> np.ndarray:
    """T rows that put ``weight`` on column ``on`` and spread the rest evenly."""
    weights_TS = np.full((T, S), (1 - weight) / (S - 1))
    weights_TS[:, on] = weight
    return weights_TS


def test_one_hot_diagonal_is_sharp_complete_and_monotone():
    d = diagnose(np.eye(5))
    assert d.entropy == [0.0] * 5 and d.mean_entropy == 0.0
    assert d.coverage == 1.0 and d.monotonicity == 1.0
    assert d.final_share == pytest.approx(1 / 5)  # only the last row looks at the last column
    assert not d.collapsed


def test_uniform_rows_have_entropy_log_s():
    d = diagnose(torch.full((3, 7), 1 / 7))
    assert d.entropy == pytest.approx([math.log(7)] * 3, abs=1e-6)
    assert d.mean_entropy == pytest.approx(math.log(7), abs=1e-6)
    # every row's argmax is column 0 (the first of the ties)
    assert d.coverage == pytest.approx(1 / 7) and d.monotonicity == 1.0


def test_entropy_by_hand_with_zero_weights():
    # 0 * log 0 = 0: the zero columns add nothing, and nothing is NaN
    d = diagnose([[0.5, 0.5, 0.0, 0.0], [0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert d.entropy == pytest.approx([math.log(2), 0.8018185525, 0.0], abs=1e-9)


def test_reversed_diagonal_has_monotonicity_one_over_t():
    d = diagnose(np.eye(6)[::-1])
    assert d.monotonicity == pytest.approx(1 / 6)
    assert d.coverage == 1.0


def test_longest_non_decreasing_subsequence_by_hand():
    # argmax 2 0 1 1 3 0: the longest non-decreasing run is 0 1 1 3 (ties count), length 4
    d = diagnose(one_hot_rows([2, 0, 1, 1, 3, 0], S=5))
    assert d.monotonicity == pytest.approx(4 / 6)
    assert d.coverage == pytest.approx(4 / 5)  # column 4 is never the argmax
    assert longest_non_decreasing([3, 1, 2, 0, 2]) == 3  # 1 2 2
    assert longest_non_decreasing([5, 4, 3]) == 1
    assert longest_non_decreasing([]) == 0


def test_collapse_on_last_column_warns_and_a_diagonal_does_not():
    collapsed = diagnose(collapsed_rows(T=4, S=5))
    assert collapsed.final_share == 1.0 and collapsed.collapsed
    summary = summarize([collapsed, collapsed])
    assert summary["collapsed_share"] == 1.0 and summary["token_final_share"] == 1.0
    assert summary["warning"].startswith("attention collapse: 100% of output tokens")
    assert "last source token" in summary["warning"]
    assert "warning: attention collapse" in format_summary(summary)

    diagonal = diagnose(np.eye(5))
    summary = summarize([diagonal, diagonal])
    assert summary["warning"] is None and summary["collapsed_share"] == 0.0
    assert "\n" not in format_summary(summary)


def test_half_the_weight_is_not_more_than_half():
    weights_TS = np.array([[0.25, 0.25, 0.5], [0.2, 0.2, 0.6]])
    assert diagnose(weights_TS).final_share == 0.5
    assert not diagnose(weights_TS).collapsed


def test_custom_collapse_positions():
    on_first = collapsed_rows(T=3, S=4, on=0)
    assert not diagnose(on_first).collapsed  # default: the last column
    assert diagnose(on_first, collapse_positions={0}).collapsed  # a source read reversed
    # 0.3 on each of the last two columns: neither alone holds more than half, together they do
    split = np.array([[0.2, 0.2, 0.3, 0.3]] * 2)
    assert diagnose(split).final_share == 0.0
    assert diagnose(split, collapse_positions=[2, 3]).collapsed
    assert diagnose(split, collapse_positions=[-2, -1]) == diagnose(
        split, collapse_positions=[2, 3]
    )
    assert diagnose(on_first, collapse_positions=[-1]) == diagnose(on_first)


def test_summary_weighs_the_warning_by_tokens_not_sentences():
    short_collapsed = diagnose(collapsed_rows(T=1, S=3))  # 1 token, collapsed
    long_diagonal = diagnose(np.eye(6))  # 6 tokens, 1 of them on the last column
    summary = summarize([short_collapsed, long_diagonal])
    assert summary["final_share"] == pytest.approx((1 + 1 / 6) / 2, abs=1e-4)  # sentence mean > 0.5
    assert summary["token_final_share"] == pytest.approx(2 / 7, abs=1e-4)  # but 2 of 7 tokens
    assert summary["warning"] is None
    assert summary["collapsed_share"] == 0.5 and summary["count"] == 2

    summary = summarize([diagnose(collapsed_rows(T=3, S=3)), diagnose(np.eye(4))])
    assert summary["token_final_share"] == pytest.approx(4 / 7, abs=1e-4)
    assert summary["warning"].startswith("attention collapse: 57% of output tokens")


def test_no_output_tokens():
    for empty in (np.zeros((0, 5)), torch.zeros(0, 3), []):
        d = diagnose(empty)
        assert d == AttentionDiagnostics([], 0.0, 0.0, 0.0, 0.0, False)
    summary = summarize([diagnose([]), diagnose(np.eye(3))])
    assert summary["count"] == 2 and summary["coverage"] == 1.0  # the empty one is not averaged
    empty = summarize([])
    assert empty["count"] == 0 and empty["warning"] is None
    assert format_summary(empty).startswith("attention over 0 sentences")


def test_single_source_token_is_not_a_collapse():
    d = diagnose(torch.ones(3, 1))
    assert d.entropy == [0.0] * 3 and d.coverage == 1.0 and d.monotonicity == 1.0
    assert d.final_share == 0.0 and not d.collapsed  # attention had nothing to choose


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5, 0.5], r"must be 2-D .* got shape \(2,\)"),
        (torch.zeros(2, 3, 4), r"must be 2-D .* got shape \(2, 3, 4\)"),
        (np.float64(1.0), r"got shape \(\)"),
        (np.zeros((2, 0)), r"2 output tokens but no source tokens"),
        ([[0.5, 0.6], [0.5, 0.5]], r"row 0 sums to 1\.1"),
        ([[1.5, -0.5]], r"negative"),
        ([[float("nan"), 1.0]], r"NaN"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_shape(weights, message):
    with pytest.raises(ValueError, match=message):
        diagnose(weights)


def test_collapse_position_outside_the_source_is_an_error():
    with pytest.raises(ValueError, match=r"collapse position 4 is outside the 3 source columns"):
        diagnose(np.eye(3), collapse_positions=[4])


def test_tensor_array_and_list_agree_and_to_dict_is_json():
    weights_TS = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), -1)
    from_tensor = diagnose(weights_TS)
    assert from_tensor == diagnose(weights_TS.numpy()) == diagnose(weights_TS.tolist())
    record = json.loads(json.dumps(from_tensor.to_dict()))
    assert set(record) == {
        "entropy",
        "mean_entropy",
        "coverage",
        "monotonicity",
        "final_share",
        "collapsed",
    }
    assert record["mean_entropy"] == round(from_tensor.mean_entropy, 4)
    assert all(e == round(e, 4) for e in record["entropy"])


@st.composite
def row_stochastic(draw):
    T = draw(st.integers(1, 10))
    S = draw(st.integers(1, 10))
    # zeros are likely, so that 0 * log 0 is exercised; each row keeps one positive weight
    cell = st.one_of(st.just(0.0), st.floats(1e-6, 1.0))
    raw_TS = np.array(
        draw(st.lists(st.lists(cell, min_size=S, max_size=S), min_size=T, max_size=T))
    )
    raw_TS[np.arange(T), draw(st.lists(st.integers(0, S - 1), min_size=T, max_size=T))] += 1e-3
    return raw_TS / raw_TS.sum(axis=1, keepdims=True)


@settings(max_examples=200, deadline=None)
@given(row_stochastic())
def test_properties_of_random_row_stochastic_matrices(weights_TS):
    T, S = weights_TS.shape
    d = diagnose(weights_TS)
    assert len(d.entropy) == T
    assert all(0.0 <= e <= math.log(S) + 1e-12 for e in d.entropy)
    assert d.mean_entropy == pytest.approx(float(np.mean(d.entropy)))
    assert 0.0 < d.coverage <= min(T, S) / S + 1e-12
    assert 1 / T - 1e-12 <= d.monotonicity <= 1.0
    assert 0.0 <= d.final_share <= 1.0 and d.collapsed == (d.final_share > 0.5)
    # coverage counts distinct argmax columns, so the order of the rows cannot change it
    assert diagnose(weights_TS[::-1]).coverage == d.coverage
