"""``jumok ladder``: the lecture's argument as an experiment, one rung at a time.

A plain encoder-decoder squeezes the source into one vector; reversing the input, letting the
decoder peek at that vector every step (Peeky), and finally attention over every encoder state
each help. Every rung trains on the same generated data with the same seed and the book's
settings, and the results land in one table, one plot of exact-match curves and one picture of
the attention rungs side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from jumok.config import Config, apply_overrides, validate
from jumok.errors import RunDirError
from jumok.metrics import exact_match
from jumok.train import train
from jumok.translator import load

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
# date (ch. 8) embedding 16, hidden 256, batch 128, 10 epochs.
TASKS: dict[str, dict[str, object]] = {
    "addition": {"hidden": 128, "epochs": 25, "inputs": ["16+75", "52+607", "999+1"]},
    "date": {
        "hidden": 256,
        "epochs": 10,
        "inputs": ["september 27, 1994", "Sep 27, 1994", "9/27/94"],
    },
}
QUICK = {"size": 1200, "dev_size": 100, "test_size": 100, "hidden": 32}


def rung_config(task: str, overrides: dict[str, object], epochs: int, quick: bool) -> Config:
    spec = TASKS[task]
    hidden = QUICK["hidden"] if quick else spec["hidden"]
    raw: dict = {
        "data": {
            "generate": {
                "task": task,
                "size": QUICK["size"] if quick else 50_000,
                "dev_size": QUICK["dev_size"] if quick else 1_000,
                "test_size": QUICK["test_size"] if quick else 5_000,
                "seed": 0,
            },
            "reverse_source": True,
        },
        "model": {
            "encoder": {"embedding_size": 16, "hidden_size": hidden},
            "decoder": {"embedding_size": 16, "hidden_size": hidden},
        },
        "train": {
            "epochs": epochs,
            "batch_size": 128,
            "lr": 1e-3,
            "clip_grad_norm": 5.0,
            "seed": 42,
        },
        "decode": {"max_length": 20},
    }
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return validate(apply_overrides(raw, items), f"ladder rung ({task})", items)


def run_ladder(
    task: str,
    out: Path,
    epochs: int | None = None,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every rung and write ladder.json, ladder.md, ladder.png and attention.png."""
    if task not in TASKS:
        raise RunDirError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    if out.exists() and any(out.iterdir()):
        raise RunDirError(
            f"{out}: exists and is not empty; nothing was changed. Choose a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    epochs = epochs or (2 if quick else int(TASKS[task]["epochs"]))
    started = time.perf_counter()
    rungs = []
    for index, (name, overrides) in enumerate(RUNGS, start=1):
        cfg = rung_config(task, overrides, epochs, quick)
        log(f"\n== rung {index}/{len(RUNGS)}: {name} ==")
        run_dir = out / "runs" / f"{index}-{name.replace(' + ', '-').replace(' ', '-')}"
        result = train(cfg, run_dir, log=log, progress=False)
        translator = load(run_dir)
        test = result.test_pairs
        outputs = translator.translate([s for s, _ in test])
        rungs.append(
            {
                "name": name,
                "run_dir": str(run_dir),
                "config": cfg.model_dump(mode="json"),
                "exact_match_per_epoch": [r.dev_exact_match for r in result.history],
                "best_exact_match": max(r.dev_exact_match for r in result.history),
                "final_exact_match": result.history[-1].dev_exact_match,
                "test_exact_match": exact_match([o.text for o in outputs], [t for _, t in test]),
                "seconds_per_epoch": [r.epoch_seconds for r in result.history],
            }
        )
    summary = {
        "task": task,
        "epochs": epochs,
        "quick": quick,
        "rungs": rungs,
        "seconds": time.perf_counter() - started,
    }
    (out / "ladder.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "ladder.md").write_text(ladder_table(summary), encoding="utf-8")
    _pictures(out, task, rungs)
    log("\n" + ladder_table(summary))
    return summary


def ladder_table(summary: dict) -> str:
    lines = [
        f"# The ladder on the {summary['task']} task ({summary['epochs']} epochs"
        f"{', quick preset' if summary['quick'] else ''})",
        "",
        "| rung | dev exact match per epoch (%) | best | final | test | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rungs"]:
        curve = " ".join(f"{100 * v:.1f}" for v in r["exact_match_per_epoch"])
        mean_s = sum(r["seconds_per_epoch"]) / len(r["seconds_per_epoch"])
        lines.append(
            f"| {r['name']} | {curve} | {100 * r['best_exact_match']:.2f} | "
            f"{100 * r['final_exact_match']:.2f} | {100 * r['test_exact_match']:.2f} | {mean_s:.1f} |"
        )
    lines += ["", f"Whole ladder: {summary['seconds']:.0f} s.", ""]
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
