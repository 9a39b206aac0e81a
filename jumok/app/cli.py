"""The ``jumok`` command line; the only module that reads ``sys.argv``.

Subcommands: ``train``, ``vocab``, ``translate``, ``eval``, ``generate``, ``average``, ``runs``,
``info``, ``calibrate``, ``demo``, ``ladder``, ``serve``, ``data check``. This module declares them, one
``_add_<command>`` function each; what each one does is in :mod:`jumok.app.commands`, the
decoding flags they share in :mod:`jumok.app.decode_flags`, and the parser's "did you mean" in
:mod:`jumok.app.suggest`. Any :class:`~jumok.errors.JumokError` is printed as one line
``jumok: error: ...`` with exit status 2; nothing already on disk is changed. A bare ``jumok``
prints the list of commands (``--help``) and exits with 2, as a command line that runs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jumok.app import commands
from jumok.app.calibrate import add_arguments as add_calibrate_arguments
from jumok.app.decode_flags import (
    CHOICES,
    add_decode_arguments,
    add_generate_arguments,
    add_mmi_arguments,
    add_prefix_arguments,
    decode_options,
)
from jumok.app.replies import REPLY_FLAGS, add_reply_arguments
from jumok.app.suggest import HelpGroups, Parser
from jumok.data.inputs import MAX_INPUT_CHARS
from jumok.errors import JumokError
from jumok.fast import runtime

COMMANDS_DOC = "docs/cli.md"

# CHOICES and decode_options are read through this module by tests and older callers.
__all__ = ["CHOICES", "build_parser", "decode_options", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``jumok`` parser: one subparser per command, in the order ``jumok --help`` lists them."""
    parser = Parser(
        prog="jumok",
        description="Train, inspect and use attention-based sequence-to-sequence models.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"jumok {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_vocab(sub)
    _add_translate(sub)
    _add_eval(sub)
    _add_calibrate(sub)
    _add_generate(sub)
    _add_average(sub)
    _add_runs(sub)
    _add_info(sub)
    _add_demo(sub)
    _add_ladder(sub)
    _add_serve(sub)
    _add_data(sub)
    return parser


def _version() -> str:
    from jumok import __version__

    return __version__


# ------------------------------------------------------------------ flags several commands share
def _overrides_argument(p: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` (into ``args.overrides``): a config field by its path."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
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
    _overrides_argument(p, set_help)


def _out_argument(p: argparse.ArgumentParser, help_text: str, required: bool = False) -> None:
    """``--out PATH``: where a command writes its report, checkpoint or pictures."""
    p.add_argument("--out", type=Path, required=required, help=help_text)


def _checkpoint_argument(
    p: argparse.ArgumentParser, help_text: str, aliases: tuple[str, ...] = ()
) -> None:
    """``--checkpoint {best,last}``: which checkpoint of a run directory (``args.checkpoint``).

    ``aliases`` are older spellings of the same flag, kept so that old command lines still work.
    """
    p.add_argument(
        "--checkpoint",
        *aliases,
        dest="checkpoint",
        choices=["best", "last"],
        default="best",
        help=help_text,
    )


# The sections of translate's and eval's --help, in order; every flag of theirs is in one.
DECODING_SECTIONS = {
    "input and output": (
        *("--input", "--input-format", "--output", "--max-input-chars", "--strict"),
        *("--format", "--src", "--ref", "--out"),
    ),
    "prefix (docs/steering.md)": ("--prefix",),
    "model and speed": ("--checkpoint", "--device", "--batch-size", "--precision", "--quantize"),
    "search": (
        *("--beam", "--n-best", "--max-length", "--length-penalty", "--alpha"),
        *("--coverage-penalty", "--stopping"),
    ),
    "sampling": ("--sample", "--temperature", "--top-k", "--top-p", "--seed"),
    "constraints": (
        *("--min-length", "--min-length-ratio", "--max-length-ratio", "--no-repeat-ngram"),
        *("--repetition-penalty", "--abstain-below", "--replace-unk"),
    ),
    "reranking (MMI, docs/decoding.md)": ("--mmi-lm", "--mmi-reverse", "--mmi-lambda"),
    "reports and pictures": ("--plot", "--report-time"),
    "reply sets (docs/decoding.md)": REPLY_FLAGS,
}


def _device_argument(p: argparse.ArgumentParser | HelpGroups) -> None:
    """``--device``: where to decode (``args.device``)."""
    p.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="cpu, cuda or cuda:N (default cpu); train.device: auto picks for training",
    )


def _device(text: str) -> str:
    """``--device``: cpu, or a CUDA device this machine has."""
    if text == "cpu":
        return text  # without importing torch, which every parse would then pay for
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {count} CUDA device(s); use --device cpu"
            )
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _decoding_arguments(p: argparse.ArgumentParser | HelpGroups) -> None:
    """What translate and eval share: the checkpoint, the device, every decoding option, MMI
    reranking."""
    _checkpoint_argument(p, "which checkpoint")
    _device_argument(p)
    p.add_argument("--max-length", type=int, help="most output tokens (default: decode.max_length)")
    p.add_argument(
        "--batch-size", type=int, help="sentences per batch (default: decode.batch_size)"
    )
    add_decode_arguments(p)
    add_mmi_arguments(p)


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`jumok.app.schemas.ServeConfig` field, its help the field's description."""
    from jumok.app.schemas import ServeConfig

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


# ------------------------------------------------------------------------------- the commands
def _add_train(sub) -> None:
    """``jumok train CONFIG``: train a model, or continue a run with --resume."""
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
    p.set_defaults(func=commands.cmd_train)


def _add_vocab(sub) -> None:
    """``jumok vocab CONFIG --run-dir DIR``: the tokenizers and vocabularies, before training."""
    p = sub.add_parser(
        "vocab",
        help="train the tokenizer(s) and build the vocabularies, before training",
        description="Train the config's tokenizer on the training split (SentencePiece models "
        "go into the run directory) and build the vocabularies, so they can be inspected; a "
        "later 'jumok train CONFIG --run-dir DIR' reuses them.",
    )
    _config_arguments(p, "override a config field by its dotted path (repeatable)")
    p.add_argument("--run-dir", type=Path, required=True, help="where to keep the tokenizer")
    p.set_defaults(func=commands.cmd_vocab)


def _add_translate(sub) -> None:
    """``jumok translate RUN_DIR...``: decode one input per line."""
    p = sub.add_parser(
        "translate",
        help="decode text with a trained run",
        description="Read one input per line and write the model's output for each.",
    )
    run_dir_argument = p.add_argument
    p = HelpGroups(p, DECODING_SECTIONS)
    run_dir_argument(
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
        type=_input_chars,
        default=MAX_INPUT_CHARS,
        help=f"longest input line translated (default {MAX_INPUT_CHARS}, at most "
        f"{LONGEST_INPUT_CHARS:,}); a longer one gets an empty output and a warning naming it "
        "(with --strict, an error)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole input at its first empty, over-long or undecodable line "
        "(naming it); by default such a line gets an empty output, so the outputs stay "
        "aligned with the input lines",
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
    add_reply_arguments(p)
    add_prefix_arguments(p)
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
    p.parser.set_defaults(func=commands.cmd_translate)


def _add_eval(sub) -> None:
    """``jumok eval RUN_DIR... --src S --ref R``: scores and a reproducible report."""
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
    p = HelpGroups(p, DECODING_SECTIONS)
    p.add_argument("--src", type=Path, required=True, help="source file, one text per line")
    p.add_argument("--ref", type=Path, required=True, help="reference file, one per line")
    _out_argument(
        p, "report folder (default: RUN_DIR/evals/SRCNAME-TIMESTAMP); must not hold a report"
    )
    _decoding_arguments(p)
    p.parser.set_defaults(func=commands.cmd_eval)


def _add_calibrate(sub) -> None:
    """``jumok calibrate RUN_DIR --src S --ref R --target-precision P``: the abstain threshold."""
    p = sub.add_parser(
        "calibrate",
        help="find the confidence threshold that reaches a target precision (abstain)",
        description="Decode --src, mark each line good against --ref (exact match or sentence "
        "chrF), find the smallest confidence threshold whose kept lines reach "
        "--target-precision, report the coverage there and the expected calibration error, and "
        "write calibration.json and calibration.png (reliability diagram) into the run; "
        "--abstain-below auto then uses the threshold (docs/steering.md).",
    )
    add_calibrate_arguments(p)
    _decoding_arguments(p)
    p.set_defaults(func=commands.cmd_calibrate)


def _add_generate(sub) -> None:
    """``jumok generate RUN_DIR``: sample sentences from a language model."""
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
    add_generate_arguments(p)
    p.set_defaults(func=commands.cmd_generate)


def _add_average(sub) -> None:
    """``jumok average CHECKPOINT... --out NEW``: the mean of several checkpoints' weights."""
    p = sub.add_parser(
        "average",
        help="average the weights of checkpoints of one run",
        description="Write the element-wise mean of the weights of several checkpoints of one "
        "training run (e.g. best, last and the k best in checkpoints/) to a new checkpoint that "
        "jumok translate reads like any other. Checkpoints of different runs (another config "
        "or seed) are refused: separately trained models do not average into a model.",
    )
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints or run directories")
    _out_argument(p, "the new checkpoint (must not exist)", required=True)
    _checkpoint_argument(p, "which checkpoint of a run directory")
    p.add_argument(
        "--force",
        action="store_true",
        help="average checkpoints of different runs too (same model shape and vocabularies)",
    )
    p.set_defaults(func=commands.cmd_average)


def _add_runs(sub) -> None:
    """``jumok runs [DIR]``: the runs in a folder, one line each."""
    p = sub.add_parser(
        "runs",
        help="list the runs in a folder: status, best dev score, updates, time",
        description="List every run directory under DIR, oldest first, one line each: its "
        "status (finished; unfinished, which jumok train --resume continues; failed: stopped "
        "before its first save, or its resume.state is unreadable), the best dev score of "
        "train.early_stopping.metric, the updates done, the training time and when it started.",
    )
    p.add_argument(
        "dir",
        type=Path,
        nargs="?",
        default=Path("runs"),
        metavar="DIR",
        help="a folder of runs, searched three levels deep (default runs/, where jumok train "
        "writes; a jumok demo or ladder folder works too)",
    )
    p.set_defaults(func=commands.cmd_runs)


def _add_info(sub) -> None:
    """``jumok info RUN_DIR``: the run's model card."""
    p = sub.add_parser(
        "info",
        help="print a run's model card: data, model, training, scores, time, versions",
        description="Print the model card of a run in Markdown: its status, the data it was "
        "trained on, the model and training settings, the dev scores of each validation, the "
        "training time, the versions and the commands that use it. A run that ends writes the "
        "same card as RUN_DIR/README.md.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    p.set_defaults(func=commands.cmd_info)


def _add_demo(sub) -> None:
    """``jumok demo``: the lecture's model on generated dates, end to end."""
    p = sub.add_parser(
        "demo",
        help="train the lecture's model on generated dates and show what it learned",
        description="Generate date-format data, train the lecture's attention model "
        "(examples/date.yaml), print exact match per epoch and sample answers, and write "
        "attention heatmaps, a learning curve and report.md.",
    )
    _out_argument(p, "output directory (default: demo-runs/TIMESTAMP)")
    _overrides_argument(p, "override a field of the demo's config, e.g. --set train.epochs=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.cmd_demo)


def _add_ladder(sub) -> None:
    """``jumok ladder``: plain seq2seq up to attention, trained side by side."""
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
    _out_argument(p, "output directory (default: ladder-runs/TASK-TIMESTAMP)")
    p.add_argument(
        "--book-data",
        type=Path,
        metavar="DIR",
        help="train on the book's own TASK.txt from DIR (its fixed-width date.txt or "
        "addition.txt) instead of generated data",
    )
    _overrides_argument(
        p,
        "override a config field in every rung, e.g. --set model.init=book "
        "--set model.decoder.init=last_h (the book's initial weights and decoder start)",
    )
    p.set_defaults(func=commands.cmd_ladder)


def _add_serve(sub) -> None:
    """``jumok serve RUN_DIR...``: the REST API and the attention page."""
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
    # --which: serve's own name for --checkpoint before the commands agreed on one.
    _checkpoint_argument(p, "checkpoint of each run", aliases=("--which",))
    _device_argument(p)
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )
    _serve_arguments(p)
    p.set_defaults(func=commands.cmd_serve)


def _add_data(sub) -> None:
    """``jumok data check CONFIG``: the data a config names, before training."""
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
    p.set_defaults(func=commands.cmd_data_check)


# A recurrent encoder over a 100,000-character line already takes about 1 GB; far longer lines
# fail inside the kernels (oneDNN: "could not create a primitive").
LONGEST_INPUT_CHARS = 100_000


def _input_chars(text: str) -> int:
    """``--max-input-chars``: a whole number from 1 to LONGEST_INPUT_CHARS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= LONGEST_INPUT_CHARS:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {LONGEST_INPUT_CHARS:,} characters, got {value:,}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one jumok command; ``argv`` None means the ``jumok`` program itself (sys.argv)."""
    try:
        runtime.configure()  # the kernel caches, before any model runs
        parser = build_parser()
        if not (sys.argv[1:] if argv is None else argv):
            # What git does: the commands, on stdout, and a failing status, as a command line
            # that runs nothing is a mistake in a script (`jumok $COMMAND` with it unset).
            parser.print_help()
            code = 2
        else:
            args = parser.parse_args(argv)
            runtime.import_torch()  # Ctrl-C held back while torch initialises
            code = args.func(args)
    except JumokError as err:
        print(f"jumok: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("jumok: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader of the output went away (``jumok translate ... | head -1``): stop quietly
        # with the status a program killed by SIGPIPE has (128 + 13), as coreutils do.
        _discard_stdout()
        code = 141
    except MemoryError:
        print(
            "jumok: error: out of memory; make the model, the batch, the beam or the input smaller",
            file=sys.stderr,
        )
        code = 2
    if argv is None:
        runtime.quick_exit(code)
    return code


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass  # stdout is not a file descriptor (a test's capture): nothing to flush into a pipe


if __name__ == "__main__":
    sys.exit(main())
