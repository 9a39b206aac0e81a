"""The one typed config tree: ``Config(data, model, train, decode)``.

Every field is typed, has a default and a one-line description; the reference page
``docs/config.md`` is generated from these classes (``python -m jumok.app.docgen``) and a test fails
when it is stale. Configs are frozen pydantic models with ``extra="forbid"``, so unknown keys,
wrong types and bad choices are rejected with the key path. :func:`load_config` adds the file name
and a "did you mean" to those errors.

Defaults keep the lecture's model (SUMMARY.md points 2-7): a one-layer LSTM encoder that keeps
every hidden state ``hs``, a one-layer LSTM decoder started from the encoder's last state, dot
attention at every output step, and an output layer over ``[context; h]``.
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jumok.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --------------------------------------------------------------------------------------- data
class GenerateConfig(_Frozen):
    """A generated toy task, so that a config is self-contained (no data files needed)."""

    task: Literal["date", "addition"] = Field(
        "date",
        description="Which toy task of Deep Learning from Scratch 2 to generate: "
        "'date' (ch. 8, 'september 27, 1994' -> '1994-09-27') or 'addition' (ch. 7, '16+75' -> '91').",
    )
    size: int = Field(
        50_000, gt=0, description="Number of distinct pairs to generate (train + dev + test)."
    )
    dev_size: int = Field(
        1_000, ge=0, description="Pairs held out for validation after every epoch."
    )
    test_size: int = Field(5_000, ge=0, description="Pairs held out for the final test.")
    seed: int = Field(0, description="Seed of the generator and of the split.")
    extra_formats: bool = Field(
        False,
        description="Date task only: add jumok's own formats beyond the book's (day-first, "
        "ISO-like '1994.09.27', Korean '1994년 9월 27일').",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> GenerateConfig:
        if self.dev_size + self.test_size >= self.size:
            raise ValueError(
                f"dev_size + test_size ({self.dev_size} + {self.test_size}) must be smaller than "
                f"size ({self.size}) so that some pairs are left for training"
            )
        return self


class TokenizerConfig(_Frozen):
    """How text becomes tokens. The lecture's toy tasks are read character by character."""

    kind: Literal["char", "word", "sentencepiece"] = Field(
        "char",
        description="'char' = one token per character (the book); 'word' = split on spaces "
        "and punctuation; 'sentencepiece' = subwords trained by jumok on the training split at "
        "the first run (model files kept in the run directory).",
    )
    joint: bool = Field(
        True,
        description="sentencepiece: one model for source and target (shared subwords); false = "
        "one model per side.",
    )
    vocab_size: int = Field(8000, ge=16, description="sentencepiece: subword vocabulary size.")
    model_type: Literal["bpe", "unigram"] = Field(
        "bpe", description="sentencepiece: BPE (Sennrich et al.) or unigram LM (Kudo)."
    )
    character_coverage: float = Field(
        1.0,
        gt=0,
        le=1,
        description="sentencepiece: share of characters covered by the vocabulary (lower it, "
        "e.g. 0.9995, for scripts with very many rare characters).",
    )


