"""Seq2Seq: the encoder and the attention decoder wired together; :func:`build_model`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jumok.config import ModelConfig
from jumok.data.vocab import PAD_ID
from jumok.fast import enabled as fast_enabled
from jumok.fast.sliced_loss import StepwiseCrossEntropy, output_cross_entropy
from jumok.fast.step_attention import attention_in_float32
from jumok.model.attention import step_attention
from jumok.model.decoder import Decoder, DecoderState, Encoded
from jumok.model.encoder import Encoder

__all__ = ["DecoderState", "Encoded", "Seq2Seq", "build_model"]

# Parameter names before the RNN cell became configurable (checkpoints of format version 1 written
# before this change), mapped to today's names so those checkpoints still load.
_RENAMED = {"encoder.lstm.": "encoder.rnn.", "decoder.lstm.": "decoder.rnn."}


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention (the lecture's model).

    Args:
        cfg: ``model`` section of the config.
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        fast: use :mod:`jumok.fast` (the same maths, faster on a CPU); False runs the plain
            version of every trick.
    """

    def __init__(
        self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, fast: bool = True
    ):
        super().__init__()
        self.is_lm = cfg.type == "lm"
        self.fast = fast  # jumok.fast's tricks where they apply; the plain maths otherwise
        d = cfg.dropout
        self.encoder = (
            None
            if self.is_lm
            else Encoder(src_vocab_size, cfg.encoder, d.embeddings, d.layers, fast=fast)
        )
        self.decoder = Decoder(tgt_vocab_size, cfg, fast=fast)
        if cfg.init == "uniform":
            uniform_init(self, cfg.init_range)
        elif cfg.init != "pytorch":
            fan_in_init(self, embedding_std=0.01 if cfg.init == "book" else 1.0)
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    def encode(self, src_BS: Tensor, src_len_B: Tensor) -> Encoded:
        """Encode a right-padded source batch; keys are computed here, once.

        A language model (``model.type: lm``) reads no source: its decoder starts from zeros and
        ``hs`` is one zero row per sentence.
        """
        if self.encoder is None:
            B, H, L = src_BS.shape[0], self.decoder.hidden_size, self.decoder.num_layers
            zeros_LBH = torch.zeros(L, B, H, device=src_BS.device)
            return Encoded(
                hs_BSH=zeros_LBH.new_zeros(B, 1, H),
                mask_BS=torch.ones(B, 1, dtype=torch.bool, device=src_BS.device),
                state=self.decoder.initial_state((zeros_LBH, zeros_LBH)),
                keys_BSH=None,
                summary_BH=zeros_LBH[-1],
            )
        hs_BSC, final = self.encoder(src_BS, src_len_B)
        S = src_BS.shape[1]
        mask_BS = src_len_B.unsqueeze(1) > torch.arange(S, device=src_BS.device).unsqueeze(0)
        keys_BSH = self.decoder.prepare_keys(hs_BSC)
        dot_product = step_attention(self.decoder.attention)
        if self.fast and attention_in_float32(dot_product, hs_BSC):  # bf16 decoding on a CPU
            hs_BSC, keys_BSH = hs_BSC.float(), keys_BSH.float()
        return Encoded(
            hs_BSH=hs_BSC,
            mask_BS=mask_BS,
            state=self.decoder.initial_state(final),
            keys_BSH=keys_BSH,
            summary_BH=final[0][-1],
        )

    def decode_step(
        self, tokens_B: Tensor, state: DecoderState, enc: Encoded
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
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

    def loss(
        self,
        src_BS: Tensor,
        src_len_B: Tensor,
        tgt_in_BT: Tensor,
        tgt_out_BT: Tensor,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """The teacher-forced cross-entropy, summed over the real target tokens (padding ignored).

        The same number as ``cross_entropy(forward(...)[0], tgt_out_BT, reduction="sum")``, with
        the output layer and the loss computed together a slice of rows at a time
        (:func:`jumok.fast.sliced_loss.output_cross_entropy`): the (B, T, V) logits never exist. With input
        feeding and gradients (training), a slice of a few steps as soon as the decoder loop has
        made them (:class:`jumok.fast.sliced_loss.StepwiseCrossEntropy`).
        """
        enc = self.encode(src_BS, src_len_B)
        if not self.fast:  # the plain way: the (B, T, V) logits, then the cross-entropy
            features_BTF, _, _ = self.decoder.features(tgt_in_BT, enc.state, enc)
            logits_BTV = self.decoder.output(features_BTF)
            return F.cross_entropy(
                logits_BTV.float().reshape(-1, logits_BTV.shape[-1]),
                tgt_out_BT.reshape(-1),
                ignore_index=PAD_ID,
                reduction="sum",
                label_smoothing=label_smoothing,
            )
        if self.decoder.input_feeding and torch.is_grad_enabled():  # step by step: the loss too
            stepwise = StepwiseCrossEntropy(
                self.decoder.output, tgt_out_BT, label_smoothing, ignore_index=PAD_ID
            )
            features_BTF, _, _ = self.decoder.features(
                tgt_in_BT, enc.state, enc, each_step=stepwise.add
            )
            return stepwise.total(features_BTF)
        features_BTF, _, _ = self.decoder.features(tgt_in_BT, enc.state, enc)
        return output_cross_entropy(
            features_BTF.reshape(-1, features_BTF.shape[-1]),
            self.decoder.output,
            tgt_out_BT.reshape(-1),
            label_smoothing,
            ignore_index=PAD_ID,
        )


def build_model(
    cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, fast: bool | None = None
) -> Seq2Seq:
    """Build the model described by ``cfg`` for the given vocabulary sizes.

    ``fast``: use :mod:`jumok.fast` (None: unless the environment says ``JUMOK_FAST=0``)."""
    return Seq2Seq(
        cfg, src_vocab_size, tgt_vocab_size, fast=fast_enabled() if fast is None else fast
    )


@torch.no_grad()
def fan_in_init(model: nn.Module, embedding_std: float) -> None:
    """Every weight matrix normal with variance 1/fan_in, biases zero, embeddings normal.

    With ``embedding_std=0.01`` these are the book's initial weights (ch. 7-8 ``Seq2seq``,
    ``AttentionSeq2seq``: ``randn(D, H) / sqrt(D)``, zero biases, ``randn(V, D) / 100``);
    ``model.init: lecun`` keeps unit-variance embeddings. The padding row stays zero. A tied
    output matrix is the embedding, so it keeps the embedding's initialisation.
    """
    embeddings = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embeddings.add(id(module.weight))
    for p in model.parameters():
        if id(p) in embeddings:
            continue
        if p.dim() >= 2:
            # (out, in): fan_in is the second dimension, unless the weight is one part of a
            # larger input (jumok.fast.feeding splits nn.LSTM's input weights and says so)
            p.normal_(0.0, getattr(p, "fan_in", p.shape[1]) ** -0.5)
        else:
            p.zero_()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, embedding_std)
    _zero_padding_rows(model)


@torch.no_grad()
def uniform_init(model: nn.Module, bound: float) -> None:
    """Every parameter uniform in [-bound, bound], biases and embeddings too; padding rows zero.

    OpenNMT-py's ``param_init`` (0.1 in its recipes). Not the lecture's initialisation: in the
    peers' Multi30k setting it reached 35.5 dev BLEU in 20 minutes against 31.0 with ``lecun``
    (examples/multi30k/README.md), so the Multi30k recipe uses it.
    """
    for p in model.parameters():
        p.uniform_(-bound, bound)
    _zero_padding_rows(model)


def _zero_padding_rows(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()


def _rename_legacy_keys(state_dict, prefix, *args) -> None:
    for key in list(state_dict):
        for old, new in _RENAMED.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
