"""int8 dynamic quantization vs float32 (and bf16) decoding on Multi30k test2016: BLEU and time.

The issue's setting: 1,000 sentences, batch 64, at most 100 tokens, GNMT length penalty
alpha = 1, greedy and beam 5. Each variant gets its own ``jumok.load`` (loaded once), is warmed
up (which makes its int8 or bf16 copy; the int8 quantization itself is timed apart), and then
every (search, variant) pair is timed ``--rounds`` times, interleaved: within a round the
variants take turns, in a rotated order, so a change in the machine's load hits all of them
alike. Each time is the ``translate`` call alone. The table gives the median time, the ratio
float32 / variant (above 1 = faster than float32) and BLEU (sacrebleu, detokenized) measured in
this run, and how many of the 1,000 outputs differ from float32.

    .venv/bin/python benchmarks/quantize.py /work/runs/m30k-bf16 --rounds 3
    BENCH_THREADS=1 .venv/bin/python benchmarks/quantize.py RUN --json results.jsonl

Every timed run is also printed as one JSON line (``{"search": ..., "variant": ...,
"seconds": ..., "bleu": ...}``), and the summary rows too (``"kind": "summary"``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"
# variant -> decoding options
VARIANTS = {
    "fp32": {"precision": "fp32", "quantize": "none"},
    "int8": {"precision": "fp32", "quantize": "int8"},
    "bf16": {"precision": "bf16", "quantize": "none"},
    # int8 with one scale per Linear weight matrix instead of one per row (not offered by
    # decode.quantize; for comparison only)
    "int8-tensor": {"precision": "fp32", "quantize": "int8"},
}
SEARCHES = {"greedy": 1, "beam5": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="fp32,int8,bf16",
        help="comma-separated among fp32, int8, bf16, int8-tensor; the first is the baseline",
    )
    parser.add_argument("--searches", default="greedy,beam5")
    parser.add_argument("--src", type=Path, default=DATA / "test2016.en")
    parser.add_argument("--ref", type=Path, default=DATA / "test2016.de")
    parser.add_argument("--engine", help="torch.backends.quantized.engine (default: torch's)")
    parser.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()

    import sacrebleu
    import torch

    import jumok
    from jumok.fast.quantize import quantize_int8, quantized_modules

    threads = int(os.environ.get("BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    if args.engine:
        torch.backends.quantized.engine = args.engine
    variants = args.variants.split(",")
    searches = args.searches.split(",")
    sources = args.src.read_text(encoding="utf-8").splitlines()
    refs = args.ref.read_text(encoding="utf-8").splitlines()
    sink = args.json.open("a", encoding="utf-8") if args.json else None

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if sink is not None:
            sink.write(line + "\n")
            sink.flush()

    common = {"batch_size": 64, "max_length": 100, "length_penalty": "gnmt", "alpha": 1.0}
    machine = {
        "threads": threads,
        "torch": torch.__version__,
        "engine": torch.backends.quantized.engine,
        "cpu": platform.processor() or platform.machine(),
    }
    emit({"kind": "setup", **machine, "sentences": len(sources), **common})

    translators = {}
    for variant in variants:
        translators[variant] = jumok.load(args.run_dir)
        if variant == "int8":  # the one-off cost of quantizing, apart from decoding
            start = time.perf_counter()
            q = quantize_int8(translators[variant].model)
            emit(
                {
                    "kind": "quantize",
                    "seconds": time.perf_counter() - start,
                    "modules": quantized_modules(q),
                }
            )
        # warm-up (also makes the int8 / bf16 copy the timed calls reuse)
        if variant == "int8-tensor":
            import jumok.fast.quantize

            usual = jumok.fast.quantize.quantize_int8
            jumok.fast.quantize.quantize_int8 = functools.partial(usual, per_channel=False)
            try:
                translators[variant].translate(sources[:64], beam=1, **common, **VARIANTS[variant])
            finally:
                jumok.fast.quantize.quantize_int8 = usual
        else:
            translators[variant].translate(sources[:64], beam=1, **common, **VARIANTS[variant])

    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    bleu: dict[tuple[str, str], float] = {}
    outputs: dict[tuple[str, str], list[str]] = {}
    for round_ in range(args.rounds):
        for search in searches:
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                start, start_cpu = time.perf_counter(), time.process_time()
                out = translators[variant].translate(
                    sources, beam=SEARCHES[search], **common, **VARIANTS[variant]
                )
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
                texts = [t.text for t in out]
                score = round(sacrebleu.corpus_bleu(texts, [refs]).score, 2)
                key = (search, variant)
                times.setdefault(key, []).append(seconds)
                cpu.setdefault(key, []).append(cpu_seconds)
                if key in outputs and outputs[key] != texts:
                    raise SystemExit(f"{search} {variant}: outputs changed between rounds")
                outputs[key], bleu[key] = texts, score
                emit(
                    {
                        "kind": "run",
                        "round": round_,
                        "search": search,
                        "variant": variant,
                        "seconds": round(seconds, 3),
                        "cpu_seconds": round(cpu_seconds, 3),
                        "bleu": score,
                    }
                )

    base = variants[0]
    print(
        f"\n{len(sources)} sentences, batch 64, max length 100, GNMT alpha 1, {threads} "
        f"thread(s), engine {machine['engine']}, medians of {args.rounds} interleaved rounds\n"
    )
    print(
        f"| search | variant | BLEU | BLEU - {base} | outputs differing from {base} | seconds | "
        f"{base} / variant | CPU {base} / variant |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summaries = []
    for search in searches:
        base_s = statistics.median(times[(search, base)])
        base_cpu = statistics.median(cpu[(search, base)])
        for variant in variants:
            key = (search, variant)
            seconds, cpu_seconds = statistics.median(times[key]), statistics.median(cpu[key])
            differ = sum(a != b for a, b in zip(outputs[key], outputs[(search, base)], strict=True))
            delta = bleu[key] - bleu[(search, base)]
            print(
                f"| {search} | {variant} | {bleu[key]:.2f} | {delta:+.2f} | {differ} | "
                f"{seconds:.2f} | {base_s / seconds:.2f} | {base_cpu / cpu_seconds:.2f} |"
            )
            summaries.append(
                {
                    "kind": "summary",
                    "search": search,
                    "variant": variant,
                    "bleu": bleu[key],
                    "bleu_delta": round(delta, 2),
                    "differ": differ,
                    "seconds": round(seconds, 3),
                    "speedup": round(base_s / seconds, 3),
                    "cpu_speedup": round(base_cpu / cpu_seconds, 3),
                    **machine,
                }
            )
    print()
    for record in summaries:
        emit(record)
    if sink is not None:
        sink.close()


if __name__ == "__main__":
    main()
