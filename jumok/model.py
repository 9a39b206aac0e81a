"""Seq2Seq: the encoder and the attention decoder wired together; :func:`build_model`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jumok.config import ModelConfig
from jumok.decoder import Decoder, Encoded, State
from jumok.encoder import Encoder

__all__ = ["Encoded", "Seq2Seq", "build_model"]


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention (the lecture's model).

    Args:
        cfg: ``model`` section of the config.
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
    """

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.encoder = Encoder(src_vocab_size, cfg.encoder)
        self.decoder = Decoder(tgt_vocab_size, cfg.decoder, cfg.attention)

    def encode(self, src_BS: Tensor, src_len_B: Tensor) -> Encoded:
        """Encode a right-padded source batch; keys are computed here, once."""
        hs_BSH, last = self.encoder(src_BS, src_len_B)
        S = src_BS.shape[1]
        mask_BS = src_len_B.unsqueeze(1) > torch.arange(S, device=src_BS.device).unsqueeze(0)
        return Encoded(
            hs_BSH=hs_BSH,
            mask_BS=mask_BS,
            state=self.decoder.initial_state(last),
            keys_BSH=self.decoder.prepare_keys(hs_BSH),
            summary_BH=last[0][-1],
        )

    def decode_step(
        self, tokens_B: Tensor, state: State, enc: Encoded
    ) -> tuple[Tensor, State, Tensor | None]:
        """One generation step: (logits_BV, new state, weights_BS or None)."""
        logits_B1V, state, weights_B1S = self.decoder(tokens_B.unsqueeze(1), state, enc)
        weights_BS = None if weights_B1S is None else weights_B1S.squeeze(1)
        return logits_B1V.squeeze(1), state, weights_BS

    def forward(
        self, src_BS: Tensor, src_len_B: Tensor, tgt_in_BT: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass over all target steps at once.

        Returns:
            logits_BTV: next-token scores after each input token.
            weights_BTS: attention weights of each output step (None without attention).
        """
        enc = self.encode(src_BS, src_len_B)
        logits_BTV, _, weights_BTS = self.decoder(tgt_in_BT, enc.state, enc)
        return logits_BTV, weights_BTS


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """Build the model described by ``cfg`` for the given vocabulary sizes."""
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size)
