"""``model``: the encoder, the decoder, attention, dropout and initial weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from jumok.config.base import MAX_WIDTH
from jumok.config.base import Frozen as _Frozen


# -------------------------------------------------------------------------------------- model
class EncoderConfig(_Frozen):
    """The encoder: embedding + RNN returning every hidden state ``hs`` (lecture point 3).

    The lecture's encoder is one unidirectional LSTM layer; the other settings are the variants
    the field's toolkits offer (JoeyNMT, OpenNMT-py).
    """

    embedding_size: int = Field(
        16,
        gt=0,
        le=MAX_WIDTH,
        description="Source embedding size E (book ch. 8: 16; at most 16384, twice the widest "
        "recurrent layer published).",
    )
    hidden_size: int = Field(
        256,
        gt=0,
        le=MAX_WIDTH,
        description="RNN hidden size per direction (book ch. 8: 256; at most 16384). A "
        "bidirectional encoder's states hs are twice this size.",
    )
    rnn: Literal["lstm", "gru"] = Field("lstm", description="Recurrent cell (book: LSTM).")
    num_layers: int = Field(1, gt=0, le=8, description="Stacked RNN layers (book: 1).")
    bidirectional: bool = Field(
        False,
        description="Also read the source right to left and concatenate both directions' states "
        "(Bahdanau et al. 2015). Not in the lecture.",
    )

    @property
    def output_size(self) -> int:
        """Size of each row of ``hs``: hidden_size x directions."""
        return self.hidden_size * (2 if self.bidirectional else 1)


class DecoderConfig(_Frozen):
    """The decoder: embedding + RNN + attention at every step + output layer over [context; h]."""

    embedding_size: int = Field(
        16,
        gt=0,
        le=MAX_WIDTH,
        description="Target embedding size E (book ch. 8: 16; at most 16384).",
    )
    hidden_size: int = Field(
        256,
        gt=0,
        le=2 * MAX_WIDTH,
        description="RNN hidden size H (at most 32768: it may match a bidirectional encoder's "
        "states). With init 'last' it must equal the encoder's state size; with dot attention "
        "it must equal the size of hs.",
    )
    rnn: Literal["lstm", "gru"] = Field("lstm", description="Recurrent cell (book: LSTM).")
    num_layers: int = Field(1, gt=0, le=8, description="Stacked RNN layers (book: 1).")
    init: Literal["last", "last_h", "bridge", "zero"] = Field(
        "last",
        description="Decoder start state: 'last' = the encoder's final state per layer, LSTM "
        "(h, c) (the lecture's idea; what PyTorch toolkits do); 'last_h' = the book's exact "
        "choice: the encoder's final h, with the LSTM cell c at zero (used by jumok ladder); "
        "'bridge' = tanh of a learned linear map of the encoder's top-layer final state (any "
        "sizes and layer counts); 'zero' = zeros.",
    )
    peeky: bool = Field(
        False,
        description="The book's Peeky decoder (ch. 7): the encoder's last hidden state is "
        "concatenated to the RNN input and to the output layer's input at every step.",
    )
    input_feeding: bool = Field(
        False,
        description="Luong et al. 2015: the attentional vector tanh(W[context; h]) of each step is "
        "fed into the next step's input. Forces a step-by-step loop in training; the lecture's "
        "model (false) runs all target steps in one RNN call.",
    )
    tie_embeddings: bool = Field(
        False,
        description="Share the target embedding matrix with the output layer's weights (Press & "
        "Wolf 2017). The output layer then reads a tanh(W[context; h]) vector of size "
        "embedding_size, so decoder.embedding_size must equal decoder.hidden_size.",
    )


class DropoutConfig(_Frozen):
    """Dropout probabilities (training only). The lecture's model has none."""

    embeddings: float = Field(0.0, ge=0, lt=1, description="On the source and target embeddings.")
    layers: float = Field(
        0.0, ge=0, lt=1, description="Between stacked RNN layers (needs num_layers > 1 to act)."
    )
    attentional: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="On the vector the output layer reads ([context; h], or the attentional "
        "vector with input feeding or tied embeddings).",
    )


