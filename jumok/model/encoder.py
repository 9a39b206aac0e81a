"""The encoder: embedding + RNN that keeps the hidden state of every step (lecture point 3).

It returns ``hs`` (B, S, C), the matrix the attention reads, and the RNN's final state at the
last *real* token of each sentence, which starts the decoder (point 4). The lecture's encoder is
one unidirectional LSTM layer (C = H); ``model.encoder`` also offers GRU cells, stacked layers
and a bidirectional encoder (C = 2H, both directions' states concatenated).

Batches are right-padded, and the state of every sentence is taken exactly at its last real
token, never after a pad step. Packing the batch would do that, but on a CPU a packed batch falls
back to a slow step-by-step kernel. A one-layer LSTM or GRU runs instead in one call of PyTorch's
fused kernel over the padded batch, with the padding made inert (:func:`run_padded`): each step
also reads a padding flag, weighted so that at a pad step the forget gate (the GRU's update gate)
is exactly 1 and the input gate exactly 0, so the cell state (the GRU's state) passes through pad
steps unchanged, and so does its gradient. Stacked layers run one call per distinct length
(:func:`run_by_length`), each run continuing from the previous run's state with only the
sentences still going. The backward direction of a bidirectional encoder is the same forward
run over each sentence reversed: in one call, the whole padded batch read from its end, where
the inert padding comes first and leaves the zero initial state exactly zero
(:func:`run_padded` with ``reverse``); run by length, each sentence reversed *within its own
length* (:func:`reverse_within_length`), so its padding stays at the end.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jumok.config import EncoderConfig
from jumok.data.vocab import PAD_ID
from jumok.fast.dropout import dropout_or_identity
from jumok.fast.padded_rnn import padded_run_applies, run_padded

# A GRU's state is h; an LSTM's is (h, c). Each is (L, B, H).
RNNState = Tensor | tuple[Tensor, Tensor]
# What the encoder hands the decoder: h and c (None for a GRU), each (L, B, C).
Final = tuple[Tensor, Tensor | None]


def make_rnn(
    kind: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
):
    """A batch-first ``nn.LSTM`` or ``nn.GRU`` (``dropout`` acts between stacked layers)."""
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    return cls(
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
    )


class Encoder(nn.Module):
    """Embedding + RNN over the source.

    Args:
        vocab_size: source vocabulary size V.
        cfg: ``model.encoder``.
        embedding_dropout: dropout on the embeddings.
        layer_dropout: dropout between stacked layers.
    """

    def __init__(
        self,
        vocab_size: int,
        cfg: EncoderConfig,
        embedding_dropout: float = 0.0,
        layer_dropout: float = 0.0,
        fast: bool = True,
    ):
        super().__init__()
        self.fast = fast  # jumok.fast: the padded one-call RNN and the cheaper dropout
        E, H, L = cfg.embedding_size, cfg.hidden_size, cfg.num_layers
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.embedding_dropout = dropout_or_identity(embedding_dropout, fast)
        self.bidirectional = cfg.bidirectional
        if not self.bidirectional:
            # All layers in one fused call.
            self.rnn = make_rnn(cfg.rnn, E, H, L, layer_dropout)
        else:
            # Layer l of each direction reads both directions of layer l - 1, so layers are run
            # one at a time.
            sizes = [E] + [2 * H] * (L - 1)
            self.forward_rnns = nn.ModuleList(make_rnn(cfg.rnn, n, H) for n in sizes)
            self.backward_rnns = nn.ModuleList(make_rnn(cfg.rnn, n, H) for n in sizes)
            self.layer_dropout = dropout_or_identity(layer_dropout, fast)

    def forward(self, src_BS: Tensor, src_len_B: Tensor) -> tuple[Tensor, Final]:
        """Encode a right-padded batch.

        Args:
            src_BS: source ids, padded with pad after each sentence.
            src_len_B: number of real tokens per sentence (>= 1).

        Returns:
            hs_BSC: the RNN output at every position (zero past each sentence's end); C = H, or
                2H when bidirectional (forward state first).
            final: (h, c) each (L, B, C) at each sentence's last real token (for the
                backward direction: after reading the first token); c is None for a GRU.
        """
        if src_BS.dim() != 2 or src_len_B.shape != src_BS.shape[:1]:
            raise ValueError(
                f"src: expected (B, S) with lengths (B,), got {tuple(src_BS.shape)} "
                f"and {tuple(src_len_B.shape)}"
            )
        x_BSE = self.embedding_dropout(self.embedding(src_BS))
        if not self.bidirectional:
            hs_BSC, state = run_rnn(self.rnn, x_BSE, src_len_B, fast=self.fast)
            return hs_BSC, split_state(state)
        x_BSI = x_BSE  # each layer's input: the embedding, then the layer below's hs
        finals: list[Final] = []
        for layer, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns, strict=True)):
            if layer > 0:
                x_BSI = self.layer_dropout(hs_BSC)
            out_f, state_f = run_rnn(fwd, x_BSI, src_len_B, fast=self.fast)
            out_b, state_b = run_rnn(bwd, x_BSI, src_len_B, reverse=True, fast=self.fast)
            hs_BSC = torch.cat([out_f, out_b], dim=-1)
            (h_f, c_f), (h_b, c_b) = split_state(state_f), split_state(state_b)
            finals.append(
                (
                    torch.cat([h_f, h_b], dim=-1),
                    None if c_f is None else torch.cat([c_f, c_b], dim=-1),
                )
            )
        h_LBC = torch.cat([h for h, _ in finals])
        c_LBC = None if finals[0][1] is None else torch.cat([c for _, c in finals])
        return hs_BSC, (h_LBC, c_LBC)


def split_state(state: RNNState) -> Final:
    """(h, c) of an LSTM, (h, None) of a GRU."""
    return (state[0], state[1]) if isinstance(state, tuple) else (state, None)


def reverse_within_length(x_BSD: Tensor, len_B: Tensor) -> Tensor:
    """Reverse each sequence's first ``len`` positions and leave its padding where it is.

    ``[a, b, c, pad]`` with length 3 becomes ``[c, b, a, pad]``; applying it twice is the identity.
    """
    S = x_BSD.shape[1]
    s_S = torch.arange(S, device=x_BSD.device)
    index_BS = torch.where(s_S < len_B.unsqueeze(1), len_B.unsqueeze(1) - 1 - s_S, s_S)
    return x_BSD.gather(1, index_BS.unsqueeze(-1).expand_as(x_BSD))


def _rows(state: RNNState, start: int, stop: int) -> RNNState:
    """Batch rows ``start:stop`` of an RNN state (batch is dim 1)."""
    if isinstance(state, tuple):
        return state[0][:, start:stop], state[1][:, start:stop]
    return state[:, start:stop]


def _cat_rows(states: list[RNNState]) -> RNNState:
    if isinstance(states[0], tuple):
        return torch.cat([s[0] for s in states], dim=1), torch.cat([s[1] for s in states], dim=1)
    return torch.cat(states, dim=1)


def _index_rows(state: RNNState, index_B: Tensor) -> RNNState:
    if isinstance(state, tuple):
        return state[0].index_select(1, index_B), state[1].index_select(1, index_B)
    return state.index_select(1, index_B)


def run_rnn(
    rnn: nn.RNNBase, x_BSE: Tensor, len_B: Tensor, reverse: bool = False, fast: bool = True
) -> tuple[Tensor, RNNState]:
    """Run a batch-first LSTM or GRU over right-padded sequences, stopping each at its own length:
    :func:`run_padded` for one layer on a CPU, else :func:`run_by_length` (on a GPU too: the
    appended weight column would have cuDNN copy the weights at every call, untested here).
    Same results, same shapes. ``fast`` False: always :func:`run_by_length` (the readable way).

    ``reverse``: read each sentence from its last real token to its first (the backward
    direction of a bidirectional encoder); the outputs come back in source order."""
    padded = fast and x_BSE.device.type == "cpu" and padded_run_applies(rnn)
    if reverse and padded:
        return run_padded(rnn, x_BSE, len_B, reverse=True)
    if reverse:
        out_BSH, state = run_by_length(rnn, reverse_within_length(x_BSE, len_B), len_B)
        return reverse_within_length(out_BSH, len_B), state
    if padded and int(len_B.min()) < x_BSE.shape[1]:
        return run_padded(rnn, x_BSE, len_B)
    return run_by_length(rnn, x_BSE, len_B)


def run_by_length(rnn: nn.RNNBase, x_BSE: Tensor, len_B: Tensor) -> tuple[Tensor, RNNState]:
    """Run a batch-first LSTM or GRU over right-padded sequences, stopping each at its own length.

    Worked example, lengths [2, 5, 5, 3]: sorted longest first -> [5, 5, 3, 2]. Run 1 covers
    steps 0-1 for all four and finishes the length-2 sentence; run 2 continues steps 2 for the
    first three and finishes the length-3 one; run 3 covers steps 3-4 for the first two.

    Returns:
        hs_BSH: outputs, zero at padding.
        state: the state after each sequence's last real step ((h, c) for an LSTM), each
            (L, B, H).
    """
    B, S, _ = x_BSE.shape
    lengths = len_B.tolist()
    order = sorted(range(B), key=lambda i: -lengths[i])
    sorted_len = [lengths[i] for i in order]
    order_B = torch.tensor(order, device=x_BSE.device)
    x_sorted = x_BSE.index_select(0, order_B) if order != list(range(B)) else x_BSE
    pieces, finals = [], []
    state = None
    start = 0
    for length in sorted(set(sorted_len)):
        n = sum(1 for v in sorted_len if v >= length)  # sentences still going: a prefix
        if state is not None:
            state = _rows(state, 0, n)
        out_nsH, state = rnn(x_sorted[:n, start:length], state)  # s = length - start steps
        pieces.append(nn.functional.pad(out_nsH, (0, 0, 0, 0, 0, B - n)))
        done = sum(1 for v in sorted_len if v == length)  # these end here: the prefix's tail
        finals.append(_rows(state, n - done, n))
        start = length
    hs_sorted = torch.cat(pieces, dim=1)
    if start < S:
        hs_sorted = nn.functional.pad(hs_sorted, (0, 0, 0, S - start))
    # Finished groups were collected shortest first, i.e. from the end of the sorted order.
    final_sorted = _cat_rows(finals[::-1])
    if order == list(range(B)):
        return hs_sorted, final_sorted
    inverse_B = torch.empty_like(order_B)
    inverse_B[order_B] = torch.arange(B, device=x_BSE.device)
    return hs_sorted.index_select(0, inverse_B), _index_rows(final_sorted, inverse_B)
