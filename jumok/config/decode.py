"""``decode``: how a trained model searches (greedy, beam, sampling) and its limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jumok.config.base import MAX_SEED
from jumok.config.base import Frozen as _Frozen

# Output tokens per sentence: a long paragraph, far past any sentence an RNN decoder handles.
MAX_OUTPUT = 10_000


# ------------------------------------------------------------------------------------- decode
class DecodeConfig(_Frozen):
    """Turning a trained model's outputs into text."""

    max_length: int = Field(
        100,
        gt=0,
        le=MAX_OUTPUT,
        description="Most output tokens per sentence (eos included; at most 10000).",
    )
    batch_size: int = Field(
        256, gt=0, le=1_000_000, description="Sentences decoded together (at most 10^6)."
    )
    beam: int = Field(
        1,
        ge=1,
        le=1000,
        description="Beam size. 1 = greedy search, the lecture's decoder (with a constraint "
        "below set, a beam of one that applies it). At most 1000, the widest beam studied "
        "(Koehn and Knowles 2017).",
    )
    n_best: int = Field(
        1,
        ge=1,
        le=1000,
        description="Hypotheses returned per input, best first (at most decode.beam; with "
        "decode.sample, the number of samples drawn, duplicates dropped; at most 1000).",
    )
    length_penalty: Literal["none", "gnmt", "average"] = Field(
        "gnmt",
        description="How beam search ranks finished hypotheses of different lengths: none (sum "
        "of log-probabilities), gnmt (divided by ((5 + length) / 6) ** alpha, Wu et al. 2016) "
        "or average (divided by the length).",
    )
    alpha: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Exponent of the gnmt length penalty (Wu et al. tune it in [0, 1]; at most "
        "10, where the penalty of a long output nears float32's range).",
    )
    coverage_penalty: float = Field(
        0.0,
        ge=0,
        le=10,
        description="beta of GNMT's coverage penalty: adds beta * sum over source tokens of "
        "log(min(attention received, 1)), favouring hypotheses that attend to every source "
        "token (needs attention; 0 = off; Wu et al. tune it in [0, 1], at most 10).",
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
        0,
        ge=0,
        le=MAX_OUTPUT,
        description="eos is not allowed before this many output tokens (at most 10000).",
    )
    min_length_ratio: float = Field(
        0.0,
        ge=0,
        le=100,
        description="eos is not allowed before ceil(ratio x source tokens) output tokens (at "
        "most 100: an output a hundred times its source already runs into decode.max_length).",
    )
    max_length_ratio: float | None = Field(
        None,
        gt=0,
        le=100,
        description="A hypothesis ends (eos forced) at ceil(ratio x source tokens) output "
        "tokens, eos included, when that is below decode.max_length (at most 100).",
    )
    no_repeat_ngram: int = Field(
        0,
        ge=0,
        le=MAX_OUTPUT,
        description="Never output the same n-gram of this size twice (0 = off).",
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
    temperature: float = Field(
        1.0,
        ge=1e-4,
        le=100,
        description="Sampling temperature, 0.0001 to 100: at 0.0001 sampling is already greedy "
        "search, and far smaller values overflow the scaled log-probabilities; at 100 every "
        "token left by top_k and top_p is about equally likely.",
    )
    top_k: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Sample among the k most likely tokens (0 = all; at most 10^6).",
    )
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Sample among the most likely tokens whose probabilities reach p (1 = all).",
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of sampling, 0 to 2^32 - 1 (as train.seed)."
    )
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
