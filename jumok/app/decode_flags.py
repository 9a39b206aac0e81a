"""The decoding options as command-line flags: declared from one table, and read back.

``jumok translate`` and ``jumok eval`` offer every ``decode.*`` option of the config as a flag,
``jumok generate`` the sampling ones; a flag left out keeps the run's own setting
(docs/config.md). The MMI reranking flags come with them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jumok.app.calibrate import abstain_value, resolve_abstain

# (flag, decode field, type, help) of every decoding option; defaults come from the run's config.
DECODE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--beam", "beam", int, "beam size K; 1 = greedy search"),
    (
        "--n-best",
        "n_best",
        int,
        "hypotheses per input, best first (<= --beam; samples with --sample)",
    ),
    ("--length-penalty", "length_penalty", str, "none | gnmt | average"),
    ("--alpha", "alpha", float, "exponent of the gnmt length penalty"),
    ("--coverage-penalty", "coverage_penalty", float, "beta of GNMT's coverage penalty"),
    ("--stopping", "stopping", str, "when beam search stops: exact | current | first"),
    ("--min-length", "min_length", int, "no eos before this many output tokens"),
    ("--min-length-ratio", "min_length_ratio", float, "no eos before ratio x source tokens"),
    ("--max-length-ratio", "max_length_ratio", float, "eos forced at ratio x source tokens"),
    ("--no-repeat-ngram", "no_repeat_ngram", int, "never repeat an n-gram of this size"),
    ("--repetition-penalty", "repetition_penalty", float, "penalise tokens already output (>= 1)"),
    ("--temperature", "temperature", float, "sampling temperature"),
    ("--top-k", "top_k", int, "sample among the k most likely tokens"),
    ("--top-p", "top_p", float, "sample among the tokens whose probabilities reach p"),
    ("--seed", "seed", int, "seed of sampling"),
    (
        "--abstain-below",
        "abstain_below",
        abstain_value,
        "no reply when the confidence is below this; auto: the threshold of the run's "
        "calibration.json (jumok calibrate)",
    ),
]


# The decoding options jumok generate offers (sampling and its constraints).
GENERATE_OPTIONS = (
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "no_repeat_ngram",
    "repetition_penalty",
    "min_length",
)


# The decoding flags whose values are names (the config's Literal types; a test keeps them equal).
CHOICES = {
    "length_penalty": ["none", "gnmt", "average"],
    "stopping": ["exact", "current", "first"],
}


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per ``decode.*`` option; unset flags keep the run's config (docs/config.md)."""
    for flag, name, kind, text in DECODE_FLAGS:
        choices = CHOICES.get(name)
        p.add_argument(flag, dest=name, type=kind, choices=choices, help=f"{text} (decode.{name})")
    p.add_argument(
        "--sample",
        dest="sample",
        action="store_const",
        const=True,
        help="draw --n-best samples instead of searching (decode.sample)",
    )
    p.add_argument(
        "--precision",
        dest="precision",
        choices=["fp32", "bf16"],
        help="bf16: decode under bfloat16 autocast, 1.3-1.7x as fast as fp32 on CPUs with "
        "bf16 (decode.precision)",
    )
    p.add_argument(
        "--quantize",
        dest="quantize",
        choices=["none", "int8"],
        help="int8: decode with int8 LSTM and Linear layers (dynamic quantization, CPU only, "
        "float32 activations between them; not with --precision bf16) (decode.quantize)",
    )
    p.add_argument(
        "--replace-unk",
        dest="replace_unk",
        action="store_const",
        const=True,
        help="replace <unk> in the output with the most-attended source token (decode.replace_unk)",
    )


def add_prefix_arguments(p: argparse.ArgumentParser) -> None:
    """``--prefix`` and ``--input-format``: what each output must start with, for every line or
    per line (docs/steering.md, Prefix)."""
    p.add_argument(
        "--input-format",
        choices=["text", "jsonl"],
        default="text",
        help='text: one input per line (default); jsonl: one JSON object per line, {"text": ..., '
        '"prefix": ...} (prefix optional; a malformed line is an error naming it and the field)',
    )
    p.add_argument(
        "--prefix",
        metavar="TEXT",
        help="every output starts with TEXT (target tokens, scored), then is decoded freely; "
        "with --input-format jsonl, for the lines without a prefix field",
    )


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the decoding options ``jumok generate`` offers (:data:`GENERATE_OPTIONS`)."""
    for flag, name, kind, text in DECODE_FLAGS:
        if name in GENERATE_OPTIONS:
            p.add_argument(flag, dest=name, type=kind, help=f"{text} (decode.{name})")


def add_mmi_arguments(p: argparse.ArgumentParser) -> None:
    """--mmi-lm, --mmi-reverse and --mmi-lambda: rerank the n-best (see :func:`reranker`)."""
    p.add_argument(
        "--mmi-lm",
        type=Path,
        metavar="LM_RUN",
        help="rerank the n-best by log P(T|S) - lambda log P(T) with this language model run "
        "(model.type: lm; anti-generic replies, docs/decoding.md)",
    )
    p.add_argument(
        "--mmi-reverse",
        type=Path,
        metavar="RUN",
        help="rerank the n-best by log P(T|S) + lambda log P(S|T) with this reverse run "
        "(trained on swapped pairs)",
    )
    p.add_argument(
        "--mmi-lambda", type=float, default=0.5, help="lambda of MMI reranking (default 0.5)"
    )


def reranker(args: argparse.Namespace):
    """The MMI reranker the flags ask for, or None."""
    if args.mmi_lm is None and args.mmi_reverse is None:
        return None
    from jumok.decoding.translator import Reranker, load

    return Reranker(
        lm=None if args.mmi_lm is None else load(args.mmi_lm),
        reverse=None if args.mmi_reverse is None else load(args.mmi_reverse),
        weight=args.mmi_lambda,
    )


def decode_options(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given on the command line (the others stay as the run has them)."""
    names = [name for _, name, _, _ in DECODE_FLAGS] + [
        "sample",
        "replace_unk",
        "precision",
        "quantize",
    ]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return resolve_abstain(given, args.run_dir)  # --abstain-below auto: calibration.json


def generate_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given to ``jumok generate``: --max-length and the sampling flags."""
    names = ("max_length", *GENERATE_OPTIONS)
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
