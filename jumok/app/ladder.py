"""``jumok ladder``: the lecture's argument as an experiment, one rung at a time.

A plain encoder-decoder squeezes the source into one vector; reversing the input, letting the
decoder peek at that vector every step (Peeky), and finally attention over every encoder state
each help. Every rung trains on the same generated data with the same seed and the book's
settings, and the results land in one table, one plot of exact-match curves and one picture of
the attention rungs side by side.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from jumok.checkpoint import atomic_write_text
from jumok.config import Config, apply_overrides, validate
from jumok.data.readers import read_dlfs2
from jumok.data.splits import read_pairs, write_pairs
from jumok.data.synthetic import split
from jumok.decoding.diagnostics import summarize
from jumok.decoding.translator import load
from jumok.errors import RunDirError
from jumok.training.metrics import exact_match
from jumok.training.rundir import refuse_nonempty_dir
from jumok.training.train import train

# (name, overrides) in the order of the book's argument.
RUNGS: list[tuple[str, dict[str, object]]] = [
    ("plain", {"model.attention": "none", "data.reverse_source": False}),
    ("plain + reversed", {"model.attention": "none", "data.reverse_source": True}),
    ("reversed + peeky", {"model.attention": "none", "model.decoder.peeky": True}),
    ("reversed + dot attention", {"model.attention": "dot"}),
    ("reversed + general attention", {"model.attention": "general"}),
    ("reversed + additive attention", {"model.attention": "additive"}),
]

# The book's settings: addition (ch. 7) embedding 16, hidden 128, batch 128, 25 epochs;
# date (ch. 8) embedding 16, hidden 256, batch 128, 10 epochs. ``width``: the source width of
# the book's fixed-width files (addition.txt 7 characters, date.txt 29).
TASKS: dict[str, dict[str, object]] = {
    "addition": {"hidden": 128, "epochs": 25, "width": 7, "inputs": ["16+75", "52+607", "999+1"]},
    "date": {
        "hidden": 256,
        "epochs": 10,
        "width": 29,
        "inputs": ["september 27, 1994", "Sep 27, 1994", "9/27/94"],
    },
}
QUICK = {"size": 1200, "dev_size": 100, "test_size": 100, "hidden": 32}


def rung_config(
    task: str,
    overrides: dict[str, object],
    epochs: int,
    quick: bool,
    data_dir: Path | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> Config:
    """The config of one rung: the book's settings plus the rung's ``overrides``.

    Args:
        data_dir: a folder with train/dev/test.tsv to read instead of generating the task.
        extra: ``KEY=VALUE`` overrides given with ``--set``, applied to every rung last.
    """
    spec = TASKS[task]
    hidden = QUICK["hidden"] if quick else spec["hidden"]
    if data_dir is None:
        data: dict = {
            "generate": {
                "task": task,
                "size": QUICK["size"] if quick else 50_000,
                "dev_size": QUICK["dev_size"] if quick else 1_000,
                "test_size": QUICK["test_size"] if quick else 5_000,
                "seed": 0,
            }
        }
    else:
        data = {name: str(data_dir / f"{name}.tsv") for name in ("train", "dev", "test")}
    raw: dict = {
        "data": {
            **data,
            "reverse_source": True,
            "shared_vocab": True,
            "fill_source_to": spec["width"],
        },
        # The book's model exactly: its initial weights (model.init: book) and decoder start (h
        # only), and its data layout: one vocabulary for both sides and sources filled to the
        # book's fixed width, the filler read by the encoder before the reversed sentence. Without
        # the last two the book's dot-attention rung stalls (docs/ladder.md,
        # benchmarks/book_padding.py).
        "model": {
            "encoder": {"embedding_size": 16, "hidden_size": hidden},
            "decoder": {"embedding_size": 16, "hidden_size": hidden, "init": "last_h"},
            "init": "book",
        },
        "train": {
            "epochs": epochs,
            "batch_size": 128,
            "lr": 1e-3,
            "clip_grad_norm": 5.0,
            "seed": 42,
            # The book draws random batches. Length bucketing (jumok's default) makes these small
            # tasks learn worse: addition, reversed, on the book's file reached 29.6 % after 25
            # epochs with bucketing and 54.5 % (best epoch) without.
            "bucketing": False,
        },
        "decode": {"max_length": 20},
    }
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + list(extra)
    return validate(apply_overrides(raw, items), f"ladder rung ({task})", items)


# The book's NumPy code re-run on this machine kind (issue figures): final exact match (%) after
# the task's epochs, by rung. Shown beside jumok's figures in ladder.md.
BOOK: dict[str, dict[str, float]] = {
    "addition": {"plain": 9.98, "plain + reversed": 54.06, "reversed + peeky": 98.14},
    "date": {
        "plain + reversed": 0.00,
        "reversed + peeky": 100.00,
        "reversed + dot attention": 99.90,
    },
}


def run_ladder(
    task: str,
    out: Path,
    epochs: int | None = None,
    quick: bool = False,
    log: Callable[[str], None] = print,
    book_data: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict:
    """Train every rung and write ladder.json, ladder.md, ladder.png and attention.png.

    Args:
        book_data: the folder of the book's ``date.txt`` / ``addition.txt``: the rungs then train
            on the book's own file (split into 1,000 dev and 5,000 test pairs, distinct by source
            and never in train) instead of generated data.
        overrides: ``KEY=VALUE`` items applied to every rung after the rung's own settings, e.g.
            ``model.init=book``.
    """
    if task not in TASKS:
        raise RunDirError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    refuse_nonempty_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (2 if quick else int(TASKS[task]["epochs"]))
    started = time.perf_counter()
    data_dir, source = None, "generated"
    if book_data is not None:
        sizes = (QUICK["dev_size"], QUICK["test_size"]) if quick else (1_000, 5_000)
        data_dir, source = _split_book_file(
            Path(book_data) / f"{task}.txt", out / "data", sizes, log
        )
    rungs = []
    for index, (name, rung_overrides) in enumerate(RUNGS, start=1):
        cfg = rung_config(task, rung_overrides, epochs, quick, data_dir, overrides)
        log(f"\n== rung {index}/{len(RUNGS)}: {name} ==")
        run_dir = out / "runs" / f"{index}-{name.replace(' + ', '-').replace(' ', '-')}"
        result = train(cfg, run_dir, log=log, progress=False)
        rung = {
            "name": name,
            "run_dir": str(run_dir),
            "config": cfg.model_dump(mode="json"),
            "exact_match_per_epoch": [r.dev_exact_match for r in result.history],
            "best_exact_match": max(r.dev_exact_match for r in result.history),
            "final_exact_match": result.history[-1].dev_exact_match,
            "seconds_per_epoch": [r.epoch_seconds for r in result.history],
        }
        rungs.append({**rung, **score_rung(run_dir, result.test_pairs)})
    summary = {
        "task": task,
        "data": source,
        "epochs": epochs,
        "quick": quick,
        "rungs": rungs,
        "seconds": time.perf_counter() - started,
    }
    write_report(out, summary)
    log("\n" + ladder_table(summary))
    return summary


def score_rung(run_dir: Path | str, test: list[tuple[str, str]]) -> dict:
    """Decode the test pairs with a rung's best checkpoint: exact match and attention diagnostics."""
    outputs = load(run_dir).translate([s for s, _ in test])
    found = [d for d in (o.diagnostics() for o in outputs) if d is not None]
    return {
        "test_exact_match": exact_match([o.text for o in outputs], [t for _, t in test]),
        "attention_diagnostics": summarize(found) if found else None,
    }


