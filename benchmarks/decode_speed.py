"""Decoding speed on Multi30k test2016: greedy and beam 5, float32 and bf16, with BLEU beside.

The issue's target setting: 1,000 sentences, batch 64, at most 100 tokens, GNMT length penalty
alpha = 1. The model is loaded once; each setting's time is the ``translate`` call alone.

    .venv/bin/python benchmarks/decode_speed.py RUN_DIR
    .venv/bin/python benchmarks/decode_speed.py RUN_DIR --compare OLD_CHECKOUT --repeats 3

With ``--compare DIR`` (a directory holding an older ``jumok`` package, e.g. made by
``git archive COMMIT jumok | tar -x -C DIR``) the script runs itself in child processes,
alternating the old and the current code, and prints each setting's median time and the ratio
old / new: the machine is shared and noisy, so both sides are measured in the same run,
interleaved. ``--save DIR`` writes each setting's token ids and scores, so two versions can be
checked for identical outputs (``--check DIR``).

Every result is also printed as one JSON line (``{"search": ..., "seconds": ..., "bleu": ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"
SETTINGS = [(beam, precision) for beam in (1, 5) for precision in ("fp32", "bf16")]


def measure(run_dir: str, settings, save: Path | None) -> list[dict]:
    """Time every setting once in this process (the model is loaded once)."""
    import sacrebleu
    import torch

    import jumok

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    sources = (DATA / "test2016.en").read_text(encoding="utf-8").splitlines()
    refs = (DATA / "test2016.de").read_text(encoding="utf-8").splitlines()
    translator = jumok.load(run_dir)
    translator.translate(sources[:64], beam=1, batch_size=64, max_length=100)  # warm up
    results = []
    for beam, precision in settings:
        start, start_cpu = time.perf_counter(), time.process_time()
        arithmetic = (
            {"quantize": "int8", "precision": "fp32"}
            if precision == "int8"
            else {"precision": precision}
        )
        out = translator.translate(
            sources,
            batch_size=64,
            max_length=100,
            beam=beam,
            length_penalty="gnmt",
            alpha=1.0,
            **arithmetic,
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        bleu = sacrebleu.corpus_bleu([t.text for t in out], [refs]).score
        search = "greedy" if beam == 1 else f"beam{beam}"
        results.append(
            {
                "search": search,
                "precision": precision,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "bleu": round(bleu, 2),
            }
        )
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            rows = [{"tokens": t.tokens, "score": t.score} for t in out]
            (save / f"{search}_{precision}.json").write_text(json.dumps(rows), encoding="utf-8")
    return results


def compare(args) -> None:
    """Alternate old and new code in child processes; print medians and ratios."""
    runs: dict[tuple[str, str, str], list[dict]] = {}
    sides = {"old": str(Path(args.compare).resolve()), "new": str(ROOT)}
    for repeat in range(args.repeats):
        for side, path in sides.items():
            env = dict(os.environ, PYTHONPATH=path)
            command = [sys.executable, __file__, args.run_dir, "--only", ",".join(args.only)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            for line in done.stdout.splitlines():
                if line.startswith("{"):
                    r = json.loads(line)
                    runs.setdefault((side, r["search"], r["precision"]), []).append(r)
                    print(f"repeat {repeat} {side}: {line}", flush=True)
    print(
        "\n| search | precision | BLEU old | BLEU new | old s | new s | old / new | CPU old / new |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for search, precision in sorted({(k[1], k[2]) for k in runs}, reverse=True):
        old, new = runs[("old", search, precision)], runs[("new", search, precision)]
        wall = [statistics.median(r["seconds"] for r in x) for x in (old, new)]
        cpu = [statistics.median(r["cpu_seconds"] for r in x) for x in (old, new)]
        print(
            f"| {search} | {precision} | {old[0]['bleu']} | {new[0]['bleu']} | {wall[0]:.2f} | "
            f"{wall[1]:.2f} | {wall[0] / wall[1]:.2f} | {cpu[0] / cpu[1]:.2f} |"
        )
        summary = {"search": search, "precision": precision, "old_s": wall[0], "new_s": wall[1]}
        print(json.dumps(summary | {"ratio": wall[0] / wall[1], "cpu_ratio": cpu[0] / cpu[1]}))


def check(saved: Path, reference: Path) -> None:
    """Compare saved outputs with a reference folder: identical tokens, scores within 1e-4."""
    for ref_file in sorted(reference.glob("*.json")):
        mine = json.loads((saved / ref_file.name).read_text(encoding="utf-8"))
        theirs = json.loads(ref_file.read_text(encoding="utf-8"))
        differ = sum(a["tokens"] != b["tokens"] for a, b in zip(mine, theirs, strict=True))
        drift = max(abs(a["score"] - b["score"]) for a, b in zip(mine, theirs, strict=True))
        print(
            f"{ref_file.stem}: {differ} of {len(theirs)} outputs differ; max score drift {drift:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--compare", help="directory holding an older jumok package")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=[f"{b}:{p}" for b, p in SETTINGS],
        help="settings as BEAM:PRECISION,... where PRECISION is fp32, bf16 or int8 "
        "(default: 1:fp32,1:bf16,5:fp32,5:bf16)",
    )
    parser.add_argument("--save", type=Path, help="write each setting's outputs here")
    parser.add_argument("--check", type=Path, help="compare --save's outputs with this folder")
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    settings = [(int(b), p) for b, p in (s.split(":") for s in args.only)]
    for r in measure(args.run_dir, settings, args.save):
        print(json.dumps(r), flush=True)
    if args.save and args.check:
        check(args.save, args.check)


if __name__ == "__main__":
    main()
