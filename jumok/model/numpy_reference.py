"""A NumPy reference of the lecture's attention layer, forward and backward by hand (points 5-6).

This is the attention of :mod:`jumok.model.attention` written the way *Deep Learning from Scratch 2*,
chapter 8, writes it: small layers with a ``forward`` that keeps what it needs in ``self.cache``
and a ``backward`` that turns the upstream gradient into gradients of the inputs, worked out by
hand with no autograd. The three layers mirror the book's:

* :class:`AttentionWeight`: the dot score of each decoder state against every row of ``hs``
  (point 6), then a softmax over source positions with padding masked to exactly 0 (point 5).
* :class:`WeightSum`: the weighted sum of the rows of ``hs``, i.e. the context vector (point 5).
* :class:`Attention`: the two composed; ``hs`` feeds both, so its two gradients are summed.

Two departures from the book, both on purpose:

* Padding masks. The book attends over every source position; here ``mask_BS`` is False at
  padding and those positions get weight exactly 0 and gradient exactly 0.
* All T output steps at once. The book's ``TimeAttention`` loops over time steps with one
  ``Attention`` per step; here each layer takes all T queries and does the same math as one
  batched product (``einsum``). The tests check that a loop over t gives the same numbers.

Dimension key as in :mod:`jumok.model.attention` (B batch, S source length, T output steps, H hidden).
Note that the book calls the source length ``T`` in ``hs`` (N, T, H); here it is S.

Argument order follows the book, ``forward(hs, queries, mask)``, not
``DotAttention.forward(queries, hs, mask)``.

The tests (``tests/test_numpy_reference.py``) check forward and backward against
:class:`jumok.model.attention.DotAttention` and torch autograd to 1e-6 in float64, and check
:meth:`AttentionWeight.backward` by finite differences.

Worked example (the one in :mod:`jumok.model.attention`): ``hs = [[1], [2], [0]]`` with the last
position padding, queries ``[[0], [1]]`` give weights ``[[0.5, 0.5, 0], [0.269, 0.731, 0]]``
and contexts ``[1.5, 1.731]``.

Unlike the PyTorch modules, these layers keep a cache between ``forward`` and ``backward``: that
is the book's design, and a hand-written backward needs it (PyTorch keeps the same values in the
autograd graph instead). Each ``forward`` overwrites the cache.
"""

from __future__ import annotations

import numpy as np


def _shape_text(shape: tuple[int | str, ...]) -> str:
    """``(3, "T", 5)`` -> ``"(3, T, 5)"``; also gives ``"(4,)"`` for one dimension."""
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_shape(name: str, array: np.ndarray, expected: tuple[int | str, ...]) -> None:
    """Raise ValueError unless ``array`` has ``expected`` shape.

    Args:
        name: the argument's name, for the message.
        array: the array to check.
        expected: one entry per dimension: an int must match, a str (such as ``"T"``) is a free
            dimension and only names it in the message.
    """
    actual = np.shape(array)
    fits = len(actual) == len(expected) and all(
        isinstance(want, str) or have == want for have, want in zip(actual, expected, strict=True)
    )
    if not fits:
        raise ValueError(
            f"{name}: expected {_shape_text(expected)}, got {_shape_text(tuple(actual))}"
        )


def _check_mask(mask_BS: np.ndarray, B: int, S: int) -> None:
    """Raise unless ``mask_BS`` is a (B, S) boolean array with a real position in every row."""
    _check_shape("mask", mask_BS, (B, S))
    if mask_BS.dtype != np.bool_:
        # ~ on an int mask gives -1/-2, not a negation, so refuse rather than guess.
        raise TypeError(f"mask: expected a bool array, got dtype {mask_BS.dtype}")
    if not mask_BS.any(axis=1).all():
        empty = np.flatnonzero(~mask_BS.any(axis=1)).tolist()
        raise ValueError(f"mask: every row needs a real (True) position; rows {empty} have none")


def _cached(cache: tuple[np.ndarray, ...] | None, layer: str) -> tuple[np.ndarray, ...]:
    """The layer's cache, or a RuntimeError if ``backward`` comes before ``forward``."""
    if cache is None:
        raise RuntimeError(f"{layer}.backward called before {layer}.forward")
    return cache