class DataConfig(_Frozen):
    """Where the sentence pairs come from and how they are turned into tokens."""

    generate: GenerateConfig | None = Field(
        None, description="Generate a toy task instead of reading files (see data.generate.*)."
    )
    train: Path | tuple[Path, Path] | None = Field(
        None,
        description="Training pairs: one UTF-8 file (TSV, CSV with a header, or JSONL; see "
        "data.format), or a list of two parallel text files [source, target].",
    )
    dev: Path | tuple[Path, Path] | None = Field(
        None,
        description="Validation pairs (same format). If absent, data.dev_size pairs are held out "
        "from data.train.",
    )
    test: Path | tuple[Path, Path] | None = Field(
        None, description="Test pairs (same format), optional."
    )
    format: Literal["auto", "tsv", "csv", "jsonl", "parallel", "dlfs2"] = Field(
        "auto",
        description="File format; 'auto' goes by the extension (.csv, .jsonl/.json, else TSV) "
        "and reads a list of two files as parallel text. 'dlfs2' reads the book's fixed-width "
        "date.txt/addition.txt ('16+75  _91  ').",
    )
    source_field: str | int | None = Field(
        None,
        description="Which column/field holds the source: a TSV column number (default 0), a "
        "CSV column name (default: the first column), a JSONL field name, dotted for nested "
        "objects (default 'source').",
    )
    target_field: str | int | None = Field(
        None,
        description="Which column/field holds the target (defaults: TSV column 1, the second "
        "CSV column, JSONL 'target').",
    )
    header: bool = Field(False, description="TSV: the first line is a header (skipped).")
    streaming: bool = Field(
        False,
        description="Read data.train in chunks at every epoch instead of holding it in memory "
        "(for corpora that do not fit): pairs are shuffled within data.shuffle_buffer, and "
        "bucketed and batched chunk by chunk. Needs data.dev.",
    )
    shuffle_buffer: int = Field(
        100_000,
        gt=0,
        description="streaming: pairs held (and shuffled) at once; also the sample a "
        "SentencePiece model is trained on.",
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenization.")
    dev_size: int = Field(
        1_000, ge=0, description="Pairs held out from data.train when data.dev is not given."
    )
    split_seed: int = Field(0, description="Seed of the hold-out split when data.dev is not given.")
    reverse_source: bool = Field(
        False,
        description="Feed the source to the encoder in reverse order (Sutskever et al. 2014; the "
        "book reverses the input in ch. 7-8). Attention maps are always shown in the original order.",
    )
    shared_vocab: bool = Field(
        False,
        description="One vocabulary built from both sides and used by encoder and decoder, as "
        "the book's char_to_id (departure: jumok builds one per side by default). The decoder "
        "then scores every source-side token too; on the book's date task this, with "
        "fill_source_to, is what makes its dot-attention result reproducible (docs/ladder.md).",
    )
    fill_source_to: int | None = Field(
        None,
        gt=0,
        description="Book compatibility (a departure, off by default; jumok masks padding): "
        "append eos tokens to every shorter source up to this many tokens, as the spaces of the "
        "book's fixed-width date.txt and addition.txt (after reverse_source, before the "
        "sentence). The book's dot-attention result depends on it (docs/ladder.md); attention "
        "maps leave the filler out.",
    )
    max_source_length: int = Field(
        200,
        gt=0,
        description="Training pairs whose source is longer (in tokens) are dropped and counted.",
    )
    max_target_length: int = Field(
        200,
        gt=0,
        description="Training pairs whose target is longer (in tokens) are dropped and counted.",
    )

    @model_validator(mode="after")
    def _streaming_needs_files(self) -> DataConfig:
        if self.streaming and (self.train is None or self.dev is None):
            raise ValueError(
                "data.streaming reads data.train from a file and cannot hold dev pairs out of "
                "it: give data.train and data.dev files, or set data.streaming: false"
            )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.generate is None and self.train is None:
            raise ValueError("give either data.generate (a toy task) or data.train (a pairs file)")
        if self.generate is not None and (self.train or self.dev or self.test):
            raise ValueError(
                "data.generate and data.train/dev/test are alternatives: remove one of them"
            )
        return self


# -------------------------------------------------------------------------------------- model
class EncoderConfig(_Frozen):
    """The encoder: embedding + RNN returning every hidden state ``hs`` (lecture point 3).

    The lecture's encoder is one unidirectional LSTM layer; the other settings are the variants
    the field's toolkits offer (JoeyNMT, OpenNMT-py).
    """

    embedding_size: int = Field(16, gt=0, description="Source embedding size E (book ch. 8: 16).")
    hidden_size: int = Field(
        256,
        gt=0,
        description="RNN hidden size per direction (book ch. 8: 256). A bidirectional encoder's "
        "states hs are twice this size.",
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

    embedding_size: int = Field(16, gt=0, description="Target embedding size E (book ch. 8: 16).")
    hidden_size: int = Field(
        256,
        gt=0,
        description="RNN hidden size H. With init 'last' it must equal the encoder's state size; "
        "with dot attention it must equal the size of hs.",
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
        description="Half-width of the interval of init 'uniform' (OpenNMT-py's param_init); "
        "unused by the other inits.",
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


# -------------------------------------------------------------------------------------- train
class ScheduleConfig(_Frozen):
    """How the learning rate changes during training. The lecture uses a constant Adam rate."""

    kind: Literal["constant", "plateau", "inverse_sqrt", "cosine"] = Field(
        "constant",
        description="'constant' (the lecture); 'plateau' multiplies the rate by factor after "
        "patience validations without improvement of train.early_stopping.metric; "
        "'inverse_sqrt' warms up linearly for warmup_steps, then decays as "
        "sqrt(warmup_steps / step) (Vaswani et al.); 'cosine' warms up, then follows half a "
        "cosine from lr to min_lr over the run's steps (train.max_steps, or epochs x batches).",
    )
    warmup_steps: int = Field(
        0, ge=0, description="Linear warm-up from 0 to train.lr over this many updates."
    )
    factor: float = Field(0.5, gt=0, lt=1, description="'plateau': multiply the rate by this.")
    patience: int = Field(
        2, ge=0, description="'plateau': validations without improvement before reducing."
    )
    min_lr: float = Field(0.0, ge=0, description="Lowest learning rate ('plateau', 'cosine').")


class EarlyStoppingConfig(_Frozen):
    """Which dev metric picks the best checkpoint, and when to stop."""

    metric: Literal["exact_match", "bleu", "chrf", "loss"] = Field(
        "exact_match",
        description="Dev metric that chooses best.safetensors, drives early stopping and the "
        "'plateau' schedule (loss: lower is better; the others: higher).",
    )
    patience: int | None = Field(
        None,
        gt=0,
        description="Stop after this many validations without improvement; null = never stop "
        "early.",
    )
    target: float | None = Field(
        None,
        description="Stop as soon as a validation reaches this value of the metric (at least it; "
        "at most it for loss), e.g. 0.999 exact match; null = no target. A jumok addition.",
    )


class TrainConfig(_Frozen):
    """The training loop."""

    epochs: int = Field(10, gt=0, description="Passes over the training pairs.")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many updates (whichever of epochs comes first)."
    )
    batch_size: int = Field(
        128,
        gt=0,
        description="Sentence pairs per batch (book: 128), or target tokens per batch with "
        "batch_type: tokens. Under torchrun this is the global batch, shared by the processes: "
        "the same updates whatever their number (docs/distributed.md).",
    )
    batch_type: Literal["sentences", "tokens"] = Field(
        "sentences",
        description="Count batch_size in sentence pairs or in target tokens (padding excluded).",
    )
    accumulate: int = Field(
        1,
        gt=0,
        description="Add the gradients of this many batches before each update: the same update "
        "as one batch this many times larger, in the memory of one.",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (book: 0.001).")
    weight_decay: float = Field(
        0.0, ge=0, description="Decoupled weight decay (AdamW) when > 0; the lecture has none."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Spread this much of each target's probability over the vocabulary "
        "(Szegedy et al. 2016); the lecture has none.",
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="Learning-rate schedule."
    )
    valid_every: int | None = Field(
        None,
        gt=0,
        description="Validate every this many updates; null = at the end of every epoch.",
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Best checkpoint and early stopping."
    )
    keep_best: int = Field(
        1,
        gt=0,
        description="How many of the best checkpoints to keep. best.safetensors is always the "
        "best; with k > 1 the k best are also kept as checkpoints/step-N.safetensors and "
        "worse ones are deleted.",
    )
    examples: int = Field(
        3, ge=0, description="Dev translations printed at each validation, next to references."
    )
    clip_grad_norm: float | None = Field(
        5.0,
        gt=0,
        description="Clip the global gradient norm to this value (book: 5.0); null = off.",
    )
    seed: int = Field(42, description="Seed of initialisation, shuffling and everything random.")
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget: stop cleanly after the update that crosses it, validate and "
        "keep a checkpoint. null = no budget.",
    )
    resume_every: int | None = Field(
        None,
        gt=0,
        description="Also save the resumable state (resume.state) every this many updates; null = "
        "only before the first update, after every validation, at the end of every epoch and on "
        "SIGINT/SIGTERM (docs/reliability.md).",
    )
    bucketing: bool = Field(
        True,
        description="Group sentences of similar length into the same batch (target length "
        "first, then source length: less padding, fewer decoder steps, same examples per epoch). "
        "A jumok addition; the book pads every input to 29 characters.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16' runs the forward pass under bfloat16 autocast with float32 master weights.",
    )
    threads: int | None = Field(
        None, gt=0, description="CPU threads for PyTorch; null = PyTorch's default."
    )
    fast: bool = Field(
        True,
        description="Use jumok's speed layer (jumok/fast/: the same maths, faster on a CPU); "
        "false runs the plain version of every trick, as does JUMOK_FAST=0 in the environment.",
    )
    kernel_cache: int | None = Field(
        None,
        gt=0,
        description="Compiled oneDNN kernels kept on a CPU (ONEDNN_PRIMITIVE_CACHE_CAPACITY, one "
        "per product or LSTM shape); null = the environment's value, else jumok's 32. More "
        "speeds up a small model whose batches vary in length and costs memory with a large "
        "output layer (docs/performance.md); it takes effect only in a process that has not yet "
        "run a oneDNN kernel, as in `jumok train`.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="Where to train; 'auto' picks CUDA when available."
    )
    eval_batch_size: int = Field(500, gt=0, description="Sentences per batch when validating.")


# ------------------------------------------------------------------------------------- decode
class DecodeConfig(_Frozen):
    """Turning a trained model's outputs into text."""

    max_length: int = Field(
        100, gt=0, description="Most output tokens per sentence (eos included)."
    )
    batch_size: int = Field(256, gt=0, description="Sentences decoded together.")
    beam: int = Field(
        1,
        ge=1,
        description="Beam size. 1 = greedy search, the lecture's decoder (with a constraint "
        "below set, a beam of one that applies it).",
    )
    n_best: int = Field(
        1,
        ge=1,
        description="Hypotheses returned per input, best first (at most decode.beam; with "
        "decode.sample, the number of samples drawn, duplicates dropped).",
    )
    length_penalty: Literal["none", "gnmt", "average"] = Field(
        "gnmt",
        description="How beam search ranks finished hypotheses of different lengths: none (sum "
        "of log-probabilities), gnmt (divided by ((5 + length) / 6) ** alpha, Wu et al. 2016) "
        "or average (divided by the length).",
    )
    alpha: float = Field(1.0, ge=0, description="Exponent of the gnmt length penalty.")
    coverage_penalty: float = Field(
        0.0,
        ge=0,
        description="beta of GNMT's coverage penalty: adds beta * sum over source tokens of "
        "log(min(attention received, 1)), favouring hypotheses that attend to every source "
        "token (needs attention; 0 = off).",
    )
    stopping: Literal["exact", "current", "first"] = Field(
        "current",
        description="When beam search stops a sentence once it has decode.n_best finished "
        "hypotheses: current = when the best live one, scored as if it ended at the next step, "
        "is below them (Hugging Face's rule); exact = when no live hypothesis can end above them "
        "at any length (the result of searching to max_length, and slower); first = when a "
        "step's best continuation is an end (OpenNMT-py's and JoeyNMT's rule). See "
        "docs/decoding.md.",
    )
    min_length: int = Field(
        0, ge=0, description="eos is not allowed before this many output tokens."
    )
    min_length_ratio: float = Field(
        0.0,
        ge=0,
        description="eos is not allowed before ceil(ratio x source tokens) output tokens.",
    )
    max_length_ratio: float | None = Field(
        None,
        gt=0,
        description="A hypothesis ends (eos forced) at ceil(ratio x source tokens) output "
        "tokens, eos included, when that is below decode.max_length.",
    )
    no_repeat_ngram: int = Field(
        0, ge=0, description="Never output the same n-gram of this size twice (0 = off)."
    )
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description="Multiply the log-probability of tokens already output by this (>= 1; "
        "1 = off).",
    )
    sample: bool = Field(
        False,
        description="Draw decode.n_best outputs from the model's distribution instead of "
        "searching (temperature, top_k, top_p, seed).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0 = all).")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Sample among the most likely tokens whose probabilities reach p (1 = all).",
    )
    seed: int = Field(0, description="Seed of sampling.")
    replace_unk: bool = Field(
        False,
        description="Replace each <unk> in the output with the source token it attends to most "
        "(needs attention).",
    )

    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Arithmetic of decoding: bf16 runs the matrix products under bfloat16 "
        "autocast (the checkpoint's weights stay float32; on a CPU the dot-product attentions' "
        "small products stay float32, being faster so). Speed and BLEU: docs/performance.md.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8 decodes with a copy of the model whose LSTM, GRU and Linear layers "
        "(encoder, decoder, output layer, attention projections) have int8 weights and "
        "dynamically quantized activations (PyTorch dynamic quantization, CPU only; embeddings "
        "and the attention's softmax stay float32). Made from the float32 weights on first use; "
        "not combined with decode.precision: bf16 (docs/decoding.md).",
    )
    abstain_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Return no reply (text empty, abstained: true) when the best hypothesis's "
        "confidence, the geometric mean of its token probabilities, is below this, so a person "
        "can take over. The hypotheses stay available.",
    )

    @model_validator(mode="after")
    def _search_fits(self) -> DecodeConfig:
        if self.sample and self.beam > 1:
            raise ValueError(
                "decode.sample draws outputs and decode.beam searches: set decode.beam: 1 to "
                "sample, or decode.sample: false to use the beam"
            )
        if self.quantize == "int8" and self.precision == "bf16":
            raise ValueError(
                "decode.quantize: int8 runs its int8 layers on float32 inputs and cannot be "
                "combined with decode.precision: bf16; choose one (--precision fp32 --quantize int8, "
                "or --precision bf16 --quantize none)"
            )
        if not self.sample and self.n_best > self.beam:
            raise ValueError(
                f"decode.n_best ({self.n_best}) cannot exceed decode.beam ({self.beam}): "
                f"raise the beam to at least {self.n_best}"
            )
        return self


