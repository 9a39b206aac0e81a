"""Training throughput and peak memory on Multi30k in the peers' setting.

Each setting is one ``jumok train examples/multi30k/config.yaml`` process stopped after
``--steps`` updates; its throughput is the ``train_tokens_per_second`` jumok logs (target
tokens, padding excluded, over the updates only: tokenizer training, data loading and the
validation at the end are not in it), and its peak memory is the process's maximum resident set.
Settings are interleaved over ``--rounds`` rounds (the machine is shared and noisy) and every
figure is given as a ratio to the first setting, measured in the same run:

- ``fp32, no buckets``: float32, batches of random lengths (``train.bucketing: false``);
- ``fp32``: float32 with jumok's bucketing (target length first, then source length);
- ``bf16``: the recipe (bfloat16 autocast, float32 master weights).

    .venv/bin/python benchmarks/train_speed.py --steps 60 --rounds 2 --json results.jsonl

``--peers-setting`` trains in the peers' exact Multi30k setting (PEERS.md of the shared folder) instead of the recipe's (one shared
8k vocabulary, no label smoothing, a constant rate), as ``make bench-peers`` does. With
``--compare DIR`` (a directory holding an older ``jumok`` package, e.g. made by
``git archive COMMIT jumok | tar -x -C DIR``) every setting also runs on that code, alternated
with the current code in each round, and the table gives new / old for each setting:

    .venv/bin/python benchmarks/train_speed.py --settings bf16 --peers-setting \
        --compare /tmp/old --steps 200 --rounds 2

Needs ``../shared/data/multi30k`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "multi30k" / "config.yaml"
DATA = ROOT.parent / "shared" / "data" / "multi30k"

SETTINGS = {
    "fp32, no buckets": ["train.precision=fp32", "train.bucketing=false"],
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
}

# The peers' exact Multi30k setting (PEERS.md of the shared folder; benchmarks/peers/run.py trains jumok in it too).
PEERS_SETTING = [
    "data.shared_vocab=true",
    "train.label_smoothing=0.0",
    "train.schedule.kind=constant",
]

# Runs a command and prints its peak resident set (KiB) on the last line: a child of its own,
# so that RUSAGE_CHILDREN holds that command alone.
_PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run_setting(
    name: str, steps: int, work: Path, peers: bool = False, code: Path | None = None
) -> dict:
    """One training process; ``code``: a directory holding the ``jumok`` to run (default: this
    checkout's)."""
    run_dir = work / f"{name.replace(' ', '_').replace(',', '')}-{len(list(work.iterdir()))}"
    sets = [*SETTINGS[name], f"train.max_steps={steps}", "train.max_seconds=null"]
    if peers:
        sets += PEERS_SETTING
    command = [
        sys.executable,
        "-m",
        "jumok",
        "train",
        str(CONFIG),
        "--run-dir",
        str(run_dir),
        "--no-progress",
        *(x for s in sets for x in ("--set", s)),
    ]
    env, cwd = None, None
    if code is not None:  # python -m finds the package in the working directory first
        env, cwd = dict(os.environ, PYTHONPATH=str(code)), code
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=cwd,
    )
    peak_kib = int(done.stdout.split()[-1])
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {
        "benchmark": "train_speed",
        "task": "multi30k-taskB",
        "setting": name,
        "steps": record["step"],
        "target_tokens_per_second": record["train_tokens_per_second"],
        "train_seconds": record["epoch_seconds"],
        "peak_rss_mib": peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="updates per setting and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    parser.add_argument(
        "--peers-setting",
        action="store_true",
        help="the peers' exact Multi30k setting (shared vocab...)",
    )
    parser.add_argument("--compare", type=Path, help="directory holding an older jumok package")
    args = parser.parse_args()
    if not (DATA / "train.en").exists():
        sys.exit(f"train_speed: {DATA} is missing (the Multi30k data of ../shared)")
    if args.compare and not (args.compare / "jumok" / "__init__.py").exists():
        sys.exit(f"train_speed: {args.compare} holds no jumok package")
    codes = {"": None} if args.compare is None else {"": None, " (old)": args.compare.resolve()}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="jumok-train-speed-") as tmp:
        for round_ in range(args.rounds):
            order = list(codes.items()) if round_ % 2 == 0 else list(codes.items())[::-1]
            for name in args.settings:
                for label, code in order:
                    result = run_setting(name, args.steps, Path(tmp), args.peers_setting, code)
                    result["setting"] = name + label
                    result["peers_setting"] = args.peers_setting
                    result["round"] = round_
                    results.setdefault(name + label, []).append(result)
                    print(json.dumps(result), flush=True)
                    if args.json:
                        with args.json.open("a", encoding="utf-8") as out:
                            out.write(json.dumps(result) + "\n")
    base = statistics.median(r["target_tokens_per_second"] for r in results[args.settings[0]])
    print(f"\n{os.cpu_count()} CPUs, torch threads as jumok sets them; median of {args.rounds}\n")
    print("| setting | target tok/s | ratio | new / old | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, runs in sorted(results.items()):
        speed = statistics.median(r["target_tokens_per_second"] for r in runs)
        peak = max(r["peak_rss_mib"] for r in runs)
        old = results.get(name + " (old)")
        versus = ""
        if old:
            versus = f"{speed / statistics.median(r['target_tokens_per_second'] for r in old):.2f}"
        print(f"| {name} | {speed:,.0f} | {speed / base:.2f} | {versus} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
