"""The encoder: embedding + LSTM that keeps the hidden state of every step (lecture point 3).

It returns ``hs`` (B, S, H), the matrix the attention reads, and the LSTM state (h, c) at the last
*real* token of each sentence, which starts the decoder (point 4).

Batches are right-padded. Rather than packing the batch (which on CPU falls back to a slow
step-by-step kernel), :func:`run_by_length` sorts the sentences by length and runs PyTorch's fused
LSTM once per distinct length, each run continuing from the previous run's state with only the
sentences that are still going. With length bucketing a batch has one to three distinct lengths,
so this costs one to three kernel calls, and the state of every sentence is taken exactly at its
last real token, never after a pad step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jumok.config import EncoderConfig
from jumok.vocab import PAD_ID

State = tuple[Tensor, Tensor]  # LSTM (h, c), each (layers, B, H)


class Encoder(nn.Module):
    """Embedding + one-layer LSTM over the source.

    Args:
        vocab_size: source vocabulary size V.
        cfg: sizes (``model.encoder``).
    """

    def __init__(self, vocab_size: int, cfg: EncoderConfig):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_size, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(cfg.embedding_size, cfg.hidden_size, batch_first=True)

    def forward(self, src_BS: Tensor, src_len_B: Tensor) -> tuple[Tensor, State]:
        """Encode a right-padded batch.

        Args:
            src_BS: source ids, padded with pad after each sentence.
            src_len_B: number of real tokens per sentence (>= 1).

        Returns:
            hs_BSH: the LSTM output at every position (zero past each sentence's end).
            last: the LSTM state (h, c), each (1, B, H), at each sentence's last real token.
        """
        if src_BS.dim() != 2 or src_len_B.shape != src_BS.shape[:1]:
            raise ValueError(
                f"src: expected (B, S) with lengths (B,), got {tuple(src_BS.shape)} "
                f"and {tuple(src_len_B.shape)}"
            )
        emb_BSE = self.embedding(src_BS)
        return run_by_length(self.lstm, emb_BSE, src_len_B)


def run_by_length(lstm: nn.LSTM, x_BSE: Tensor, len_B: Tensor) -> tuple[Tensor, State]:
    """Run a batch-first LSTM over right-padded sequences, stopping each at its own length.

    Worked example, lengths [2, 5, 5, 3]: sorted longest first -> [5, 5, 3, 2]. Run 1 covers
    steps 0-1 for all four and finishes the length-2 sentence; run 2 continues steps 2 for the
    first three and finishes the length-3 one; run 3 covers steps 3-4 for the first two.

    Returns:
        hs_BSH: outputs, zero at padding.
        (h, c): each (layers, B, H), the state after each sequence's last real step.
    """
    B, S, _ = x_BSE.shape
    lengths = len_B.tolist()
    order = sorted(range(B), key=lambda i: -lengths[i])
    sorted_len = [lengths[i] for i in order]
    order_B = torch.tensor(order, device=x_BSE.device)
    x_sorted = x_BSE.index_select(0, order_B) if order != list(range(B)) else x_BSE
    pieces, finals_h, finals_c = [], [], []
    state = None
    start = 0
    for length in sorted(set(sorted_len)):
        n = sum(1 for v in sorted_len if v >= length)  # sentences still going: a prefix
        if state is not None:
            state = (state[0][:, :n], state[1][:, :n])
        out_nLH, state = lstm(x_sorted[:n, start:length], state)
        pieces.append(nn.functional.pad(out_nLH, (0, 0, 0, 0, 0, B - n)))
        done = sum(1 for v in sorted_len if v == length)  # these end here: the prefix's tail
        finals_h.append(state[0][:, n - done : n])
        finals_c.append(state[1][:, n - done : n])
        start = length
    hs_sorted = torch.cat(pieces, dim=1)
    if start < S:
        hs_sorted = nn.functional.pad(hs_sorted, (0, 0, 0, S - start))
    # Finished groups were collected shortest first, i.e. from the end of the sorted order.
    h_sorted = torch.cat(finals_h[::-1], dim=1)
    c_sorted = torch.cat(finals_c[::-1], dim=1)
    if order == list(range(B)):
        return hs_sorted, (h_sorted, c_sorted)
    inverse_B = torch.empty_like(order_B)
    inverse_B[order_B] = torch.arange(B, device=x_BSE.device)
    return (
        hs_sorted.index_select(0, inverse_B),
        (h_sorted.index_select(1, inverse_B), c_sorted.index_select(1, inverse_B)),
    )
