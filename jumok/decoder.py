"""The attention decoder: embedding + LSTM + attention at every step + output layer (points 4-7).

One method, :meth:`Decoder.forward`, serves both uses:

* teacher forcing: ``tgt_in_BT`` holds all T inputs (bos + target). The lecture's decoder has no
  input feeding (the attention output is not fed back into the LSTM), so the LSTM runs over the
  whole target at once and the attention of all T steps is two batched matrix products;
* generation: ``tgt_in_BT`` holds one step (T = 1) and the returned state is passed back in.

The two give the same numbers (a test holds the line), so search decodes exactly what training
trained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jumok.attention import DotAttention
from jumok.config import DecoderConfig
from jumok.vocab import PAD_ID

State = tuple[Tensor, Tensor]  # LSTM (h, c), each (1, B, H)


class Decoder(nn.Module):
    """Attention decoder of the lecture.

    Args:
        vocab_size: target vocabulary size V.
        cfg: sizes (``model.decoder``).
    """

    def __init__(self, vocab_size: int, cfg: DecoderConfig):
        super().__init__()
        H = cfg.hidden_size
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_size, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(cfg.embedding_size, H, batch_first=True)
        self.attention = DotAttention()
        # Lecture point 7: the context and the LSTM state together predict the next word. As in
        # the book (ch. 8 AttentionDecoder) this is one affine layer over [context; h], no tanh.
        self.output = nn.Linear(2 * H, vocab_size)

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

    def forward(
        self, tgt_in_BT: Tensor, state: State, hs_BSH: Tensor, mask_BS: Tensor
    ) -> tuple[Tensor, State, Tensor]:
        """Run T decoder steps.

        Args:
            tgt_in_BT: input tokens (bos + target when teacher forcing; one token when generating).
            state: LSTM (h, c) before the first of these steps.
            hs_BSH: encoder states.
            mask_BS: True at real source tokens.

        Returns:
            logits_BTV: next-token scores for each step.
            state: LSTM (h, c) after the last step.
            weights_BTS: attention weights of each step over source positions.
        """
        emb_BTE = self.embedding(tgt_in_BT)
        h_BTH, state = self.lstm(emb_BTE, state)
        context_BTH, weights_BTS = self.attention(h_BTH, hs_BSH, mask_BS)
        logits_BTV = self.output(torch.cat([context_BTH, h_BTH], dim=-1))
        return logits_BTV, state, weights_BTS
