"""The back-pointers of beam search: how each live row came to be.

A finished hypothesis' tokens, log-probabilities and attention rows are read back once, when it
finishes, instead of every row's whole history being copied forward at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Trace:
    """Back-pointers: how each live row came to be.

    Attributes:
        parents: ``parents[t][j]``, the row of step t that row j of step t + 1 continues.
        tokens: ``tokens[t][j]``, the token row j of step t + 1 appended at step t.
        logps: ``logps[t][j]``, that token's log-probability.
        weights: ``weights[t]``, the attention weights (N_t, S) of step t's rows (None without
            attention).
    """

    parents: list[list[int]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    logps: list[list[float]] = field(default_factory=list)
    weights: list[Tensor | None] = field(default_factory=list)

    def record(self, parents: list[int], tokens: list[int], logps: list[float]) -> None:
        """Add a step's back-pointers: the parent, token and log-probability of each new row."""
        self.parents.append(parents)
        self.tokens.append(tokens)
        self.logps.append(logps)

    def path(self, step: int, row: int, start: int = 0) -> tuple[list[int], list[float], list[int]]:
        """The tokens and log-probabilities row ``row`` of step ``step`` has emitted since its
        sentence's search began at step ``start``, and the row it was at each step
        start..step (the last is ``row`` itself)."""
        tokens, logps, rows = [], [], [row]
        for t in range(step - 1, start - 1, -1):
            tokens.append(self.tokens[t][row])
            logps.append(self.logps[t][row])
            row = self.parents[t][row]
            rows.append(row)
        return tokens[::-1], logps[::-1], rows[::-1]

    def attention(self, rows: list[int], src_len: int, start: int = 0) -> Tensor:
        """The attention matrix (len(rows), src_len) of the path through ``rows`` (the rows of
        steps start, start + 1, ...)."""
        rows_TS = [self.weights[start + t][r, :src_len] for t, r in enumerate(rows)]
        return torch.stack(rows_TS).float().cpu()

    def attentions(self, paths: list[tuple[list[int], int, int]]) -> list[Tensor | None]:
        """The attention matrices of many paths, read in one gather: for each
        ``(rows, src_len, start)`` what :meth:`attention` gives (None each without attention)."""
        if not paths or self.weights[0] is None:
            return [None] * len(paths)
        offsets, total = [], 0
        for weights_NS in self.weights:
            offsets.append(total)
            total += weights_NS.shape[0]
        S = max(w.shape[1] for w in self.weights)  # a stream's source length grows
        padded = [torch.nn.functional.pad(w.float(), (0, S - w.shape[1])) for w in self.weights]
        flat_XS = torch.cat(padded).cpu()  # X: every row of every step
        found = []
        for rows, src_len, start in paths:
            index = [offsets[start + t] + r for t, r in enumerate(rows)]
            found.append(flat_XS[index, :src_len])
        return found
