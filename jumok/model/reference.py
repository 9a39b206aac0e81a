"""The lecture's model in plain PyTorch, top to bottom: read this first (SUMMARY.md points 1-8).

The same function as jumok's production model (:mod:`jumok.model.seq2seq`) with the default
config, or with ``decoder.input_feeding``, without its speed code: ``tests/test_reference.py``
checks that the logits, the loss, every gradient and the greedy output agree. Shape suffixes as
in :mod:`jumok.model.attention`: B batch, S source, T target, E embedding, H hidden, V vocabulary.

* Point 1, an encoder-decoder: :class:`Seq2Seq`, an :class:`Encoder` and a :class:`Decoder`.
* Points 2-3, :class:`Encoder`: an LSTM that keeps the hidden state of every step, ``hs``.
* Point 4, :meth:`Seq2Seq.start`: the decoder starts from the encoder's final state.
* Points 5-6, :func:`attend`: dot scores ``hs . h``, a softmax over the real source positions,
  and the context vector, the weighted sum of the rows of ``hs``.
* Point 7, :meth:`Decoder.step`: at every output step, ``Linear([context; h])`` scores the next
  word. Point 6's end-to-end learning: :meth:`Seq2Seq.loss`. Decoding: :func:`greedy`.

Departures from the book, shared with production (docs/lecture.md): the decoder starts from the
encoder's (h, c), not h alone; padding is masked; outputs end with eos. Not in the lecture:
input feeding (Luong et al. 2015, sec. 3.3): the output layer reads the attentional vector
``tanh(W [context; h])``, which the next step's LSTM also reads beside the embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jumok.data.vocab import BOS_ID, EOS_ID, PAD_ID

# The decoder's state between steps: the LSTM's (h_1BH, c_1BH) and feed_BH (input feeding).
State = tuple[tuple[Tensor, Tensor], Tensor | None]


class Encoder(nn.Module):
    """Embedding + LSTM over the source, keeping every hidden state (points 2-3)."""

    def __init__(self, vocab_size: int, E: int, H: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.rnn = nn.LSTM(E, H, batch_first=True)

    def forward(self, src_BS: Tensor, src_len_B: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """hs_BSH (zero past each sentence's end) and the final (h_1BH, c_1BH). Packing runs each
        sentence for its own length: its final state is the one at its last real token."""
        x_BSE, len_B = self.embedding(src_BS), src_len_B.cpu()  # packing wants lengths on the CPU
        packed = pack_padded_sequence(x_BSE, len_B, batch_first=True, enforce_sorted=False)
        hs_packed, final = self.rnn(packed)
        hs_BSH, _ = pad_packed_sequence(hs_packed, batch_first=True, total_length=src_BS.shape[1])
        return hs_BSH, final


def attend(h_BH: Tensor, hs_BSH: Tensor, mask_BS: Tensor) -> tuple[Tensor, Tensor]:
    """The attention layer (points 5-6): returns context_BH and weights_BS (0 at padding)."""
    scores_BS = (hs_BSH @ h_BH.unsqueeze(2)).squeeze(2)  # scores[b, s] = hs[b, s] . h[b]
    scores_BS = scores_BS.masked_fill(~mask_BS, float("-inf"))
    weights_BS = scores_BS.softmax(dim=1)
    context_BH = (weights_BS.unsqueeze(2) * hs_BSH).sum(dim=1)
    return context_BH, weights_BS


class Decoder(nn.Module):
    """Embedding + LSTM + attention + output layer, one output step at a time (points 4-7)."""

    def __init__(self, vocab_size: int, E: int, H: int, input_feeding: bool = False):
        super().__init__()
        self.input_feeding = input_feeding
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.rnn = nn.LSTM(E + H if input_feeding else E, H, batch_first=True)
        # Input feeding only: Luong's attentional layer, no bias (W_c in eq. 5).
        self.attentional = nn.Linear(2 * H, H, bias=False) if input_feeding else None
        self.output = nn.Linear(H if input_feeding else 2 * H, vocab_size)

    def step(
        self, token_B: Tensor, state: State, hs_BSH: Tensor, mask_BS: Tensor
    ) -> tuple[Tensor, State, Tensor]:
        """One output step from the previous token: (logits_BV, new state, weights_BS)."""
        (h_1BH, c_1BH), feed_BH = state
        x_B1E = self.embedding(token_B).unsqueeze(1)
        if self.input_feeding:  # the LSTM reads [embedding; previous attentional vector]
            x_B1E = torch.cat([x_B1E, feed_BH.unsqueeze(1)], dim=2)
        _, (h_1BH, c_1BH) = self.rnn(x_B1E, (h_1BH, c_1BH))
        context_BH, weights_BS = attend(h_1BH[0], hs_BSH, mask_BS)
        features_BF = torch.cat([context_BH, h_1BH[0]], dim=1)  # point 7: [context; h]
        if self.input_feeding:
            features_BF = feed_BH = self.attentional(features_BF).tanh()
        return self.output(features_BF), ((h_1BH, c_1BH), feed_BH), weights_BS


class Seq2Seq(nn.Module):
    """The encoder and the attention decoder (point 1); both embeddings have size E."""

    def __init__(self, src_vocab: int, tgt_vocab: int, E: int, H: int, input_feeding: bool = False):
        super().__init__()
        self.encoder = Encoder(src_vocab, E, H)
        self.decoder = Decoder(tgt_vocab, E, H, input_feeding)

    def start(self, src_BS: Tensor, src_len_B: Tensor) -> tuple[Tensor, Tensor, State]:
        """Encode: hs_BSH, mask_BS (True at real tokens) and the decoder's start state (point 4)."""
        hs_BSH, final = self.encoder(src_BS, src_len_B)
        mask_BS = torch.arange(src_BS.shape[1], device=src_BS.device) < src_len_B.unsqueeze(1)
        feed_BH = torch.zeros_like(final[0][0]) if self.decoder.input_feeding else None
        return hs_BSH, mask_BS, (final, feed_BH)

    def forward(
        self, src_BS: Tensor, src_len_B: Tensor, tgt_in_BT: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing, one step at a time as in decoding (production runs all T steps in one
        LSTM call when it can): logits_BTV and weights_BTS after each token of bos + target."""
        hs_BSH, mask_BS, state = self.start(src_BS, src_len_B)
        logits, weights = [], []
        for token_B in tgt_in_BT.unbind(dim=1):
            logits_BV, state, weights_BS = self.decoder.step(token_B, state, hs_BSH, mask_BS)
            logits.append(logits_BV)
            weights.append(weights_BS)
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    def loss(
        self, src_BS: Tensor, src_len_B: Tensor, tgt_in_BT: Tensor, tgt_out_BT: Tensor
    ) -> Tensor:
        """Cross-entropy summed over the real target tokens (production's ``Seq2Seq.loss``)."""
        logits_BTV, _ = self(src_BS, src_len_B, tgt_in_BT)
        return cross_entropy(
            logits_BTV.flatten(0, 1), tgt_out_BT.flatten(), ignore_index=PAD_ID, reduction="sum"
        )


@torch.no_grad()
def greedy(
    model: Seq2Seq, src_BS: Tensor, src_len_B: Tensor, max_length: int
) -> tuple[Tensor, Tensor]:
    """The most likely token at every step (never bos or pad): ids_BT (pad after each
    sentence's eos) and weights_BTS (0 there too)."""
    hs_BSH, mask_BS, state = model.start(src_BS, src_len_B)
    token_B = torch.full_like(src_len_B, BOS_ID)
    done_B = torch.zeros_like(src_len_B, dtype=torch.bool)
    ids, weights = [], []
    for _ in range(max_length):
        logits_BV, state, weights_BS = model.decoder.step(token_B, state, hs_BSH, mask_BS)
        logits_BV[:, [BOS_ID, PAD_ID]] = float("-inf")
        token_B = logits_BV.argmax(dim=1)
        ids.append(token_B.masked_fill(done_B, PAD_ID))
        weights.append(weights_BS.masked_fill(done_B.unsqueeze(1), 0.0))
        done_B = done_B | (token_B == EOS_ID)
        if done_B.all():
            break
    return torch.stack(ids, dim=1), torch.stack(weights, dim=1)


def from_production(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A production ``Seq2Seq.state_dict()`` for :meth:`Seq2Seq.load_state_dict`: the same names
    except with input feeding, whose LSTM (:class:`jumok.fast.feeding.InputFeedingLSTM`) splits
    ``W_ih = [inputs.0.weight | feed.weight]``, has ``W_hh = recurrent.0.weight`` and one bias
    ``inputs.0.bias = b_ih + b_hh`` (here b_ih, with b_hh = 0)."""
    out, p = dict(state_dict), "decoder.rnn."
    if p + "feed.weight" in out:
        w_ih = torch.cat([out.pop(p + "inputs.0.weight"), out.pop(p + "feed.weight")], dim=1)
        out[p + "weight_ih_l0"], out[p + "weight_hh_l0"] = w_ih, out.pop(p + "recurrent.0.weight")
        out[p + "bias_ih_l0"] = out.pop(p + "inputs.0.bias")
        out[p + "bias_hh_l0"] = torch.zeros_like(out[p + "bias_ih_l0"])
    return out
