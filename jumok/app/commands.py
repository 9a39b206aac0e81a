"""What each ``jumok`` command does, given its parsed arguments (:mod:`jumok.app.cli` parses).

Every ``cmd_*`` takes the :class:`argparse.Namespace` of its subcommand and returns the exit
status. Heavy modules (torch, the training loop, the server) are imported inside the command
that needs them, so that ``jumok --help`` stays quick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jumok.app.decode_flags import decode_options, generate_options, reranker
from jumok.app.jsonl_input import read_input
from jumok.app.outputs import check_output, make_output_dir, remove_if_empty, write_output
from jumok.errors import ConfigError, DataError

if TYPE_CHECKING:
    from jumok.config import Config
    from jumok.decoding.translator import Translation


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


def cmd_train(args: argparse.Namespace) -> int:
    """``jumok train``: train a config (or resume a run) and print where the checkpoints are."""
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
        except DataError as err:
            if str(err).startswith("data."):  # a data field: name the config it is read from
                raise DataError(f"{args.config or run_dir / 'config.yaml'}: {err}") from None
            raise
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
    """``jumok vocab``: train the tokenizers and write the vocabularies into --run-dir."""
    from jumok.checkpoint import atomic_write_text
    from jumok.config import load_config
    from jumok.data.splits import load_splits
    from jumok.data.vocabularies import build_vocabularies
    from jumok.training.rundir import prepare_run_dir

    cfg = load_config(args.config, args.overrides)
    prepare_run_dir(args.run_dir)
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
    """``jumok translate``: decode --input (or a terminal session) and write the outputs."""
    import time

    from jumok.app.replies import reply_options, translate_replies
    from jumok.decoding.translator import load

    refuse_same_file(args.output, "--output", **{"--input": args.input})  # before any work
    check_output(args.output, "--output")
    if args.input == "-" and sys.stdin is None:
        raise DataError("standard input is closed; give --input FILE or open it")
    started = time.perf_counter()
    # a bad run dir fails before stdin is read
    translator = load(args.run_dir, which=args.checkpoint, device=args.device)
    options = reply_options(args, decode_options(args))  # --reply-set: refuses search flags
    opts = translator.options(max_length=args.max_length, batch_size=args.batch_size, **options)
    translator.prepare(**options)  # the bf16, int8 or packed copy: part of loading the model
    loaded = time.perf_counter()
    if args.plot is not None:
        make_output_dir(args.plot, "--plot")
    if args.input == "-" and args.output == "-" and sys.stdin.isatty():
        from jumok.app.console import interactive

        start = {"max_length": args.max_length, "batch_size": 1, "prefix": args.prefix}
        interactive(translator, {**start, **options})
        return 0
    texts, prefix, notes = read_input(
        args.input, args.input_format, args.max_input_chars, args.strict, args.prefix
    )
    for note in notes[:10]:  # lines kept aligned with an empty output, each named
        print(f"jumok: warning: {note}", file=sys.stderr)
    if len(notes) > 10:
        print(f"jumok: warning: ... and {len(notes) - 10} more such lines", file=sys.stderr)
    if not texts:
        name = "<stdin>" if args.input == "-" else args.input
        print(f"jumok: warning: {name} has no lines; nothing to translate", file=sys.stderr)
    results = translate_replies(args, translator, texts, options)  # None without --reply-set
    if results is None:
        results = translator.translate(
            texts,
            max_length=args.max_length,
            batch_size=args.batch_size,
            rerank=reranker(args),
            prefix=prefix,
            **options,
        )
    if args.report_time:
        _report_time(results, time.perf_counter() - loaded, loaded - started)
    if args.format == "jsonl":
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in results]
    else:
        lines = format_text(results, opts.n_best)
    write_output(args.output, "".join(line + "\n" for line in lines), "--output")
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
    """``jumok eval``: translate --src, score it against --ref and write the report to --out."""
    from jumok.app.evaluation import evaluate_files, format_report, write_report
    from jumok.training.rundir import refuse_nonempty_dir

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    first = args.run_dir[0] if args.run_dir[0].is_dir() else args.run_dir[0].parent
    out = args.out or first / "evals" / f"{args.src.stem}-{stamp}"
    refuse_same_file(out, "--out", **{"--src": args.src, "--ref": args.ref})
    refuse_nonempty_dir(out)  # before the work, not after
    options = {
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        **decode_options(args),
    }
    options = {k: v for k, v in options.items() if v is not None}
    created = make_output_dir(out, "--out")
    try:
        report, outputs = evaluate_files(
            args.run_dir,
            args.src,
            args.ref,
            options,
            args.checkpoint,
            rerank=reranker(args),
            device=args.device,
        )
        write_report(out, report, outputs)
    except BaseException:
        remove_if_empty(created)
        raise
    sys.stdout.write(format_report(report))
    print(f"wrote {out}/report.json, report.md and hypotheses.txt")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``jumok calibrate``: the confidence threshold reaching --target-precision, into the run."""
    from jumok.app.calibrate import run_calibration

    options = {"max_length": args.max_length, "batch_size": args.batch_size, **decode_options(args)}
    options = {k: v for k, v in options.items() if v is not None}
    return run_calibration(args, options, rerank=reranker(args))


