"""What every search returns and reads: a :class:`Hypothesis`, the queue of sentences
waiting for a place in a streaming search (:class:`Waiting`), and :func:`collect`, which cuts a
batch of decoded rows into hypotheses.

Each hypothesis carries its tokens, total log-probability, per-token log-probabilities and its
attention matrix (output tokens x source tokens, in the order the model saw the source).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from jumok.data.vocab import EOS_ID
from jumok.model.seq2seq import Encoded, Seq2Seq


@dataclass
class Hypothesis:
    """One decoded output.

    Attributes:
        token_ids: output ids, ending with eos when the model finished the sentence.
        score: sum of the log-probabilities of ``token_ids``.
        token_logprobs: log-probability of each output id.
        attention_TS: attention weights, one row per output id, one column per real source token
            (None for a model without attention).
        finished: whether the model emitted eos within the length limit.
        normalized_score: the score beam search ranks by (length and coverage penalties
            applied); None for greedy decoding, which ranks nothing.
    """

    token_ids: list[int]
    score: float
    token_logprobs: list[float]
    attention_TS: Tensor | None
    finished: bool
    normalized_score: float | None = None


# Sentences encoded together by streaming search: consecutive batches are joined up to this
# many rows, so the encoder runs fewer, larger products (its results do not depend on it).
ENCODE_ROWS = 256


class Waiting:
    """The sentences of a list of batches that have not started yet, in order. Consecutive
    batches are encoded together (up to :data:`ENCODE_ROWS` sentences) when their first
    sentence is taken.

    Sentences are numbered across batches (global ids): batch b's row i is
    ``first_id[b] + i``.
    """

    def __init__(self, model: Seq2Seq, batches: Sequence[tuple[Tensor, Tensor]]):
        self.model, self.batches = model, batches
        self.sizes = [src_BS.shape[0] for src_BS, _ in batches]
        self.first_id = [sum(self.sizes[:b]) for b in range(len(batches))]
        self.total = sum(self.sizes)
        self.next = 0  # global id of the next sentence to take
        self.groups: list[list[int]] = []  # the batches encoded together
        self.group_size: list[int] = []  # sentences in each group
        for b, size in enumerate(self.sizes):
            if not self.groups or self.group_size[-1] + size > ENCODE_ROWS:
                self.groups.append([])
                self.group_size.append(0)
            self.groups[-1].append(b)
            self.group_size[-1] += size
        self.group_first = [self.first_id[group[0]] for group in self.groups]
        self.encoded: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return self.total - self.next

    def _encode(self, g: int) -> Encoded:
        """The sentences of group g, encoded in one call."""
        parts = [self.batches[b] for b in self.groups[g]]
        S = max(src_BS.shape[1] for src_BS, _ in parts)
        src_BS = torch.cat([nn.functional.pad(src, (0, S - src.shape[1])) for src, _ in parts])
        return self.model.encode(src_BS, torch.cat([length for _, length in parts]))

    def take(self, n: int) -> tuple[Encoded, Tensor]:
        """The next (at most) n sentences: their encodings, padded to one source length, and
        their global ids."""
        device = self.batches[0][0].device
        ids = list(range(self.next, min(self.next + n, self.total)))
        self.next += len(ids)
        parts = []
        start = bisect.bisect_right(self.group_first, ids[0]) - 1
        for g in range(start, len(self.groups)):
            first, size = self.group_first[g], self.group_size[g]
            if first >= self.next:
                break
            rows = [i - first for i in ids if first <= i < first + size]
            if g not in self.encoded:
                self.encoded[g] = self._encode(g)
            parts.append(self.encoded[g].select(torch.tensor(rows, device=device)))
            if rows[-1] == size - 1:
                del self.encoded[g]  # every sentence of group g has started
        S = max(enc.source_length for enc in parts)
        enc = parts[0].padded(S)
        for other in parts[1:]:
            enc = enc.cat(other.padded(S))
        return enc, torch.tensor(ids, device=device)

    def split(self, per_sentence: list) -> list[list]:
        """A list over global ids cut into one list per batch."""
        return [
            per_sentence[first : first + size]
            for first, size in zip(self.first_id, self.sizes, strict=True)
        ]


def collect(
    ids_BT: Tensor, logp_BT: Tensor, weights_BTS: Tensor | None, src_len_B: Tensor
) -> list[Hypothesis]:
    """Cut each row after its first eos and keep its real source columns."""
    ids_BT, logp_BT = ids_BT.cpu(), logp_BT.cpu()
    weights_BTS = None if weights_BTS is None else weights_BTS.cpu()
    hyps = []
    for b in range(ids_BT.shape[0]):
        row = ids_BT[b].tolist()
        finished = EOS_ID in row
        length = row.index(EOS_ID) + 1 if finished else len(row)
        token_logprobs = logp_BT[b, :length].tolist()
        hyps.append(
            Hypothesis(
                token_ids=row[:length],
                score=float(sum(token_logprobs)),
                token_logprobs=token_logprobs,
                attention_TS=None
                if weights_BTS is None
                else weights_BTS[b, :length, : int(src_len_B[b])],
                finished=finished,
            )
        )
    return hyps
