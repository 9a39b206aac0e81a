"""The ``jumok`` command line; the only module that reads ``sys.argv``.

Subcommands: ``train``, ``vocab``, ``translate``, ``eval``, ``generate``, ``average``, ``demo``, ``ladder``, ``data check``. Any
:class:`~jumok.errors.JumokError` is printed as one line ``jumok: error: ...`` with exit status 2;
nothing already on disk is changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jumok.data.readers import MAX_INPUT_CHARS
from jumok.data.readers import read_lines as read_inputs
from jumok.errors import ConfigError, DataError, JumokError
from jumok.fast import runtime

if TYPE_CHECKING:
    from jumok.config import Config
    from jumok.decoding.translator import Translation

COMMANDS_DOC = "docs/cli.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jumok",
        description="Train, inspect and use attention-based sequence-to-sequence models.",
    )
    parser.add_argument("--version", action="version", version=f"jumok {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train the model a config describes and write a run directory "
        "(config.yaml, metrics.jsonl, best/last checkpoints, resume.state). SIGINT or SIGTERM "
        "finishes the current update, saves the run and exits (130 or 143) with the command "
        "that resumes it; a second one exits at once. See docs/reliability.md. On several "
        "processes or machines: torchrun --nproc-per-node N -m jumok train CONFIG (see "
        "docs/distributed.md).",
    )
    _config_arguments(
        p,
        "override a config field by its dotted path, e.g. --set train.lr=3e-4 (repeatable)",
        config_help="YAML config (see docs/config.md); optional with --resume (it must then "
        "agree with the run's)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="where to write the run (default: runs/CONFIGNAME-TIMESTAMP); must not hold a run",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the unfinished run in RUN_DIR from its last saved state, exactly as if "
        "it had not stopped; logs are appended. Only train.threads, train.examples, "
        "train.device and train.resume_every may differ from the run's config",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "vocab",
        help="train the tokenizer(s) and build the vocabularies, before training",
        description="Train the config's tokenizer on the training split (SentencePiece models "
        "go into the run directory) and build the vocabularies, so they can be inspected; a "
        "later 'jumok train CONFIG --run-dir DIR' reuses them.",
    )
    _config_arguments(p, "override a config field by its dotted path (repeatable)")
    p.add_argument("--run-dir", type=Path, required=True, help="where to keep the tokenizer")
    p.set_defaults(func=cmd_vocab)

    p = sub.add_parser(
        "translate",
        help="decode text with a trained run",
        description="Read one input per line and write the model's output for each.",
    )
    p.add_argument(
        "run_dir",
        type=Path,
        nargs="+",
        help="a run directory (or a .safetensors checkpoint); several decode as an ensemble "
        "(the average of their probabilities)",
    )
    p.add_argument(
        "--input", default="-", help="input file, one text per line; '-' = stdin (default)"
    )
    p.add_argument(
        "--output",
        default="-",
        help="output file; '-' = stdout (default); refused when it is the --input file",
    )
    p.add_argument(
        "--max-input-chars",
        type=int,
        default=MAX_INPUT_CHARS,
        help=f"longest input line accepted (default {MAX_INPUT_CHARS}); a longer one is an error "
        "naming the line, as a file that is not one sentence per line usually is",
    )
    p.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="text: one output per line; jsonl: output, score, tokens, attention matrix and "
        "attention diagnostics per line, with a summary of the diagnostics on stderr "
        "(see docs/diagnostics.md)",
    )
    _decoding_arguments(p)
    p.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write an attention heatmap per input into DIR (the n-best side by side)",
    )
    p.add_argument(
        "--report-time",
        action="store_true",
        help="print on stderr the translation time (reading and tokenizing the input, search, "
        "detokenizing; model load and writing the output excluded), inputs/s and output "
        "tokens/s, and the model load time (reading the checkpoint and making the bf16, int8 "
        "or packed copy the decoding options ask for)",
    )
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "eval",
        help="score a run on a source file against references (BLEU, chrF, TER, ...)",
        description="Translate --src and score it against --ref: BLEU, chrF and TER "
        "(sacrebleu), exact match, token accuracy, distinct-1/2 and the share of the most "
        "frequent output. Writes report.json, report.md (with the sacrebleu signatures, every "
        "decoding setting, file hashes, versions and the command that reproduces it) and "
        "hypotheses.txt. Several run directories decode as an ensemble.",
    )
    p.add_argument("run_dir", type=Path, nargs="+", help="run directories (or checkpoints)")
    p.add_argument("--src", type=Path, required=True, help="source file, one text per line")
    p.add_argument("--ref", type=Path, required=True, help="reference file, one per line")
    p.add_argument(
        "--out",
        type=Path,
        help="report folder (default: RUN_DIR/evals/SRCNAME-TIMESTAMP); must not hold a report",
    )
    _decoding_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "generate",
        help="sample sentences from a language model run (model.type: lm)",
        description="Sample sentences from a language model trained with jumok (model.type: "
        "lm), the lecture's starting point: a model of which sentences are likely. Sampling is "
        "on (--temperature, --top-k, --top-p, --seed); --beam 1 without --sample is not "
        "offered because greedy search gives one sentence.",
    )
    p.add_argument("run_dir", type=Path, help="a language model run directory (or checkpoint)")
    p.add_argument("-n", "--num", type=int, default=10, help="sentences to sample (default 10)")
    p.add_argument("--max-length", type=int, help="most tokens per sentence")
    for flag, name, kind, text in DECODE_FLAGS:
        if name in GENERATE_OPTIONS:
            p.add_argument(flag, dest=name, type=kind, help=f"{text} (decode.{name})")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "average",
        help="average the weights of checkpoints of one model",
        description="Write the element-wise mean of the weights of several checkpoints of the "
        "same model (same config and vocabularies), e.g. the last few of one run, to a new "
        "checkpoint that jumok translate reads like any other.",
    )
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints or run directories")
    p.add_argument("--out", type=Path, required=True, help="the new checkpoint (must not exist)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="which checkpoint of a run directory",
    )
    p.set_defaults(func=cmd_average)

    p = sub.add_parser(
        "demo",
        help="train the lecture's model on generated dates and show what it learned",
        description="Generate date-format data, train the lecture's attention model "
        "(examples/date.yaml), print exact match per epoch and sample answers, and write "
        "attention heatmaps, a learning curve and report.md.",
    )
    p.add_argument("--out", type=Path, help="output directory (default: demo-runs/TIMESTAMP)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the demo's config, e.g. --set train.epochs=2",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "ladder",
        help="train plain seq2seq, reversed, Peeky and attention rungs side by side",
        description="The lecture's ladder on one task: plain seq2seq, + reversed input, + Peeky, "
        "+ dot, general and additive attention, each trained on the same data and seed. Writes "
        "ladder.json, ladder.md, ladder.png (exact-match curves) and attention.png.",
    )
    p.add_argument("--task", choices=["date", "addition"], default="date", help="toy task")
    p.add_argument("--epochs", type=int, help="epochs per rung (default: the book's, 10 or 25)")
    p.add_argument("--quick", action="store_true", help="tiny preset (small data and model)")
    p.add_argument(
        "--out", type=Path, help="output directory (default: ladder-runs/TASK-TIMESTAMP)"
    )
    p.add_argument(
        "--book-data",
        type=Path,
        metavar="DIR",
        help="train on the book's own TASK.txt from DIR (its fixed-width date.txt or "
        "addition.txt) instead of generated data",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every rung, e.g. --set model.init=book "
        "--set model.decoder.init=last_h (the book's initial weights and decoder start)",
    )
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser(
        "serve",
        help="serve trained runs over HTTP: a REST API and a page showing the attention",
        description="Load each run once and serve POST /v1/translate (n-best, scores, "
        "attention), GET /v1/models, /health, /ready, the OpenAPI docs at /docs and a web page "
        "at / to type a sentence and look at its attention. Requests that arrive together are "
        "decoded in one batch. Binds to 127.0.0.1 unless --host says otherwise; a request can "
        "only choose among the models given here, by name. See docs/serving.md.",
    )
    p.add_argument(
        "run_dir",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories (or checkpoints) to serve, each as RUN_DIR (named after its "
        "folder) or NAME=RUN_DIR; the first is the default model",
    )
    p.add_argument(
        "--which", choices=["best", "last"], default="best", help="checkpoint of each run"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    _serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "data",
        help="inspect a config's data before training",
        description="Inspect the data a config names, loaded exactly as training loads it.",
    )
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser(
        "check",
        help="sizes, lengths, unknown tokens, duplicates and train overlap per split",
        description="Load the splits and tokenizers as training would and print, per split: "
        "pairs, lengths in tokens, unknown-token rate and coverage of the train vocabulary, "
        "repeated pairs, ambiguous sources and, for dev and test, pairs and sources also in "
        "train, exactly and after normalisation (see docs/data-check.md). Writes nothing next "
        "to the data.",
    )
    _config_arguments(
        p, "override a config field by its dotted path, e.g. --set data.tokenizer.kind=word"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=cmd_data_check)
    return parser


def _version() -> str:
    from jumok import __version__

    return __version__


def refuse_same_file(output: str | Path | None, output_flag: str, **inputs: str | Path) -> None:
    """Refuse to write ``output`` over a file the command reads (``inputs``: flag -> path).

    The same file is found by :func:`os.path.samefile` (a symlink or a hard link to the input is
    the same file). Writing it would replace the input before, or while, it is read: ``jumok
    translate --input X --output X`` once left X empty. ``-`` (stdin, stdout) and outputs that do
    not exist yet are never the same file; neither is an input that is not a regular file (a
    terminal can be both stdin and stdout).

    Raises:
        DataError: naming both flags and the file.
    """
    if output is None or str(output) == "-":
        return
    for flag, path in inputs.items():
        if path is None or str(path) == "-" or not os.path.isfile(path):
            continue
        try:
            same = os.path.samefile(path, output)
        except OSError:  # the output does not exist (yet) or cannot be examined: not the same
            continue
        if same:
            raise DataError(
                f"{output_flag} {output}: is the same file as {flag} {path}; writing it would "
                f"destroy the input. Nothing was changed; choose another {output_flag}"
            )


def _config_arguments(
    p: argparse.ArgumentParser, set_help: str, config_help: str | None = None
) -> None:
    """CONFIG and the repeatable --set KEY=VALUE, shared by the commands that read a config.

    With ``config_help`` CONFIG is optional (``jumok train --resume`` reads the run's own)."""
    if config_help is None:
        p.add_argument("config", type=Path, help="YAML config (see docs/config.md)")
    else:
        p.add_argument("config", type=Path, nargs="?", help=config_help)
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help
    )