def refresh_report(out: Path) -> dict:
    """Recompute the test figures of an existing ladder directory and rewrite its report.

    Training histories come from ``ladder.json``; each rung is decoded again from its run
    directory's best checkpoint and ``data/test.tsv``. Useful after jumok gains a new figure.
    """
    summary = json.loads((out / "ladder.json").read_text(encoding="utf-8"))
    for rung in summary["rungs"]:
        test_file = rung["config"]["data"].get("test") or Path(rung["run_dir"]) / "data/test.tsv"
        test = read_pairs(test_file)
        rung.update(score_rung(rung["run_dir"], test))
    write_report(out, summary)
    return summary


def _split_book_file(
    path: Path, out: Path, sizes: tuple[int, int], log: Callable[[str], None]
) -> tuple[Path, str]:
    """Split the book's file into out/{train,dev,test}.tsv, distinct by source, leak-free."""
    pairs, report = read_dlfs2(path)
    distinct = list({s: (s, t) for s, t in pairs}.values())
    parts = split(distinct, sizes[0], sizes[1], seed=0)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in parts.items():
        write_pairs(out / f"{name}.tsv", items)
    note = (
        f"the book's {path.name}: {report.rows} lines, {len(distinct)} distinct sources -> "
        f"{len(parts['train'])} train, {len(parts['dev'])} dev, {len(parts['test'])} test"
    )
    log(note)
    return out, note