class ModelConfig(_Frozen):
    """The encoder-decoder with attention."""

    type: Literal["seq2seq", "lm"] = Field(
        "seq2seq",
        description="'seq2seq' = the encoder-decoder; 'lm' = a language model of the target side "
        "alone, for sentence generation (jumok generate) and the anti-generic reranking of chat "
        "replies (jumok translate --mmi-lm). With 'lm', model.attention defaults to none, "
        "decoder.init to zero, and the encoder section is unused.",
    )
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Encoder settings.")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="Decoder settings.")
    attention: Literal["none", "dot", "scaled_dot", "general", "additive"] = Field(
        "dot",
        description="Score between the decoder state and each row of hs: 'dot' is the lecture's "
        "dot product (Luong 'dot'); 'scaled_dot' divides it by sqrt(H) (Vaswani et al.); "
        "'general' a bilinear form q.W.h (Luong 'general'); 'additive' an MLP "
        "v.tanh(W h + U q) (Bahdanau); 'none' is the plain seq2seq of the book's ch. 7, whose "
        "decoder sees only the encoder's last state.",
    )
    dropout: DropoutConfig = Field(default_factory=DropoutConfig, description="Dropout.")
    init: Literal["lecun", "book", "uniform", "pytorch"] = Field(
        "lecun",
        description="Initial weights: 'book' = the lecture's code, used by jumok ladder (weight "
        "matrices normal(0, 1/fan_in), biases 0, embeddings normal(0, 0.01^2)); 'lecun' = the "
        "same with embeddings normal(0, 1), which learns the date task in fewer epochs "
        "(docs/lecture.md); 'uniform' = every parameter uniform(-init_range, +init_range), as "
        "OpenNMT-py's param_init, used by the Multi30k recipe; 'pytorch' = PyTorch's module "
        "defaults. Padding embeddings start at zero in all but 'pytorch'.",
    )
    init_range: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Half-width of the interval of init 'uniform' (OpenNMT-py's param_init; at "
        "most 1, beyond which every tanh and sigmoid starts saturated); unused by the other "
        "inits.",
    )

    @model_validator(mode="before")
    @classmethod
    def _lm_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("type") == "lm":
            raw = {**raw, "attention": raw.get("attention", "none")}
            decoder = raw.get("decoder")
            if decoder is None or isinstance(decoder, dict):
                raw["decoder"] = {"init": "zero", **(decoder or {})}
        return raw

    @model_validator(mode="after")
    def _combinations_work(self) -> ModelConfig:
        enc, dec = self.encoder, self.decoder
        if self.type == "lm":
            for wrong, fix in (
                (self.attention != "none", "model.attention: none"),
                (dec.init != "zero", "model.decoder.init: zero"),
                (dec.peeky, "model.decoder.peeky: false"),
                (dec.input_feeding, "model.decoder.input_feeding: false"),
            ):
                if wrong:
                    raise ValueError(
                        f"model.type 'lm' is a language model with no source to read: set {fix}"
                    )
            return self
        hs = enc.output_size
        what = f"{enc.hidden_size} x 2 directions = {hs}" if enc.bidirectional else f"{hs}"
        if self.attention in ("dot", "scaled_dot") and hs != dec.hidden_size:
            raise ValueError(
                f"{self.attention} attention compares the decoder state (decoder.hidden_size = "
                f"{dec.hidden_size}) with each row of hs (encoder size {what}) directly, "
                "so they must be equal: set model.decoder.hidden_size to "
                f"{hs}, or use model.attention: general or additive, which learn the mapping"
            )
        if dec.init in ("last", "last_h"):
            if hs != dec.hidden_size:
                raise ValueError(
                    f"model.decoder.init '{dec.init}' starts the decoder from the encoder's final state "
                    f"(size {what}), which does not fit decoder.hidden_size "
                    f"({dec.hidden_size}): set model.decoder.hidden_size to {hs}, or use "
                    "model.decoder.init: bridge (a learned map) or zero"
                )
            if enc.num_layers != dec.num_layers:
                raise ValueError(
                    f"model.decoder.init '{dec.init}' passes the encoder's final state layer by "
                    "layer, "
                    f"but the encoder has {enc.num_layers} layer(s) and the decoder "
                    f"{dec.num_layers}: make model.encoder.num_layers and "
                    "model.decoder.num_layers equal, or use model.decoder.init: bridge or zero"
                )
        if self.attention == "none" and dec.init == "zero" and not dec.peeky:
            raise ValueError(
                "with model.attention 'none' the decoder sees the source only through its start "
                "state or Peeky, and model.decoder.init 'zero' with peeky false gives it neither: "
                "use model.decoder.init: last or bridge, set model.decoder.peeky: true, or "
                "choose an attention"
            )
        if dec.input_feeding and self.attention == "none":
            raise ValueError(
                "model.decoder.input_feeding feeds the attentional vector back, and "
                "model.attention is 'none': choose an attention (dot, general, additive) or "
                "set model.decoder.input_feeding: false"
            )
        if dec.tie_embeddings and dec.embedding_size != dec.hidden_size:
            raise ValueError(
                "model.decoder.tie_embeddings shares the target embeddings "
                f"(decoder.embedding_size = {dec.embedding_size}) with the output layer, which "
                f"reads vectors of decoder.hidden_size = {dec.hidden_size}: set both to the "
                "same value or turn tie_embeddings off"
            )
        return self