def cmd_train(args: argparse.Namespace) -> int:
    from jumok.training.distributed import process_group
    from jumok.training.resume import TrainingInterrupted
    from jumok.training.train import train

    cfg, run_dir = _train_config(args)
    # Under torchrun (docs/distributed.md) every process runs this; rank 0 writes and prints.
    with process_group(cfg.train.device) as world:
        run_dir = world.broadcast(run_dir)  # the default name holds rank 0's clock
        if world.is_main:
            print(f"run directory: {run_dir}", flush=True)
        try:
            result = train(
                cfg,
                run_dir,
                progress=not args.no_progress,
                resume=args.resume is not None,
                handle_signals=True,
            )
        except TrainingInterrupted as stop:
            if world.is_main:
                print(f"jumok: {stop}", file=sys.stderr)
            return stop.exit_code
    if world.is_main:
        print(f"{_best_line(cfg.train.early_stopping.metric, result)}; checkpoints in {run_dir}/")
    return 0


def _best_line(metric: str, result) -> str:
    """'best dev bleu 30.12' for the metric that chooses best.safetensors."""
    values = [getattr(r, f"dev_{metric}") for r in result.history]
    if metric == "exact_match" or not values:
        return f"best dev exact match {100 * result.best_exact_match:.2f}%"
    best, digits = (min(values), 4) if metric == "loss" else (max(values), 2)
    return f"best dev {metric} {best:.{digits}f}"


