"""The attention decoder: embedding + RNN + attention at every step + output layer (points 4-7).

One method, :meth:`Decoder.forward`, serves both uses:

* teacher forcing: ``tgt_in_BT`` holds all T inputs (bos + target). The lecture's decoder has no
  input feeding (the attention output is not fed back into the RNN), so the RNN runs over the
  whole target at once and the attention of all T steps is two batched matrix products;
* generation: ``tgt_in_BT`` holds one step (T = 1) and the returned state is passed back in.

The two give the same numbers (a test holds the line for every variant), so search decodes
exactly what training trained.

Options beyond the lecture's model give the rungs of the book's ladder and the variants the
field uses (each a ``model`` config field, off by default):

* ``attention: none`` is the plain decoder of ch. 7 (no attention, output from h alone);
* ``decoder.peeky`` (ch. 7) concatenates the encoder's last hidden state to the RNN input and to
  the output layer's input at every step;
* ``decoder.input_feeding`` (Luong et al. 2015) feeds the attentional vector
  ``tanh(W [context; h])`` of step t into step t + 1's input: steps can no longer run in one
  call, so this path loops over T;
* ``decoder.tie_embeddings`` makes the output layer read the same attentional vector and share
  its weight matrix with the target embedding;
* ``decoder.init`` chooses the start state, ``decoder.num_layers`` and ``decoder.rnn`` the RNN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from jumok.config import ModelConfig
from jumok.data.vocab import PAD_ID
from jumok.fast.dropout import Dropout, dropout_or_identity, keep_mask
from jumok.fast.feeding import InputFeedingLSTM, StepLinear, deferred_gradients
from jumok.fast.step_attention import StepAttention
from jumok.model.attention import build_attention, dot_product_scale, step_attention
from jumok.model.encoder import Final, RNNState, make_rnn


def _select(state: RNNState, index_B: Tensor) -> RNNState:
    if isinstance(state, tuple):
        return state[0].index_select(1, index_B), state[1].index_select(1, index_B)
    return state.index_select(1, index_B)


def _put(state: RNNState, rows_N: Tensor, other: RNNState) -> None:
    pairs = zip(state, other, strict=True) if isinstance(state, tuple) else [(state, other)]
    for mine, theirs in pairs:
        mine.index_copy_(1, rows_N, theirs.to(mine.dtype))


def _pad_source(x_BS: Tensor, S: int, value=0) -> Tensor:
    """``x`` (B, S', ...) right-padded along dim 1 to S positions."""
    extra = S - x_BS.shape[1]
    if extra <= 0:
        return x_BS
    shape = (x_BS.shape[0], extra, *x_BS.shape[2:])
    return torch.cat([x_BS, x_BS.new_full(shape, value)], dim=1)


@dataclass(frozen=True)
class DecoderState:
    """Everything the decoder carries from one step to the next.

    Attributes:
        rnn: the RNN state, (h, c) for an LSTM or h for a GRU, each (layers, B, H).
        feed_BH: the previous step's attentional vector (input feeding only; else None).
    """

    rnn: RNNState
    feed_BH: Tensor | None = None

    def select(self, index_B: Tensor) -> DecoderState:
        """The rows of ``index_B`` (used when hypotheses leave or repeat in a batch)."""
        feed = None if self.feed_BH is None else self.feed_BH.index_select(0, index_B)
        return DecoderState(_select(self.rnn, index_B), feed)

    def cat(self, other: DecoderState) -> DecoderState:
        """The rows of ``self`` followed by those of ``other``."""
        if isinstance(self.rnn, tuple):
            rnn = tuple(torch.cat([a, b], 1) for a, b in zip(self.rnn, other.rnn, strict=True))
        else:
            rnn = torch.cat([self.rnn, other.rnn], 1)
        feed = None if self.feed_BH is None else torch.cat([self.feed_BH, other.feed_BH])
        return DecoderState(rnn, feed)

    def put(self, rows_N: Tensor, other: DecoderState) -> None:
        """Overwrite rows ``rows_N`` in place with the rows of ``other`` (new sentences taking
        the places of finished ones, :func:`jumok.decoding.greedy.greedy_stream`)."""
        _put(self.rnn, rows_N, other.rnn)
        if self.feed_BH is not None:
            self.feed_BH.index_copy_(0, rows_N, other.feed_BH.to(self.feed_BH.dtype))


@dataclass(frozen=True)
class Encoded:
    """What the decoder needs from the encoder, computed once per batch.

    Its B rows are sentences (or copies of them, one per hypothesis). The decoder may also run
    M rows per encoder row against it (the hypotheses of beam search sharing their sentence's
    copy, sentence-major: decoder row ``n`` reads encoder row ``n // M``); only the decoder state
    then has N = B x M rows.

    Attributes:
        hs_BSH: encoder states (zero past each sentence's end), C wide.
        mask_BS: True at real source tokens.
        state: the decoder's start state.
        keys_BSH: the attention's keys, ``prepare_keys(hs)``; None without attention.
        summary_BH: the encoder's last hidden state (top layer, both directions; C wide), the
            vector a Peeky decoder sees every step.
    """

    hs_BSH: Tensor
    mask_BS: Tensor
    state: DecoderState
    keys_BSH: Tensor | None
    summary_BH: Tensor

    def select(self, index_B: Tensor) -> Encoded:
        """The rows of ``index_B`` (used when sentences leave or repeat in a batch)."""
        return Encoded(
            self.hs_BSH.index_select(0, index_B),
            self.mask_BS.index_select(0, index_B),
            self.state.select(index_B),
            None if self.keys_BSH is None else self.keys_BSH.index_select(0, index_B),
            self.summary_BH.index_select(0, index_B),
        )

    @property
    def source_length(self) -> int:
        return self.hs_BSH.shape[1]

    def padded(self, S: int) -> Encoded:
        """The same rows with S source positions (padding added, masked out)."""
        if S <= self.source_length:
            return self
        keys = None if self.keys_BSH is None else _pad_source(self.keys_BSH, S)
        return Encoded(
            _pad_source(self.hs_BSH, S),
            _pad_source(self.mask_BS, S, False),
            self.state,
            keys,
            self.summary_BH,
        )

    def cat(self, other: Encoded) -> Encoded:
        """The rows of ``self`` followed by those of ``other`` (same source length)."""
        keys = None if self.keys_BSH is None else torch.cat([self.keys_BSH, other.keys_BSH])
        return Encoded(
            torch.cat([self.hs_BSH, other.hs_BSH]),
            torch.cat([self.mask_BS, other.mask_BS]),
            self.state.cat(other.state),
            keys,
            torch.cat([self.summary_BH, other.summary_BH]),
        )

    def put(self, rows_N: Tensor, other: Encoded) -> None:
        """Overwrite rows ``rows_N`` in place with the rows of ``other`` (same source length;
        the start state is not kept up to date)."""
        self.hs_BSH.index_copy_(0, rows_N, other.hs_BSH.to(self.hs_BSH.dtype))
        self.mask_BS.index_copy_(0, rows_N, other.mask_BS)
        if self.keys_BSH is not None:
            self.keys_BSH.index_copy_(0, rows_N, other.keys_BSH.to(self.keys_BSH.dtype))
        self.summary_BH.index_copy_(0, rows_N, other.summary_BH.to(self.summary_BH.dtype))


class Decoder(nn.Module):
    """Attention decoder of the lecture (and the ladder's other rungs and the field's variants).

    Args:
        vocab_size: target vocabulary size V.
        cfg: the whole ``model`` section (the decoder's sizes depend on the encoder's).
        fast: use :mod:`jumok.fast`'s tricks (the same maths) where they apply.
    """

    def __init__(self, vocab_size: int, cfg: ModelConfig, fast: bool = True):
        super().__init__()
        # jumok.fast: the stepped LSTM's fused products and token tables, the attention and the
        # attentional layer with gradients summed once per loop, and the cheaper dropout
        self.fast = fast
        d = cfg.decoder
        H, E, C = d.hidden_size, d.embedding_size, cfg.encoder.output_size
        self.kind, self.num_layers, self.hidden_size = d.rnn, d.num_layers, H
        self.init, self.peeky, self.input_feeding = d.init, d.peeky, d.input_feeding
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        self.embedding_dropout = dropout_or_identity(cfg.dropout.embeddings, fast)
        rnn_input = E + (C if self.peeky else 0) + (H if self.input_feeding else 0)
        if (
            d.input_feeding and d.rnn == "lstm"
        ):  # stepped one token at a time: see jumok.fast.feeding
            self.rnn = InputFeedingLSTM(rnn_input - H, H, H, d.num_layers, cfg.dropout.layers)
        else:
            self.rnn = make_rnn(d.rnn, rnn_input, H, d.num_layers, cfg.dropout.layers)
        self.attention = None if cfg.attention == "none" else build_attention(cfg.attention, H, C)
        if d.init == "bridge":
            enc_parts = 2 if cfg.encoder.rnn == "lstm" else 1
            dec_parts = 2 if d.rnn == "lstm" else 1
            self.bridge = nn.Linear(C * enc_parts, d.num_layers * H * dec_parts)
        # Lecture point 7: the context and the RNN state together predict the next word. As in
        # the book (ch. 8 AttentionDecoder) this is one affine layer over [context; h], no tanh.
        features = H + (C if self.attention is not None else 0) + (C if self.peeky else 0)
        # Input feeding and tied embeddings need a fixed-size vector between the two: Luong's
        # attentional vector tanh(W [context; h]) of size H.
        self.attentional = (
            nn.Linear(features, H, bias=False) if d.input_feeding or d.tie_embeddings else None
        )
        self.attentional_dropout = dropout_or_identity(cfg.dropout.attentional, fast)
        self.output = nn.Linear(H if self.attentional is not None else features, vocab_size)
        if d.tie_embeddings:
            self.output.weight = self.embedding.weight  # (V, E) with E == H, checked by the config

    def initial_state(self, final: Final) -> DecoderState:
        """Decoder start state from the encoder's final state (point 4), per ``decoder.init``.

        ``last`` (default) passes the encoder's LSTM state (h, c) at the last real token, layer by
        layer. Departure from the book: its ``Decoder`` (ch. 7-8, ``lstm.set_state(h)``) passes
        only h and starts c at zero. Passing c as well is what PyTorch toolkits do, and on the
        date task it is the difference between 0.2% and 48% exact match after one epoch
        (measured, see docs/lecture.md), because the month and day are read last and live
        mostly in c. ``last_h`` is the book's choice, kept for the ladder. A GRU encoder has no
        c, so an LSTM decoder then starts c at zero.
        """
        h_LBC, c_LBC = final
        L, B, H = self.num_layers, h_LBC.shape[1], self.hidden_size
        if self.init == "zero":
            h_LBH = h_LBC.new_zeros(L, B, H)
            c_LBH = h_LBH
        elif self.init == "bridge":
            top_BI = torch.cat([h_LBC[-1]] + ([] if c_LBC is None else [c_LBC[-1]]), dim=-1)
            parts = self.bridge(top_BI).tanh().view(B, -1, L, H).permute(1, 2, 0, 3)
            h_LBH = parts[0].contiguous()
            c_LBH = parts[1].contiguous() if parts.shape[0] > 1 else torch.zeros_like(h_LBH)
        else:
            h_LBH = h_LBC.contiguous()  # C == H (checked by the config)
            keep_c = c_LBC is not None and self.init == "last"  # 'last_h': the book, c at zero
            c_LBH = c_LBC.contiguous() if keep_c else torch.zeros_like(h_LBH)
        rnn = (h_LBH, c_LBH) if self.kind == "lstm" else h_LBH
        feed = h_LBC.new_zeros(B, H) if self.input_feeding else None
        return DecoderState(rnn, feed)

    def prepare_keys(self, hs_BSH: Tensor) -> Tensor | None:
        """The attention's keys, computed once per batch (None without attention)."""
        return None if self.attention is None else self.attention.prepare_keys(hs_BSH)

    def forward(
        self, tgt_in_BT: Tensor, state: DecoderState, enc: Encoded
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Run T decoder steps.

        Args:
            tgt_in_BT: input tokens (bos + target when teacher forcing; one token when generating).
            state: the decoder state before the first of these steps.
            enc: the encoder's outputs for this batch.

        Returns:
            logits_BTV: next-token scores for each step.
            state: the decoder state after the last step.
            weights_BTS: attention weights of each step over source positions (None without
                attention).
        """
        features_BTF, state, weights_BTS = self.features(tgt_in_BT, state, enc)
        return self.output(features_BTF), state, weights_BTS

    def features(
        self,
        tgt_in_BT: Tensor,
        state: DecoderState,
        enc: Encoded,
        each_step: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """:meth:`forward` without the output layer: what it reads at each step (features_BTF),
        the state after the last step, and the attention weights.

        ``each_step``: with input feeding, called with each step's features (B, 1, F) as soon as
        the step has made them (training computes the loss of finished steps while the loop
        goes on: :class:`jumok.fast.sliced_loss.StepwiseCrossEntropy`); ignored without it.
        """
        if tgt_in_BT.shape[1] == 1 and self._token_table_step():
            return self._generation_step(tgt_in_BT, state, enc)
        emb_BTE = self.embedding_dropout(self.embedding(tgt_in_BT))
        x_BTI, summary_BTC = emb_BTE, None  # the RNN's input: the embedding (and the summary)
        if self.peeky:
            summary_BC = _per_row(enc.summary_BH, emb_BTE.shape[0])
            summary_BTC = summary_BC.unsqueeze(1).expand(-1, emb_BTE.shape[1], -1)
            x_BTI = torch.cat([emb_BTE, summary_BTC], dim=-1)
        if self.input_feeding:
            return self._step_by_step(x_BTI, state, enc, summary_BTC, each_step)
        h_BTH, rnn_state = self.rnn(x_BTI, state.rnn)
        out_BTF, weights_BTS = self._attend(h_BTH, enc, summary_BTC)
        return out_BTF, DecoderState(rnn_state), weights_BTS

    def _token_table_step(self) -> bool:
        """Whether a generation step looks layer 0's input gates up in the token table
        (:meth:`InputFeedingLSTM.token_gates`): input feeding with jumok's LSTM, no Peeky
        summary, no gradients, evaluation mode."""
        return (
            self.fast
            and self.input_feeding
            and isinstance(self.rnn, InputFeedingLSTM)
            and not (self.peeky or self.training or torch.is_grad_enabled())
        )

    def _generation_step(
        self, tgt_in_B1: Tensor, state: DecoderState, enc: Encoded
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """:meth:`features` for one generation step with input feeding: the computation of
        :meth:`_step_by_step` for T = 1, with layer 0's input gates read from the token table
        (no embedding lookup, no product with W_x) and none of the loop's set-up. (Before, the
        embedding was looked up and then left unused. Leaving out that and the set-up made no
        difference measurable here to a Multi30k decode, whose ~4 ms steps go mostly to the
        three products.)"""
        gates_B1G = self.rnn.token_gates(self.embedding, tgt_in_B1)
        if gates_B1G is None:  # a table too large to keep: the embedding and W_x per step
            emb_B1E = self.embedding(tgt_in_B1)
            return self._step_by_step(emb_B1E, state, enc, None)
        steps = self.rnn.start(None, gates_B1G)
        h_BH, rnn_state = steps.step(state.feed_BH, state.rnn)
        out_B1H, weights_B1S = self._attend(h_BH.unsqueeze(1), enc, None)
        return out_B1H, DecoderState(rnn_state, out_B1H.squeeze(1)), weights_B1S

    def _step_by_step(
        self,
        x_BTI: Tensor,
        state: DecoderState,
        enc: Encoded,
        summary_BTC: Tensor | None,
        each_step: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Input feeding: step t's input is [x_t; attentional vector of step t - 1]. Returns what
        the output layer reads at each step."""
        rnn_state, feed_BH = state.rnn, state.feed_BH
        outs, weights = [], []
        steps = None
        if self.fast and isinstance(self.rnn, InputFeedingLSTM):
            steps = self.rnn.start(x_BTI)
        attentional = self.attentional
        if self.fast and deferred_gradients(attentional.weight):  # one gradient for all steps
            attentional = StepLinear(attentional, x_BTI.device.type)
        attend = None  # training: the keys' and values' gradients once for all steps
        if self.fast and torch.is_grad_enabled() and step_attention(self.attention):
            if x_BTI.shape[0] == enc.hs_BSH.shape[0]:
                keys_BSH = enc.keys_BSH
                if keys_BSH is None:
                    keys_BSH = self.attention.prepare_keys(enc.hs_BSH)
                scale = dot_product_scale(self.attention, keys_BSH)
                attend = StepAttention(keys_BSH, enc.hs_BSH, enc.mask_BS, scale)
        T, dropout = x_BTI.shape[1], self.attentional_dropout
        # training on a CPU: the dropout masks of all T steps drawn at once (one draw, not T)
        drawn = isinstance(dropout, Dropout) and dropout.training and dropout.p > 0
        drawn = drawn and x_BTI.device.type == "cpu" and self.fast
        masks_TB1H = None
        for t in range(T):
            if steps is not None:
                h_BH, rnn_state = steps.step(feed_BH, rnn_state)
                h_B1H = h_BH.unsqueeze(1)
            elif isinstance(self.rnn, InputFeedingLSTM):  # the same LSTM, equations as written
                h_BH, rnn_state = self.rnn.plain_step(x_BTI[:, t], feed_BH, rnn_state)
                h_B1H = h_BH.unsqueeze(1)
            else:  # a GRU: nn.GRU one step at a time
                x_B1I = torch.cat([x_BTI[:, t : t + 1], feed_BH.unsqueeze(1)], dim=-1)
                h_B1H, rnn_state = self.rnn(x_B1I, rnn_state)
            summary_B1C = None if summary_BTC is None else summary_BTC[:, t : t + 1]
            out_B1H, weights_B1S = self._attend(
                h_B1H, enc, summary_B1C, attentional, attend, dropout=not drawn
            )
            if drawn:
                if masks_TB1H is None:
                    shape = (T, *out_B1H.shape)
                    masks_TB1H = keep_mask(shape, dropout.p, out_B1H.dtype, out_B1H.device)
                out_B1H = out_B1H * masks_TB1H[t]
            feed_BH = out_B1H.squeeze(1)
            outs.append(out_B1H)
            weights.append(weights_B1S)
            if each_step is not None:
                each_step(out_B1H)
        out_BTF = torch.cat(outs, dim=1)
        return out_BTF, DecoderState(rnn_state, feed_BH), torch.cat(weights, dim=1)

    def _attend(
        self,
        h_BTH: Tensor,
        enc: Encoded,
        summary_BTC: Tensor | None,
        attentional=None,
        attend: StepAttention | None = None,
        dropout: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """The vector the output layer reads for each step, and the attention weights.

        ``attentional``: what computes the attentional layer (default: the layer itself);
        ``attend``: what computes the attention (default: the module, over ``enc``);
        ``dropout``: False when the caller applies the attentional dropout itself (a training
        loop's masks drawn for all steps at once).
        """
        features = [h_BTH]
        weights_BTS = None
        if attend is not None:
            context_BTC, weights_BTS = attend(h_BTH)
            features = [context_BTC, h_BTH]
        elif self.attention is not None:
            context_BTC, weights_BTS = self._attention(h_BTH, enc)
            features = [context_BTC, h_BTH]
        if summary_BTC is not None:
            features.append(summary_BTC)
        out_BTF = torch.cat(features, dim=-1) if len(features) > 1 else h_BTH
        if self.attentional is not None:
            out_BTF = (attentional or self.attentional)(out_BTF).tanh()
        return (self.attentional_dropout(out_BTF) if dropout else out_BTF), weights_BTS

    def _attention(self, h_NTH: Tensor, enc: Encoded) -> tuple[Tensor, Tensor]:
        """Attention of N rows over the B sentences of ``enc`` (N a multiple of B).

        Beam search keeps one encoder row per sentence and ``M = N / B`` decoder rows per
        sentence, sentence-major (row ``n`` reads sentence ``n // M``). The M rows of a sentence
        are then M more queries against the same keys, one batched product per sentence, so the
        keys are neither copied M times nor read M times per step.
        """
        N, T, H = h_NTH.shape
        B = _check_rows(N, enc.hs_BSH.shape[0])
        if N == B:
            return self.attention(h_NTH, enc.hs_BSH, enc.mask_BS, enc.keys_BSH)
        queries_BQH = h_NTH.reshape(B, -1, H)  # Q = M * T queries per sentence
        context_BQC, weights_BQS = self.attention(
            queries_BQH, enc.hs_BSH, enc.mask_BS, enc.keys_BSH
        )
        return context_BQC.reshape(N, T, -1), weights_BQS.reshape(N, T, -1)


def _per_row(x_BD: Tensor, N: int) -> Tensor:
    """One row of ``x_BD`` per decoder row: each sentence's row repeated N / B times."""
    B = _check_rows(N, x_BD.shape[0])
    return x_BD if N == B else x_BD.repeat_interleave(N // B, dim=0)


def _check_rows(N: int, B: int) -> int:
    if N % B:
        raise ValueError(f"decoder rows: expected a multiple of the {B} sentences, got {N}")
    return B