def write_report(out: Path, summary: dict) -> None:
    """ladder.json, ladder.md, the curves (ladder.png) and the attention maps (attention.png)."""
    atomic_write_text(out / "ladder.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "ladder.md", ladder_table(summary))
    _pictures(out, summary["task"], summary["rungs"])


def ladder_table(summary: dict) -> str:
    book = {} if summary["quick"] else BOOK.get(summary["task"], {})
    lines = [
        f"# The ladder on the {summary['task']} task ({summary['epochs']} epochs"
        f"{', quick preset' if summary['quick'] else ''})",
        "",
        f"Data: {summary.get('data', 'generated')}.",
        "",
        "| rung | dev exact match per epoch (%) | best | final | test | book | s/epoch "
        "| entropy | monotonic | last-token share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rungs"]:
        curve = " ".join(f"{100 * v:.1f}" for v in r["exact_match_per_epoch"])
        median_s = statistics.median(r["seconds_per_epoch"])
        d = r.get("attention_diagnostics")
        attention = (
            f"{d['mean_entropy']:.2f} | {100 * d['monotonicity']:.1f}% | "
            f"{100 * d['token_final_share']:.1f}%"
            if d
            else "- | - | -"
        )
        lines.append(
            f"| {r['name']} | {curve} | {100 * r['best_exact_match']:.2f} | "
            f"{100 * r['final_exact_match']:.2f} | {100 * r['test_exact_match']:.2f} | "
            f"{book.get(r['name'], float('nan')):.2f} | {median_s:.1f} | {attention} |".replace(
                "| nan |", "| - |"
            )
        )
    lines += [
        "",
        "Exact match in %: dev per epoch, best and final dev, test with the best checkpoint. "
        "'book' is the book's NumPy code on the same task and epochs. s/epoch is the median "
        "training time of an epoch (validation excluded). Attention columns are over "
        "the test set: mean entropy of each output token's weights (nats), share of output "
        "tokens on a monotone alignment, share of output tokens whose weight is mostly on the "
        "last source token read (see docs/diagnostics.md).",
        "",
        f"Whole ladder: {summary['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _pictures(out: Path, task: str, rungs: list[dict]) -> None:
    from jumok import plot

    plot.curves(
        out / "ladder.png",
        {r["name"]: [100 * v for v in r["exact_match_per_epoch"]] for r in rungs},
        ylabel="dev exact match (%)",
        title=f"the ladder on the {task} task",
    )
    items = []
    for text in TASKS[task]["inputs"]:
        for r in rungs:
            if r["config"]["model"]["attention"] == "none":
                continue
            t = load(r["run_dir"]).translate([text])[0]
            items.append({**t.to_dict(), "title": f"{r['name'].split('+ ')[-1]}: {t.text}"})
    if items:
        columns = sum(1 for r in rungs if r["config"]["model"]["attention"] != "none")
        plot.attention_grid(out / "attention.png", items, columns=columns)