def _train_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The config and run directory ``jumok train`` was asked for."""
    from jumok.config import load_config
    from jumok.errors import RunDirError
    from jumok.training.resume import require_resumable

    if args.resume is not None:
        if args.run_dir is not None and args.run_dir != args.resume:
            raise RunDirError("--resume RUN_DIR names the run directory; leave out --run-dir")
        run_dir = args.resume
        require_resumable(run_dir)
        cfg = load_config(args.config or run_dir / "config.yaml", args.overrides)
    elif args.config is None:
        raise ConfigError("jumok train: give a CONFIG to start a run, or --resume RUN_DIR")
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = args.run_dir or Path("runs") / (
            f"{args.config.stem}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        )
    return cfg, run_dir


def cmd_vocab(args: argparse.Namespace) -> int:
    from jumok.checkpoint import atomic_write_text
    from jumok.config import load_config
    from jumok.data.splits import load_splits
    from jumok.data.vocabularies import build_vocabularies
    from jumok.training.train import RUN_MARKERS

    cfg = load_config(args.config, args.overrides)
    taken = [m for m in RUN_MARKERS if (args.run_dir / m).exists()]
    if taken:
        raise DataError(f"{args.run_dir}: already holds a run ({', '.join(taken)}); choose another")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg.data)
    for note in splits.notes:
        print(note)
    v = build_vocabularies(cfg, splits, args.run_dir)
    atomic_write_text(
        args.run_dir / "vocab.json",
        json.dumps(
            {"source": v.src_vocab.tokens, "target": v.tgt_vocab.tokens}, ensure_ascii=False
        ),
    )
    print(f"vocabulary: {len(v.src_vocab)} source, {len(v.tgt_vocab)} target tokens (4 special)")
    for source, target in itertools.islice(v.train_pairs(), 3):
        print(f"  {v.src_tok.tokenize(source)} -> {v.tgt_tok.tokenize(target)}")
    print(f"written to {args.run_dir}/; train there with --run-dir {args.run_dir}")
    return 0


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
    ("--abstain-below", "abstain_below", float, "no reply when the confidence is below this"),
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


def _decoding_arguments(p: argparse.ArgumentParser) -> None:
    """What translate and eval share: the checkpoint, every decoding option, MMI reranking."""
    p.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="which checkpoint"
    )
    p.add_argument("--max-length", type=int, help="most output tokens (default: decode.max_length)")
    p.add_argument(
        "--batch-size", type=int, help="sentences per batch (default: decode.batch_size)"
    )
    _decode_arguments(p)
    _mmi_arguments(p)


# The decoding flags whose values are names (the config's Literal types; a test keeps them equal).
CHOICES = {
    "length_penalty": ["none", "gnmt", "average"],
    "stopping": ["exact", "current", "first"],
}


def _decode_arguments(p: argparse.ArgumentParser) -> None:
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


def _mmi_arguments(p: argparse.ArgumentParser) -> None:
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
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def format_text(results: list[Translation], n_best: int) -> list[str]:
    """Text output: one line per input, or with an n-best list, ``INPUT<TAB>RANK<TAB>SCORE<TAB>
    TEXT`` per hypothesis (input and rank from 1)."""
    if n_best <= 1:
        return [r.text for r in results]
    return [
        f"{number}\t{rank}\t{h.score:.4f}\t{h.text}"
        for number, r in enumerate(results, start=1)
        for rank, h in enumerate(r.hypotheses, start=1)
    ]


def cmd_translate(args: argparse.Namespace) -> int:
    import time

    from jumok.decoding.translator import load

    refuse_same_file(args.output, "--output", **{"--input": args.input})  # before any work
    started = time.perf_counter()
    translator = load(
        args.run_dir, which=args.checkpoint
    )  # a bad run dir fails before stdin is read
    options = decode_options(args)
    opts = translator.options(max_length=args.max_length, batch_size=args.batch_size, **options)
    translator.prepare(**options)  # the bf16, int8 or packed copy: part of loading the model
    loaded = time.perf_counter()
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
    if args.input == "-" and args.output == "-" and sys.stdin.isatty():
        from jumok.app.console import interactive

        interactive(translator, {"max_length": args.max_length, "batch_size": 1, **options})
        return 0
    texts = read_inputs(args.input, max_chars=args.max_input_chars)
    if not texts:
        name = "<stdin>" if args.input == "-" else args.input
        print(f"jumok: warning: {name} has no lines; nothing to translate", file=sys.stderr)
    results = translator.translate(
        texts,
        max_length=args.max_length,
        batch_size=args.batch_size,
        rerank=reranker(args),
        **options,
    )
    if args.report_time:
        _report_time(results, time.perf_counter() - loaded, loaded - started)
    if args.format == "jsonl":
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in results]
    else:
        lines = format_text(results, opts.n_best)
    payload = "".join(line + "\n" for line in lines)
    if args.output == "-":
        sys.stdout.write(payload)
        sys.stdout.flush()
    else:
        from jumok.checkpoint import atomic_write_text

        atomic_write_text(args.output, payload)
    if args.format == "jsonl":
        _print_attention_summary(results)
    if args.plot is not None:
        _plot_translations(args.plot, results)
    return 0


def _report_time(results: list[Translation], seconds: float, load_seconds: float) -> None:
    """``--report-time``: what OpenNMT-py's ``-report_time`` gives, measured the same way
    (from the loaded model to the last output, before it is written)."""
    tokens = sum(len(r.tokens) for r in results)  # the best hypothesis of each, eos included
    print(
        f"translation time: {seconds:.2f} s for {len(results):,} inputs "
        f"({len(results) / max(seconds, 1e-9):,.1f} inputs/s, "
        f"{tokens / max(seconds, 1e-9):,.0f} output tokens/s); model load {load_seconds:.2f} s",
        file=sys.stderr,
    )


def _plot_translations(folder: Path, results: list[Translation]) -> None:
    """One PNG per input: the attention of each hypothesis side by side."""
    from jumok.plot import attention_grid

    written = 0
    for number, r in enumerate(results, start=1):
        items = [
            {
                "attention": h.attention,
                "source_tokens": r.source_tokens,
                "tokens": h.tokens,
                "title": f"#{rank}  {h.score:.2f}  {h.text}"[:60],
            }
            for rank, h in enumerate(r.hypotheses, start=1)
            if h.attention is not None
        ]
        if items:
            attention_grid(folder / f"{number:04d}.png", items, columns=min(len(items), 3))
            written += 1
    print(f"wrote {written} attention maps to {folder}", file=sys.stderr)


def _print_attention_summary(results: list[Translation]) -> None:
    """The data-set view of the attention diagnostics, on stderr so stdout stays jsonl."""
    from jumok.decoding.diagnostics import format_summary, summarize

    found = [d for d in (r.diagnostics() for r in results) if d is not None]
    if found:
        print(format_summary(summarize(found)), file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from jumok.app.evaluation import evaluate_files, format_report, write_report
    from jumok.errors import RunDirError

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    first = args.run_dir[0] if args.run_dir[0].is_dir() else args.run_dir[0].parent
    out = args.out or first / "evals" / f"{args.src.stem}-{stamp}"
    refuse_same_file(out, "--out", **{"--src": args.src, "--ref": args.ref})
    if out.exists() and not out.is_dir():
        raise RunDirError(
            f"--out {out}: is a file; expected a folder for the report. Nothing was changed; "
            "choose a new --out"
        )
    if out.exists() and any(out.iterdir()):  # before the work, not after
        raise RunDirError(
            f"{out}: exists and is not empty; nothing was changed. Choose a new --out"
        )
    options = {
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        **decode_options(args),
    }
    options = {k: v for k, v in options.items() if v is not None}
    report, outputs = evaluate_files(
        args.run_dir, args.src, args.ref, options, args.checkpoint, rerank=reranker(args)
    )
    write_report(out, report, outputs)
    sys.stdout.write(format_report(report))
    print(f"wrote {out}/report.json, report.md and hypotheses.txt")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from jumok.decoding.translator import load

    if args.num < 1:
        raise DataError(f"--num: expected at least 1 sentence, got {args.num}")
    names = ("max_length", *GENERATE_OPTIONS)
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    for candidate in load(args.run_dir).generate(args.num, **options):
        print(candidate.text)
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from jumok.decoding.ensemble import average_checkpoints
    from jumok.decoding.translator import resolve_checkpoint

    paths = [resolve_checkpoint(path, args.checkpoint) for path in args.checkpoints]
    refuse_same_file(args.out, "--out", **{f"checkpoint {i}": p for i, p in enumerate(paths, 1)})
    average_checkpoints(paths, args.out)
    print(f"wrote the average of {len(paths)} checkpoints to {args.out}")
    return 0


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`jumok.app.serve.ServeConfig` field, its help the field's description."""
    from jumok.app.serve import ServeConfig

    for name, field in ServeConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{field.description} (default {'on' if field.default else 'off'})",
            )
        else:
            p.add_argument(
                flag,
                dest=name,
                type=field.annotation,
                default=None,
                help=f"{field.description} (default {field.default})",
            )


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from jumok.app.serve import ServeConfig, load_models, model_names, run
    from jumok.config import format_validation_error

    given = {
        name: getattr(args, name)
        for name in ServeConfig.model_fields
        if getattr(args, name) is not None
    }
    try:
        config = ServeConfig(**given)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "serve options")) from None
    models = load_models(model_names(args.run_dir), which=args.which, device=args.device)
    run(models, config, log_level=args.log_level)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from jumok.app.demo import run_demo

    run_demo(args.out, args.overrides, progress=not args.no_progress)
    return 0


