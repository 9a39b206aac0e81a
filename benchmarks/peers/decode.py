"""Decoding speed of jumok beside OpenNMT-py on Multi30k test2016, in one run.

``run.py --task decode`` runs this. It decodes test2016 (1,000 sentences) with each toolkit's
Multi30k model from the last ``run.py --task multi30k`` (the newest checkpoint in
``WORK/runs/multi30k-onmt``, and ``WORK/runs/multi30k-jumok-bf16`` or ``--jumok-run``) in the
setting of ../shared/PEERS.md §3: batches of 64 sentences, at most 100 tokens, greedy and beam 5
with the GNMT length penalty (alpha 1).

Each decode is a process of its own, timed by its own report, model load excluded: OpenNMT-py's
``-report_time`` ("Total translation time") and ``jumok translate --report-time`` (reading and
tokenizing the input, search, detokenizing). Process wall time and peak resident memory come
from ``peak.py``. The systems alternate within each round, so every ratio compares processes
run minutes apart on the same machine; the table gives medians over the rounds and the BLEU
(sacrebleu, 13a) of each setting. JoeyNMT is left out: its decoding is 5-10x slower than
OpenNMT-py's (PEERS.md) and would take most of the run.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import envs
import peak

SEARCHES = {"greedy": 1, "beam 5": 5}
# jumok's arithmetic variants and the flags that select them
JUMOK_VARIANTS = {
    "fp32": ["--precision", "fp32", "--quantize", "none"],
    "bf16": ["--precision", "bf16", "--quantize", "none"],
    "int8": ["--precision", "fp32", "--quantize", "int8"],
}
ONMT_TIME = re.compile(r"Total translation time \(s\): ([0-9.]+)")
JUMOK_TIME = re.compile(r"translation time: ([0-9.]+) s")


@dataclass(frozen=True)
class Decoder:
    """One system's decoding command for a search."""

    label: str
    command: list[str]  # with OUT and BEAM still to fill in
    pattern: re.Pattern
    env: dict[str, str]


def newest_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("model_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not found:
        sys.exit(
            f"peers: no OpenNMT-py checkpoint in {run_dir}; train the models first: "
            "run.py --task multi30k --minutes 20 --systems onmt jumok-bf16"
        )
    return found[-1]


def decoders(work: Path, jumok_run: Path | None, variants: list[str]) -> list[Decoder]:
    data, runs = work / "data" / "multi30k", work / "runs"
    spm = str(data / "spm.model")
    onmt = Decoder(
        "OpenNMT-py 3.5.1",
        [
            str(envs.ONMT.python.parent / "onmt_translate"),
            *("-model", str(newest_checkpoint(runs / "multi30k-onmt"))),
            *("-src", str(data / "test2016.en"), "-output", "OUT"),
            *("-batch_size", "64", "-max_length", "100", "-beam_size", "BEAM"),
            *("-length_penalty", "wu", "-alpha", "1.0", "-report_time"),
            *("-transforms", "sentencepiece"),
            *("-src_subword_model", spm, "-tgt_subword_model", spm),
        ],
        ONMT_TIME,
        {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},  # PEERS.md §1
    )
    jumok_run = jumok_run or runs / "multi30k-jumok-bf16"
    if not (jumok_run / "config.yaml").is_file():
        sys.exit(f"peers: {jumok_run} is not a jumok run; train it first or pass --jumok-run")
    jumok = [
        Decoder(
            f"jumok {variant}",
            [
                *(sys.executable, "-m", "jumok", "translate", str(jumok_run)),
                *("--input", str(data / "test2016.en"), "--output", "OUT"),
                *("--batch-size", "64", "--max-length", "100", "--beam", "BEAM"),
                *("--length-penalty", "gnmt", "--alpha", "1.0", "--report-time"),
                *JUMOK_VARIANTS[variant],
            ],
            JUMOK_TIME,
            {},
        )
        for variant in variants
    ]
    return [onmt, *jumok]


def bleu(hypotheses: Path, references: Path) -> float:
    """jumok's corpus BLEU (sacrebleu, 13a) of an output file against the references."""
    from jumok.training.metrics import bleu as corpus_bleu

    hyps = hypotheses.read_text(encoding="utf-8").splitlines()
    refs = references.read_text(encoding="utf-8").splitlines()
    return round(corpus_bleu(hyps, refs), 2)


def decode_once(decoder: Decoder, search: str, work: Path, logs: Path, round_: int) -> dict:
    name = f"decode-{decoder.label.replace(' ', '_')}-{search.replace(' ', '')}-{round_}"
    out, log = logs / f"{name}.txt", logs / f"{name}.log"
    beam = str(SEARCHES[search])
    command = [
        out.as_posix() if a == "OUT" else beam if a == "BEAM" else a for a in decoder.command
    ]
    print(
        f"peers: decode {decoder.label} {search}, round {round_} ...", file=sys.stderr, flush=True
    )
    measured = peak.measure(command, log, decoder.env)
    record = {
        "benchmark": "peers",
        "task": "decode",
        "system": decoder.label,
        "search": search,
        "round": round_,
        "generation_seconds": None,
        "bleu": None,
        **measured,
        "log": str(log),
    }
    found = decoder.pattern.findall(log.read_text(encoding="utf-8", errors="replace"))
    if measured["returncode"] != 0 or not found:
        record["error"] = f"exit status {measured['returncode']}, no time reported; see {log}"
        return record
    record["generation_seconds"] = float(found[-1])
    record["bleu"] = bleu(out, work / "data" / "multi30k" / "test2016.de")
    return record


def run_decode(
    work: Path,
    logs: Path,
    rounds: int,
    jumok_run: Path | None,
    variants: list[str],
    report: Callable[[dict], None],
) -> list[dict]:
    """All decodes, the systems alternating within each round; ``report`` gets each JSON
    record as it comes. Prints the table of medians at the end and returns the records."""
    chosen = decoders(work, jumok_run, variants)
    records = []
    for round_ in range(1, rounds + 1):
        for search in SEARCHES:
            for decoder in chosen:
                records.append(decode_once(decoder, search, work, logs, round_))
                report(records[-1])
    print_table(records, rounds, chosen[0].label)
    return records


def print_table(records: list[dict], rounds: int, baseline: str) -> None:
    ok = [r for r in records if "error" not in r]
    print(
        f"\n### decode: Multi30k test2016, batch 64, max 100 tokens; medians of {rounds} round(s)\n"
    )
    print(
        f"| search | system | generation s | process wall s | peak RSS MiB | BLEU | / {baseline} |"
    )
    print("|---|---|---|---|---|---|---|")
    for search in SEARCHES:
        rows = [r for r in ok if r["search"] == search]
        systems = list(dict.fromkeys(r["system"] for r in rows))
        base = _median(rows, baseline, "generation_seconds") if baseline in systems else None
        for system in systems:
            seconds = _median(rows, system, "generation_seconds")
            ratio = f"{seconds / base:.2f}" if base else "-"
            print(
                f"| {search} | {system} | {seconds:.2f} "
                f"| {_median(rows, system, 'wall_seconds'):.2f} "
                f"| {_median(rows, system, 'peak_rss_mib'):,.0f} "
                f"| {_median(rows, system, 'bleu'):.2f} | {ratio} |"
            )


def _median(rows: list[dict], system: str, key: str) -> float:
    return statistics.median(r[key] for r in rows if r["system"] == system)