class Config(_Frozen):
    """Everything a run needs; written resolved into the run directory and every checkpoint."""

    data: DataConfig = Field(description="Data: where pairs come from and how they are read.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoding.")


# ------------------------------------------------------------------------------ load and save
def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``a.b=c`` overrides, validate.

    Raises:
        ConfigError: naming the file (or ``--set``), the key path and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8-sig")
    raw = parse_yaml(text, source=str(path))
    raw = apply_overrides(raw, overrides)
    config = validate(raw, source=str(path), overrides=overrides)
    # Relative data paths are relative to the config file, so a config works from any directory.
    return _resolve_paths(config, path.parent)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text to a mapping, with the file and line in any error."""
    try:
        raw = yaml.safe_load(io.StringIO(text))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: YAML syntax error: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: YAML error: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied; values are parsed as YAML."""
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.lr=3e-4")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError:
            value = value_text
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return raw


def validate(raw: dict[str, Any], source: str = "<config>", overrides: tuple | list = ()) -> Config:
    """Validate a raw mapping into a :class:`Config`, with readable errors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        lines = [_describe(e, source, overrides) for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None


def format_validation_error(err: ValidationError, source: str, section: str = "") -> str:
    """Readable lines for a validation error of one section (e.g. ``decode`` options)."""
    lines = []
    for error in err.errors():
        loc = (section, *error["loc"]) if section else error["loc"]
        lines.append(_describe({**error, "loc": loc}, source, ()))
    return "\n".join(lines)


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML (paths as strings), the form written into runs."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_from_yaml(text: str, source: str) -> Config:
    """Inverse of :func:`config_to_yaml`."""
    return validate(parse_yaml(text, source), source=source)


def _resolve_paths(config: Config, base: Path) -> Config:
    data = config.data
    updates = {}
    for name in ("train", "dev", "test"):
        value = getattr(data, name)
        if isinstance(value, tuple):
            resolved = tuple(v if v.is_absolute() else (base / v).resolve() for v in value)
            if resolved != value:
                updates[name] = resolved
        elif value is not None and not value.is_absolute():
            updates[name] = (base / value).resolve()
    if not updates:
        return config
    return config.model_copy(update={"data": data.model_copy(update=updates)})


def _deep_copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _deep_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deep_copy(v) for v in node]
    return node


def _describe(error: dict[str, Any], source: str, overrides: tuple | list) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    origin = source
    for item in overrides:
        if item.partition("=")[0].strip() == key:
            origin = f"--set {item}"
    if error["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], fields, n=1)
        suggestion = f" (did you mean {hint[0]}?)" if hint else ""
        known = ", ".join(fields)
        return f"{origin}: {key}: unknown field{suggestion}; expected one of: {known}"
    if error["type"] == "missing":
        if key == "data":
            return f"{origin}: data: missing section; give data.generate (a toy task) or data.train (a pairs file)"
        return f"{origin}: {key}: missing required field"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    where = key or "(top level)"
    got = error.get("input")
    shown = "" if error["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
    return f"{origin}: {where}: {message}{shown}"


def _fields_at(path: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)