def cmd_ladder(args: argparse.Namespace) -> int:
    from jumok.app.ladder import run_ladder

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("ladder-runs") / f"{args.task}-{stamp}"
    run_ladder(
        args.task,
        out,
        epochs=args.epochs,
        quick=args.quick,
        book_data=args.book_data,
        overrides=args.overrides,
    )
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from jumok.checkpoint import atomic_write_text
    from jumok.config import load_config
    from jumok.data.check import check_data, format_report

    if args.json and not args.json.resolve().parent.is_dir():  # fail before the work, not after
        raise DataError(f"--json {args.json}: folder {args.json.parent} does not exist")
    cfg = load_config(args.config, args.overrides)
    files = {"config": args.config}
    for split in ("train", "dev", "test"):
        paths = getattr(cfg.data, split)
        for n, path in enumerate(paths if isinstance(paths, tuple) else (paths,), start=1):
            files[f"data.{split}" + (f" (file {n})" if isinstance(paths, tuple) else "")] = path
    refuse_same_file(args.json, "--json", **files)
    report = check_data(cfg)
    sys.stdout.write(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one jumok command; ``argv`` None means the ``jumok`` program itself (sys.argv)."""
    runtime.configure()  # the kernel caches, before any model runs
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except JumokError as err:
        print(f"jumok: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("jumok: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        runtime.quick_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
