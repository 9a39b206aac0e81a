"""Training speed and peak memory of jumok beside JoeyNMT 2.3.0 and OpenNMT-py 3.5.1, in one run.

``make bench-peers`` runs this script. It

1. creates ``.venvs/joeynmt`` and ``.venvs/onmt`` when they are missing or broken, installed as
   ../shared/PEERS.md §1 says (torch 2.13.0 first, pinned by ``constraints.txt``; ``envs.py``);
2. prepares the peers' data from ``../shared/data`` into ``WORK/data`` (PEERS.md §2;
   ``prepare.py``);
3. trains the peers and jumok one after another on the same data in the same settings
   (PEERS.md §3; the peers' configs are the ``*.yaml`` templates here, filled in);
4. prints one JSON line per run and, per task, a Markdown table with the ratios jumok / peer of
   this run.

Tasks:

- ``date`` (Task A): ``--epochs`` epochs of 352 updates (batch 128) on the first 45,000 lines of
  dlfs2/date.txt. JoeyNMT cannot run the standard unidirectional encoder, so two models are
  compared: uni LSTM 256 + dot (OpenNMT-py, jumok) and JoeyNMT's bi LSTM 2×128 + general
  (JoeyNMT, OpenNMT-py "bi", jumok "bi").
- ``multi30k`` (Multi30k en→de in the peers' settings, "Task B" in PEERS.md): ``--minutes`` of training from process launch (the peers are stopped by
  a signal, jumok by ``train.max_seconds``); jumok runs the peers' settings (fp32, no label
  smoothing, constant rate) and again in bf16, its recipe's precision.
- ``decode``: test2016 decoded greedy and beam 5 with the Multi30k models of the last
  ``multi30k`` run, OpenNMT-py and jumok (``--jumok-variants``) alternating for ``--rounds``
  rounds; each system's own report of its generation time, BLEU beside it (``decode.py``).

Throughput is training target tokens per second (non-pad, end-of-sentence included) as each
toolkit logs it, start-up and validation excluded (``throughput.py``); peak memory is the
largest resident set of the training process (``peak.py``).

``--train-rounds N`` trains every system N times, the order reversed in every other round, and
adds each round's ratios and their median. This machine's speed drifts: the same oneDNN LSTM
forward and backward on the date model's shapes took 19.6-22 ms in some stretches and 25.5-29
ms in others, switching within a process and lasting across processes (measured 2026-11-26).
One run of each system, one after the other, can see two different machines; alternating
rounds lets both systems see the same mix.

    .venv/bin/python benchmarks/peers/run.py                        # both tasks: 1 epoch, 3 min
    .venv/bin/python benchmarks/peers/run.py --task multi30k --minutes 20 --json peers.jsonl
    .venv/bin/python benchmarks/peers/run.py --task date --epochs 3 --systems onmt jumok
    .venv/bin/python benchmarks/peers/run.py --task date --epochs 3 --systems onmt jumok-bf16 \
        --train-rounds 3
    .venv/bin/python benchmarks/peers/run.py --task decode --rounds 3

Every process's output is kept in ``WORK/logs/TIMESTAMP/TASK-SYSTEM.log`` (``-rN`` added with
rounds), its run in
``WORK/runs/TASK-SYSTEM`` (replaced by the next run). Needs ``../shared/data`` beside the
repository (or ``--shared``) and, the first time, PyPI to install the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import decode
import envs
import peak
import prepare
import throughput

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MULTI30K_CONFIG = ROOT / "examples" / "multi30k" / "config.yaml"
DATE_UPDATES_PER_EPOCH = 352  # ceil(45,000 / 128)
DATE_SECONDS_PER_EPOCH_LIMIT = 900  # a safety stop only: the slowest peer needs ~45 s an epoch
JUMOK_GRACE = 600  # jumok validates after its budget; a safety stop only

JOEYNMT, ONMT = "JoeyNMT 2.3.0", "OpenNMT-py 3.5.1"
DATE_UNI = "uni LSTM 256, dot"
DATE_BI = "bi LSTM 2x128, general"
M30K = "bi LSTM 2x256, dec 512, general, input feeding"
SYSTEMS = ("joeynmt", "onmt", "onmt-bi", "jumok", "jumok-bi", "jumok-bf16")
# torch >= 2.6 loads checkpoints with weights_only=True, which OpenNMT-py 3.5.1's do not pass
# (PEERS.md §1); training loads none, but the variable is set as in the peers' own runs.
ONMT_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


@dataclass(frozen=True)
class Run:
    """One training process of the benchmark."""

    system: str  # one of SYSTEMS
    label: str  # as printed in the tables
    model: str  # runs of the same model are compared with each other
    command: list[str]
    run_dir: Path
    read: Callable[[Path], throughput.Throughput]  # given the log (peers) or the run dir (jumok)
    reads_run_dir: bool = False
    stop_after: float | None = None  # seconds from launch, then `signal`
    signal: str = "TERM"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_jumok(self) -> bool:
        return self.system.startswith("jumok")


def render(template: str, out: Path, **values: object) -> Path:
    """Fill ``$name`` placeholders of a config template here and write it to ``out``."""
    text = Template((HERE / template).read_text(encoding="utf-8")).substitute(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def jumok_train(config: Path, run_dir: Path, *sets: str) -> list[str]:
    overrides = [arg for item in sets for arg in ("--set", item)]
    command = [sys.executable, "-m", "jumok", "train", str(config), "--run-dir", str(run_dir)]
    return [*command, "--no-progress", *overrides]


def joeynmt_train(config: Path) -> list[str]:
    return [str(envs.JOEYNMT.python), "-m", "joeynmt", "train", str(config), "--skip-test"]


def onmt_train(config: Path) -> list[str]:
    return [str(envs.ONMT.python.parent / "onmt_train"), "-config", str(config)]


def date_runs(work: Path, epochs: int) -> list[Run]:
    data, runs, configs = work / "data" / "date", work / "runs", work / "configs"
    limit = DATE_SECONDS_PER_EPOCH_LIMIT * epochs
    steps = DATE_UPDATES_PER_EPOCH * epochs

    def peer_config(name: str, system: str) -> Path:
        out = configs / f"date-{system}.yaml"
        run = runs / f"date-{system}"
        return render(name, out, data=data, run=run, epochs=epochs, train_steps=steps)

    jumok_config = render("jumok_date.yaml", configs / "date-jumok.yaml", data=data, epochs=epochs)
    bi = ["model.encoder.bidirectional=true", "model.encoder.hidden_size=128"]
    bi.append("model.attention=general")
    return [
        Run(
            "joeynmt",
            JOEYNMT,
            DATE_BI,
            joeynmt_train(peer_config("joey_date.yaml", "joeynmt")),
            runs / "date-joeynmt",
            throughput.joeynmt,
            stop_after=limit,
            signal="INT",
        ),
        Run(
            "onmt",
            ONMT,
            DATE_UNI,
            onmt_train(peer_config("onmt_date.yaml", "onmt")),
            runs / "date-onmt",
            throughput.onmt,
            stop_after=limit,
            env=ONMT_ENV,
        ),
        Run(
            "onmt-bi",
            f"{ONMT} (bi)",
            DATE_BI,
            onmt_train(peer_config("onmt_date_bi.yaml", "onmt-bi")),
            runs / "date-onmt-bi",
            throughput.onmt,
            stop_after=limit,
            env=ONMT_ENV,
        ),
        Run(
            "jumok",
            "jumok",
            DATE_UNI,
            jumok_train(jumok_config, runs / "date-jumok"),
            runs / "date-jumok",
            throughput.jumok,
            reads_run_dir=True,
            stop_after=limit,
        ),
        Run(
            "jumok-bi",
            "jumok (bi)",
            DATE_BI,
            jumok_train(jumok_config, runs / "date-jumok-bi", *bi),
            runs / "date-jumok-bi",
            throughput.jumok,
            reads_run_dir=True,
            stop_after=limit,
        ),
        Run(
            "jumok-bf16",
            "jumok bf16",
            DATE_UNI,
            jumok_train(jumok_config, runs / "date-jumok-bf16", "train.precision=bf16"),
            runs / "date-jumok-bf16",
            throughput.jumok,
            reads_run_dir=True,
            stop_after=limit,
        ),
    ]


def multi30k_runs(work: Path, seconds: float) -> list[Run]:
    data, runs, configs = work / "data" / "multi30k", work / "runs", work / "configs"

    def peer_config(name: str, system: str) -> Path:
        out = configs / f"multi30k-{system}.yaml"
        return render(name, out, data=data, run=runs / f"multi30k-{system}")

    def files(split: str) -> str:
        return f"[{data / f'{split}.en'}, {data / f'{split}.de'}]"

    # The recipe's model and batching on the peers' files, in the peers' settings: no label
    # smoothing, a constant rate, no test decoding. jumok trains its own SentencePiece model on
    # the same text with the same settings (BPE, 8,000, coverage 1.0) inside its budget. One
    # vocabulary for both sides, as the peers have: per side, jumok would keep only the pieces
    # each side uses (5,477 on the target side) and its output layer would be a third smaller.
    peers_setting = [
        f"train.max_seconds={seconds}",
        "data.shared_vocab=true",
        "train.label_smoothing=0.0",
        "train.schedule.kind=constant",
        f"data.train={files('train')}",
        f"data.dev={files('val')}",
        "data.test=null",
    ]
    return [
        Run(
            "joeynmt",
            JOEYNMT,
            M30K,
            joeynmt_train(peer_config("joey_multi30k.yaml", "joeynmt")),
            runs / "multi30k-joeynmt",
            throughput.joeynmt,
            stop_after=seconds,
            signal="INT",  # JoeyNMT saves the weights on SIGINT
        ),
        Run(
            "onmt",
            ONMT,
            M30K,
            onmt_train(peer_config("onmt_multi30k.yaml", "onmt")),
            runs / "multi30k-onmt",
            throughput.onmt,
            stop_after=seconds,
            env=ONMT_ENV,
        ),
        *(
            Run(
                "jumok" if precision == "fp32" else "jumok-bf16",
                f"jumok {precision}",
                M30K,
                jumok_train(
                    MULTI30K_CONFIG,
                    runs / f"multi30k-jumok-{precision}",
                    f"train.precision={precision}",
                    *peers_setting,
                ),
                runs / f"multi30k-jumok-{precision}",
                throughput.jumok,
                reads_run_dir=True,
                stop_after=seconds + JUMOK_GRACE,
            )
            for precision in ("fp32", "bf16")
        ),
    ]


def execute(run: Run, task: str, logs: Path, round_: int | None = None) -> dict:
    """Train once under peak.py; returns the JSON record (``error`` set when it failed).
    ``round_``: the round's number, when there are several (kept in the log's name)."""
    log = logs / f"{task}-{run.system}{'' if round_ is None else f'-r{round_}'}.log"
    shutil.rmtree(run.run_dir, ignore_errors=True)  # every run starts from an empty folder
    run.run_dir.mkdir(parents=True)  # OpenNMT-py opens its log file there before creating it
    with log.open("w", encoding="utf-8") as out:
        out.write(f"$ {' '.join(run.command)}\n")
    print(f"peers: {task} {run.system} ... (log: {log})", file=sys.stderr, flush=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    measured = peak.measure(run.command, log, run.env, run.stop_after, run.signal)
    record = {
        "benchmark": "peers",
        "task": task,
        "system": run.system,
        "label": run.label,
        "model": run.model,
        "round": round_ or 1,
        "target_tokens_per_second": None,
        "updates": None,
        "how": None,
    }
    try:
        speed = run.read(run.run_dir if run.reads_run_dir else log)
        record["target_tokens_per_second"] = round(speed.tokens_per_second, 1)
        record["updates"], record["how"] = speed.updates, speed.how
    except throughput.LogError as err:
        record["error"] = str(err)
    if measured["returncode"] != 0 and not measured["stopped_by"]:
        record["error"] = f"exit status {measured['returncode']}; see {log}"
    return {**record, **measured, "load_average_start": load_start, "log": str(log)}


def print_tables(task: str, setting: str, records: list[dict]) -> None:
    rounds = sorted({r["round"] for r in records})
    print(f"\n### {task}: {setting}\n")
    several = len(rounds) > 1
    print(
        f"| {'round | ' if several else ''}system | model | target tok/s | updates | peak RSS MiB | wall s |"
    )
    print(f"|{'---|' if several else ''}---|---|---|---|---|---|")
    for r in records:
        speed = r["target_tokens_per_second"]
        shown = f"{speed:,.0f}" if speed else f"failed: {r.get('error', '?')}"
        print(
            f"| {str(r['round']) + ' | ' if several else ''}{r['label']} | {r['model']} | {shown} "
            f"| {r['updates'] or '-'} | {r['peak_rss_mib']:,.0f} | {r['wall_seconds']:,.0f} |"
        )
    ratios: dict[str, list[tuple[float | None, float]]] = {}  # pair label -> per round
    for round_ in rounds:
        in_round = [r for r in records if r["round"] == round_]
        for mine in in_round:
            for peer in in_round:
                if not mine["system"].startswith("jumok") or peer["system"].startswith("jumok"):
                    continue
                if peer["model"] != mine["model"]:
                    continue
                a, b = mine["target_tokens_per_second"], peer["target_tokens_per_second"]
                memory = mine["peak_rss_mib"] / peer["peak_rss_mib"]
                label = f"{mine['label']} / {peer['label']}"
                ratios.setdefault(label, []).append((a / b if a and b else None, memory))
    if not ratios:
        return
    print(
        f"\n| ratio, measured in this run | {'rounds | ' if several else ''}target tok/s | peak RSS |"
    )
    print(f"|---|{'---|' if several else ''}---|---|")
    for label, found in ratios.items():
        speeds = [speed for speed, _ in found if speed is not None]
        memories = [memory for _, memory in found]
        shown = "-" if not speeds else f"{statistics.median(speeds):.2f}"
        each = ", ".join("-" if speed is None else f"{speed:.2f}" for speed, _ in found)
        if several:
            shown = f"{shown} (median)" if speeds else shown
            print(f"| {label} | {each} | {shown} | {statistics.median(memories):.2f} (median) |")
        else:
            print(f"| {label} | {shown} | {memories[0]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["date", "multi30k", "decode", "all"], default="all")
    parser.add_argument("--minutes", type=float, default=3.0, help="multi30k: budget per run")
    parser.add_argument("--epochs", type=int, default=1, help="date: epochs per run")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work", help="data, runs, logs")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--rounds", type=int, default=3, help="decode: rounds of every system")
    parser.add_argument(
        "--train-rounds",
        type=int,
        default=1,
        help="date, multi30k: train every system this many times, alternating the order",
    )
    parser.add_argument(
        "--jumok-run",
        type=Path,
        help="decode: jumok's model (default WORK/runs/multi30k-jumok-bf16)",
    )
    parser.add_argument(
        "--jumok-variants",
        nargs="+",
        choices=list(decode.JUMOK_VARIANTS),
        default=["bf16", "int8"],
        help="decode: jumok's arithmetic",
    )
    args = parser.parse_args()
    if args.train_rounds < 1:
        parser.error(f"--train-rounds: need at least 1, got {args.train_rounds}")
    if not args.shared.is_dir():
        sys.exit(
            f"peers: {args.shared} is missing: the benchmark needs the shared data sets "
            "(dlfs2/date.txt, multi30k/) beside the repository, or --shared DIR"
        )
    tasks = ["date", "multi30k", "decode"] if args.task == "all" else [args.task]
    work, logs = args.work.resolve(), args.work.resolve() / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True)
    training = [task for task in tasks if task != "decode"]
    if "joeynmt" in args.systems and training:
        envs.ensure(envs.JOEYNMT, logs / "install-joeynmt.log")
    if training and ("onmt" in args.systems or "onmt-bi" in args.systems) or "decode" in tasks:
        envs.ensure(envs.ONMT, logs / "install-onmt.log")

    def report(record: dict) -> None:
        print(json.dumps(record), flush=True)
        if args.json:
            with args.json.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")

    failed: list[dict] = []
    for task in tasks:
        if task == "decode":
            prepare.prepare_multi30k(args.shared, work / "data" / "multi30k")
            found = decode.run_decode(
                work, logs, args.rounds, args.jumok_run, args.jumok_variants, report
            )
            failed += [r for r in found if "error" in r]
            continue
        if task == "date":
            made = prepare.prepare_date(args.shared, work / "data" / "date")
            runs = date_runs(work, args.epochs)
            setting = f"{args.epochs} epoch(s) of {DATE_UPDATES_PER_EPOCH} updates each"
        else:
            made = prepare.prepare_multi30k(args.shared, work / "data" / "multi30k")
            runs = multi30k_runs(work, args.minutes * 60)
            setting = f"{args.minutes:g} min of training from launch each"
        print(f"peers: {task} data: {json.dumps(made)}", file=sys.stderr)
        records: list[dict] = []
        chosen = [run for run in runs if run.system in args.systems]
        for round_ in range(1, args.train_rounds + 1):
            order = chosen if round_ % 2 else chosen[::-1]  # every other round reversed
            for run in order:
                record = execute(run, task, logs, round_ if args.train_rounds > 1 else None)
                records.append(record)
                report(record)
        setting += f", one after another; {os.cpu_count()} CPUs, torch's default threads"
        if args.train_rounds > 1:
            setting += f"; {args.train_rounds} rounds, the order reversed in every other one"
        print_tables(task, setting, records)
        failed += [r for r in records if "error" in r]
    print(f"\nlogs: {logs}")
    if failed:
        sys.exit(f"peers: {len(failed)} run(s) failed: " + "; ".join(r["error"] for r in failed))


if __name__ == "__main__":
    main()