def cmd_generate(args: argparse.Namespace) -> int:
    """``jumok generate``: print --num sentences sampled from a language model run."""
    from jumok.decoding.translator import load

    if args.num < 1:
        raise DataError(f"--num: expected at least 1 sentence, got {args.num}")
    for candidate in load(args.run_dir).generate(args.num, **generate_options(args)):
        print(candidate.text)
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    """``jumok average``: write the mean of several checkpoints' weights to --out."""
    from jumok.decoding.ensemble import average_checkpoints
    from jumok.decoding.translator import load_run_checkpoint, resolve_checkpoint

    paths = [resolve_checkpoint(path, args.checkpoint) for path in args.checkpoints]
    refuse_same_file(args.out, "--out", **{f"checkpoint {i}": p for i, p in enumerate(paths, 1)})
    for given, path in zip(args.checkpoints, paths, strict=True):
        load_run_checkpoint(given, path)  # a run directory's vocab.json must match, as in translate
    average_checkpoints(paths, args.out, one_run=not args.force)
    print(f"wrote the average of {len(paths)} checkpoints to {args.out}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """``jumok runs``: one line per run under DIR."""
    from jumok.app.runs import list_runs

    sys.stdout.write(list_runs(args.dir))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``jumok info``: the run's model card."""
    from jumok.training.card import model_card

    sys.stdout.write(model_card(args.run_dir))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``jumok serve``: load the runs and serve them over HTTP until interrupted."""
    from pydantic import ValidationError

    from jumok.app.schemas import ServeConfig
    from jumok.app.serve import bind, load_models, model_names, run
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
    paths = model_names(args.run_dir)
    sock = bind(config.host, config.port)  # a busy port fails now, not after loading the models
    try:
        models = load_models(paths, which=args.checkpoint, device=args.device)
    except BaseException:
        sock.close()
        raise
    run(models, config, log_level=args.log_level, sock=sock)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``jumok demo``: train the lecture's model on generated dates and report what it learned."""
    from jumok.app.demo import run_demo

    run_demo(args.out, args.overrides, progress=not args.no_progress)
    return 0


def cmd_ladder(args: argparse.Namespace) -> int:
    """``jumok ladder``: train the lecture's rungs side by side on one toy task."""
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
    """``jumok data check``: print (and with --json write) the report on a config's data."""
    from jumok.config import load_config
    from jumok.data.check import check_data, format_report

    check_output(args.json, "--json")  # fail before the work, not after
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
        write_output(args.json, json.dumps(report, ensure_ascii=False, indent=2) + "\n", "--json")
        print(f"wrote {args.json}")
    return 0
