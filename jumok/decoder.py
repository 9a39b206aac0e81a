"""The attention decoder: embedding + LSTM + attention at every step + output layer (points 4-7).

One method, :meth:`Decoder.forward`, serves both uses:

* teacher forcing: ``tgt_in_BT`` holds all T inputs (bos + target). The lecture's decoder has no
  input feeding (the attention output is not fed back into the LSTM), so the LSTM runs over the
  whole target at once and the attention of all T steps is two batched matrix products;
* generation: ``tgt_in_BT`` holds one step (T = 1) and the returned state is passed back in.

The two give the same numbers (a test holds the line), so search decodes exactly what training
trained.

Options beyond the lecture's model (``model.attention``, ``model.decoder.peeky``) give the rungs of
the book's ladder: ``none`` is the plain decoder of ch. 7 (no attention, output from h alone);
Peeky (ch. 7) concatenates the encoder's last hidden state to the LSTM input and to the output
layer's input at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from jumok.attention import build_attention
from jumok.config import DecoderConfig
from jumok.vocab import PAD_ID

State = tuple[Tensor, Tensor]  # LSTM (h, c), each (layers, B, H)


@dataclass(frozen=True)
class Encoded:
    """What the decoder needs from the encoder, computed once per batch.

    Attributes:
        hs_BSH: encoder states (zero past each sentence's end).
        mask_BS: True at real source tokens.
        state: the decoder's start state.
        keys_BSH: the attention's keys, ``prepare_keys(hs)``; None without attention.
        summary_BH: the encoder's last hidden state, the vector a Peeky decoder sees every step.
    """

    hs_BSH: Tensor
    mask_BS: Tensor
    state: State
    keys_BSH: Tensor | None
    summary_BH: Tensor

    def select(self, index_B: Tensor) -> Encoded:
        """The rows of ``index_B`` (used when sentences leave or repeat in a batch)."""
        return Encoded(
            self.hs_BSH.index_select(0, index_B),
            self.mask_BS.index_select(0, index_B),
            (self.state[0].index_select(1, index_B), self.state[1].index_select(1, index_B)),
            None if self.keys_BSH is None else self.keys_BSH.index_select(0, index_B),
            self.summary_BH.index_select(0, index_B),
        )


class Decoder(nn.Module):
    """Attention decoder of the lecture (and the ladder's other rungs).

    Args:
        vocab_size: target vocabulary size V.
        cfg: sizes and Peeky (``model.decoder``).
        attention: ``model.attention``.
    """

    def __init__(self, vocab_size: int, cfg: DecoderConfig, attention: str = "dot"):
        super().__init__()
        H, E = cfg.hidden_size, cfg.embedding_size
        self.peeky = cfg.peeky
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(E + (H if self.peeky else 0), H, batch_first=True)
        self.attention = None if attention == "none" else build_attention(attention, H)
        # Lecture point 7: the context and the LSTM state together predict the next word. As in
        # the book (ch. 8 AttentionDecoder) this is one affine layer over [context; h], no tanh.
        features = H + (H if self.attention is not None else 0) + (H if self.peeky else 0)
        self.output = nn.Linear(features, vocab_size)

    @staticmethod
    def initial_state(encoder_last: State) -> State:
        """Decoder start state: the encoder's LSTM state (h, c) at the last real token (point 4).

        Departure from the book: its ``Decoder`` (ch. 7-8, ``lstm.set_state(h)``) passes only h and
        starts c at zero. Passing c as well is what PyTorch toolkits do, and on the date task it
        is the difference between 0.2% and 48% exact match after one epoch (measured, see
        docs/lecture.md), because the month and day are read last and live mostly in c.
        """
        h_1BH, c_1BH = encoder_last
        return h_1BH.contiguous(), c_1BH.contiguous()

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor | None:
        """The attention's keys, computed once per batch (None without attention)."""
        return None if self.attention is None else self.attention.prepare_keys(hs_BSH)

    def forward(
        self, tgt_in_BT: Tensor, state: State, enc: Encoded
    ) -> tuple[Tensor, State, Tensor | None]:
        """Run T decoder steps.

        Args:
            tgt_in_BT: input tokens (bos + target when teacher forcing; one token when generating).
            state: LSTM (h, c) before the first of these steps.
            enc: the encoder's outputs for this batch.

        Returns:
            logits_BTV: next-token scores for each step.
            state: LSTM (h, c) after the last step.
            weights_BTS: attention weights of each step over source positions (None without
                attention).
        """
        emb_BTE = self.embedding(tgt_in_BT)
        T = emb_BTE.shape[1]
        if self.peeky:
            summary_BTH = enc.summary_BH.unsqueeze(1).expand(-1, T, -1)
            emb_BTE = torch.cat([emb_BTE, summary_BTH], dim=-1)
        h_BTH, state = self.lstm(emb_BTE, state)
        features = [h_BTH]
        weights_BTS = None
        if self.attention is not None:
            context_BTH, weights_BTS = self.attention(h_BTH, enc.hs_BSH, enc.mask_BS, enc.keys_BSH)
            features = [context_BTH, h_BTH]
        if self.peeky:
            features.append(summary_BTH)
        logits_BTV = self.output(torch.cat(features, dim=-1) if len(features) > 1 else h_BTH)
        return logits_BTV, state, weights_BTS