def masked_softmax(scores_BTS: np.ndarray, mask_BS: np.ndarray) -> np.ndarray:
    """Softmax over source positions with padding at exactly 0 (lecture point 5).

    Numerically stable: the largest real score of each row is subtracted before ``exp``, so
    nothing overflows. Padding is set to ``-inf`` first, and ``exp(-inf)`` is exactly 0.

    Args:
        scores_BTS: raw scores.
        mask_BS: True at real source tokens, False at padding; every row has a True.

    Returns:
        weights_BTS: non-negative, each (b, t) row sums to 1, exactly 0 where ``mask_BS`` is False.
    """
    scores_BTS = np.where(mask_BS[:, None, :], scores_BTS, -np.inf)
    # Every row has a real position, so the row maximum is finite.
    shifted_BTS = scores_BTS - scores_BTS.max(axis=-1, keepdims=True)
    exp_BTS = np.exp(shifted_BTS)
    return exp_BTS / exp_BTS.sum(axis=-1, keepdims=True)


class WeightSum:
    """Context vectors: weighted sums of the rows of ``hs`` (lecture point 5; the book's WeightSum).

    ``context[b, t] = sum_s weights[b, t, s] * hs[b, s]``.
    """

    def __init__(self) -> None:
        self.cache: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, hs_BSH: np.ndarray, weights_BTS: np.ndarray) -> np.ndarray:
        """Weighted sum of encoder states for every output step.

        Args:
            hs_BSH: encoder states (lecture point 3's ``hs``).
            weights_BTS: attention weights, one row over source positions per output step.

        Returns:
            context_BTH: the context vectors.
        """
        _check_shape("hs", hs_BSH, ("B", "S", "H"))
        B, S, _ = hs_BSH.shape
        _check_shape("weights", weights_BTS, (B, "T", S))
        self.cache = (hs_BSH, weights_BTS)
        # The book repeats a to (N, T, H) and sums over T; an einsum over s is the same sum.
        return np.einsum("bts,bsh->bth", weights_BTS, hs_BSH)

    def backward(self, dcontext_BTH: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of the two inputs from the gradient of the context vectors.

        Each ``hs[b, s]`` is used by every step t with factor ``weights[b, t, s]``, so its
        gradient sums over t; each weight multiplies one row of ``hs``, so its gradient is the
        dot product of that row with the upstream gradient.

        Args:
            dcontext_BTH: gradient of the loss with respect to ``context_BTH``.

        Returns:
            dhs_BSH: gradient with respect to ``hs_BSH``.
            dweights_BTS: gradient with respect to ``weights_BTS``.
        """
        hs_BSH, weights_BTS = _cached(self.cache, "WeightSum")
        B, _, H = hs_BSH.shape
        T = weights_BTS.shape[1]
        _check_shape("dcontext", dcontext_BTH, (B, T, H))
        dhs_BSH = np.einsum("bts,bth->bsh", weights_BTS, dcontext_BTH)
        dweights_BTS = np.einsum("bth,bsh->bts", dcontext_BTH, hs_BSH)
        return dhs_BSH, dweights_BTS


class AttentionWeight:
    """Attention weights: dot scores, then a masked softmax (points 5-6; the book's AttentionWeight).

    ``scores[b, t, s] = queries[b, t] . hs[b, s]``, and ``weights[b, t]`` is the softmax of
    ``scores[b, t]`` over the real source positions, 0 at padding.
    """

    def __init__(self) -> None:
        self.cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def forward(
        self, hs_BSH: np.ndarray, queries_BTH: np.ndarray, mask_BS: np.ndarray
    ) -> np.ndarray:
        """Weights over source positions for every output step.

        Args:
            hs_BSH: encoder states (lecture point 3's ``hs``).
            queries_BTH: decoder LSTM outputs, one row per output step (the book's ``h``).
            mask_BS: bool, True at real source tokens; every row has a True.

        Returns:
            weights_BTS: non-negative, rows sum to 1, exactly 0 where ``mask_BS`` is False.
        """
        _check_shape("hs", hs_BSH, ("B", "S", "H"))
        B, S, H = hs_BSH.shape
        _check_shape("queries", queries_BTH, (B, "T", H))
        _check_mask(mask_BS, B, S)
        scores_BTS = np.einsum("bth,bsh->bts", queries_BTH, hs_BSH)  # point 6: dot score
        weights_BTS = masked_softmax(scores_BTS, mask_BS)  # point 5
        self.cache = (hs_BSH, queries_BTH, weights_BTS)
        return weights_BTS

    def backward(self, dweights_BTS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of ``hs`` and the queries from the gradient of the weights.

        Softmax backward (the book's Softmax layer): with ``w`` the weights of one row and
        ``g`` their upstream gradient, ``dscores = w * (g - sum(w * g))``. Where ``w`` is 0
        (padding) this is exactly 0, so padding gets no gradient. The mask needs no separate
        step: a masked score is a constant ``-inf``, not a function of the inputs.

        Args:
            dweights_BTS: gradient of the loss with respect to ``weights_BTS``.

        Returns:
            dhs_BSH: gradient with respect to ``hs_BSH``.
            dqueries_BTH: gradient with respect to ``queries_BTH``.
        """
        hs_BSH, queries_BTH, weights_BTS = _cached(self.cache, "AttentionWeight")
        _check_shape("dweights", dweights_BTS, weights_BTS.shape)
        row_dot_BT1 = (weights_BTS * dweights_BTS).sum(axis=-1, keepdims=True)
        dscores_BTS = weights_BTS * (dweights_BTS - row_dot_BT1)
        # scores = queries . hs, so each factor's gradient is dscores times the other factor.
        dhs_BSH = np.einsum("bts,bth->bsh", dscores_BTS, queries_BTH)
        dqueries_BTH = np.einsum("bts,bsh->bth", dscores_BTS, hs_BSH)
        return dhs_BSH, dqueries_BTH


class Attention:
    """Dot attention: AttentionWeight then WeightSum (points 5-6; the book's Attention).

    The book's ``TimeAttention`` runs one ``Attention`` per output step in a Python loop. These
    layers take all T steps at once, which is the same math as that loop.
    """

    def __init__(self) -> None:
        self.attention_weight = AttentionWeight()
        self.weight_sum = WeightSum()

    def forward(
        self, hs_BSH: np.ndarray, queries_BTH: np.ndarray, mask_BS: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Attend from T decoder states to the S encoder states.

        Args:
            hs_BSH: encoder states (lecture point 3's ``hs``).
            queries_BTH: decoder LSTM outputs, one row per output step.
            mask_BS: bool, True at real source tokens; every row has a True.

        Returns:
            context_BTH: the context vectors (point 5).
            weights_BTS: the attention weights, exactly 0 at padding.
        """
        weights_BTS = self.attention_weight.forward(hs_BSH, queries_BTH, mask_BS)
        context_BTH = self.weight_sum.forward(hs_BSH, weights_BTS)
        return context_BTH, weights_BTS

    def backward(
        self, dcontext_BTH: np.ndarray, dweights_BTS: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of ``hs`` and the queries.

        Args:
            dcontext_BTH: gradient of the loss with respect to ``context_BTH``.
            dweights_BTS: gradient with respect to the returned ``weights_BTS``, if the loss
                uses them too (an attention penalty, say); None means they are unused.

        Returns:
            dhs_BSH: gradient with respect to ``hs_BSH``, the sum over both uses of ``hs``.
            dqueries_BTH: gradient with respect to ``queries_BTH``.
        """
        dhs_from_sum_BSH, dweights_from_sum_BTS = self.weight_sum.backward(dcontext_BTH)
        dweights_total_BTS = dweights_from_sum_BTS
        if dweights_BTS is not None:
            _check_shape("dweights", dweights_BTS, dweights_from_sum_BTS.shape)
            # The weights feed WeightSum and are also returned: a fork, so the gradients add.
            dweights_total_BTS = dweights_from_sum_BTS + dweights_BTS
        dhs_from_weight_BSH, dqueries_BTH = self.attention_weight.backward(dweights_total_BTS)
        # hs is used twice, for the scores and in the weighted sum: the gradients add.
        return dhs_from_sum_BSH + dhs_from_weight_BSH, dqueries_BTH
