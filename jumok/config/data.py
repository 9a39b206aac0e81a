"""``data``: where the pairs come from and how they are read and split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from jumok.config.base import MAX_SEED
from jumok.config.base import Frozen as _Frozen

# Pairs generated, held out or held in memory at once: ten million short pairs is about the
# memory of a laptop, and a hundred times the book's 50,000.
MAX_PAIRS = 10_000_000
# Tokens in one sentence: a page of text, far past what an RNN reads in one sequence.
MAX_TOKENS = 100_000


# --------------------------------------------------------------------------------------- data
class GenerateConfig(_Frozen):
    """A generated toy task, so that a config is self-contained (no data files needed)."""

    task: Literal["date", "addition"] = Field(
        "date",
        description="Which toy task of Deep Learning from Scratch 2 to generate: "
        "'date' (ch. 8, 'september 27, 1994' -> '1994-09-27') or 'addition' (ch. 7, '16+75' -> '91').",
    )
    size: int = Field(
        50_000,
        gt=0,
        le=MAX_PAIRS,
        description="Number of distinct pairs to generate (train + dev + test; at most 10^7, "
        "held in memory, and at most the distinct inputs the task has: 170,856 dates, 276,048 "
        "with extra_formats, 10^6 additions).",
    )
    dev_size: int = Field(
        1_000, ge=0, le=MAX_PAIRS, description="Pairs held out for validation after every epoch."
    )
    test_size: int = Field(
        5_000, ge=0, le=MAX_PAIRS, description="Pairs held out for the final test."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the generator and of the split (0 to 2^32 - 1)."
    )
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
    vocab_size: int = Field(
        8000,
        ge=16,
        le=1_000_000,
        description="sentencepiece: subword vocabulary size (at most 10^6; the largest "
        "multilingual models use about 250,000).",
    )
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
        le=MAX_PAIRS,
        description="streaming: pairs held (and shuffled) at once; also the sample a "
        "SentencePiece model is trained on.",
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenization.")
    dev_size: int = Field(
        1_000,
        ge=0,
        le=MAX_PAIRS,
        description="Pairs held out from data.train when data.dev is not given.",
    )
    split_seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of the hold-out split when data.dev is not given (0 to 2^32 - 1).",
    )
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
        le=MAX_TOKENS,
        description="Book compatibility (a departure, off by default; jumok masks padding): "
        "append eos tokens to every shorter source up to this many tokens, as the spaces of the "
        "book's fixed-width date.txt and addition.txt (after reverse_source, before the "
        "sentence). The book's dot-attention result depends on it (docs/ladder.md); attention "
        "maps leave the filler out.",
    )
    max_source_length: int = Field(
        200,
        gt=0,
        le=MAX_TOKENS,
        description="Training pairs whose source is longer (in tokens) are dropped and counted "
        "(at most 100000).",
    )
    max_target_length: int = Field(
        200,
        gt=0,
        le=MAX_TOKENS,
        description="Training pairs whose target is longer (in tokens) are dropped and counted "
        "(at most 100000).",
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
