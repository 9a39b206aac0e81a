"""``jumok demo``: train the lecture's model on generated dates and show what it learned.

Leaves in the output directory::

    run/                  the run directory (usable by ``jumok translate``)
    attention.png         attention maps of a handful of test items, side by side
    attention-N.png       the same maps one by one
    learning_curve.png    loss and exact match per epoch
    report.md             what was trained and the results
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jumok.config import Config, apply_overrides, parse_yaml, validate
from jumok.decoding.translator import Translation, load
from jumok.training.metrics import exact_match
from jumok.training.rundir import refuse_nonempty_dir
from jumok.training.train import EpochRecord, TrainResult, train

# Inputs in every format of the book's date.txt, shown after training.
SHOWCASE = [
    "september 27, 1994",
    "Sep 27, 1994",
    "TUESDAY, SEPTEMBER 27, 1994",
    "9/27/94",
    "6/3/73",
]


@dataclass
class HeldOutScore:
    """How the trained model did on the held-out test items."""

    exact_match: float  # the share of items answered exactly, in [0, 1]
    items: int
    errors: list[tuple[str, str, str]]  # (input, expected, output) of each item it got wrong


def demo_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The demo's config: ``examples/date.yaml``, shipped inside the package."""
    text = resources.files("jumok").joinpath("resources/date.yaml").read_text(encoding="utf-8")
    return validate(
        apply_overrides(parse_yaml(text, "examples/date.yaml"), overrides),
        "examples/date.yaml",
        overrides,
    )


def default_out_dir() -> Path:
    return Path("demo-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_demo(
    out: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    progress: bool = True,
    n_maps: int = 6,
) -> Path:
    """Train, evaluate, draw and report; returns the output directory."""
    started = time.perf_counter()
    out = out or default_out_dir()
    refuse_nonempty_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(overrides)
    log(f"jumok demo: training the lecture's attention model on generated dates -> {out}/")
    result = train(cfg, out / "run", log=log, progress=progress)
    translator = load(out / "run")

    log("\nwhat the model answers (inputs in the book's formats, and held-out test items):")
    test = result.test_pairs
    showcase = translator.translate(SHOWCASE)
    samples = test[:8]
    sample_out = translator.translate([s for s, _ in samples])
    for item in showcase:
        log(f"  {item.source:>30}  ->  {item.text}")
    for (source, target), item in zip(samples, sample_out, strict=True):
        mark = "ok" if item.text == target else f"WRONG (expected {target})"
        log(f"  {source:>30}  ->  {item.text}   {mark}")

    test_start = time.perf_counter()
    test_out = translator.translate([s for s, _ in test])
    test_seconds = time.perf_counter() - test_start
    test_em = exact_match([t.text for t in test_out], [t for _, t in test])
    errors = [(s, t, o.text) for (s, t), o in zip(test, test_out, strict=True) if o.text != t]
    log(
        f"\ntest exact match: {100 * test_em:.2f}% of {len(test)} held-out items "
        f"(greedy decoding took {test_seconds:.1f} s)"
    )

    from jumok import plot  # matplotlib only when pictures are drawn

    picked = showcase[:3] + sample_out[: max(0, n_maps - 3)]
    items = [{**t.to_dict(), "title": f"{t.source}  →  {t.text}"} for t in picked]
    plot.attention_grid(out / "attention.png", items, columns=3)
    for i, t in enumerate(picked, start=1):
        plot.attention_heatmap(
            out / f"attention-{i}.png",
            t.attention,
            t.source_tokens,
            t.tokens,
            f"{t.source} → {t.text}",
        )
    history = [vars(r) for r in result.history]
    plot.learning_curve(out / "learning_curve.png", history, "the lecture's model on the date task")
    total = time.perf_counter() - started
    held_out = HeldOutScore(exact_match=test_em, items=len(test), errors=errors)
    write_report(out / "report.md", cfg, result, held_out, showcase, total)
    log(f"\npictures and report in {out}/ (attention.png, learning_curve.png, report.md)")
    log(f"try it:  jumok translate {out / 'run'} --input - <<< 'april 1, 2001'")
    log(f"demo finished in {total:.0f} s")
    return out


def write_report(
    path: Path,
    cfg: Config,
    result: TrainResult,
    test: HeldOutScore,
    showcase: list[Translation],
    seconds: float,
) -> None:
    """report.md: what was trained, the results per epoch and on test, examples, pictures."""
    m, t, g = cfg.model, cfg.train, cfg.data.generate
    lines = [
        "# jumok demo: the lecture's attention seq2seq on the date task",
        "",
        "## What was trained",
        "",
        f"- Data: {g.size if g else '?'} distinct generated date pairs in the formats of *Deep Learning "
        f"from Scratch 2* ch. 8 (seed {g.seed if g else '?'}); {test.items} held out for test, "
        f"{g.dev_size if g else '?'} for validation, none of them in train.",
        f"- Model: embedding {m.encoder.embedding_size} + LSTM {m.encoder.hidden_size} encoder keeping "
        f"every state `hs`; LSTM {m.decoder.hidden_size} decoder started from the encoder's last state; "
        f"{m.attention} attention at every output step; output layer over [context; h].",
        f"- Source reversed: {cfg.data.reverse_source}. Training: {t.epochs} epochs, batch {t.batch_size}, "
        f"Adam lr {t.lr}, gradient-norm clip {t.clip_grad_norm}, seed {t.seed}, precision {t.precision}.",
        "",
        "## Results",
        "",
        "| epoch | train loss | dev loss | dev exact match | seconds | target tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.history:
        lines.append(_row(r))
    lines += [
        "",
        f"**Test exact match: {100 * test.exact_match:.2f}%** of {test.items} held-out items "
        "(greedy decoding).",
        "",
        f"Whole demo: {seconds:.0f} s.",
        "",
        "## Examples",
        "",
        "| input | output |",
        "|---|---|",
        *[f"| `{s.source}` | `{s.text}` |" for s in showcase],
        "",
    ]
    if test.errors:
        lines += [
            "Some test items the model got wrong:",
            "",
            "| input | expected | output |",
            "|---|---|---|",
        ]
        lines += [f"| `{s}` | `{t}` | `{o}` |" for s, t, o in test.errors[:10]]
        lines.append("")
    lines += [
        "## Pictures",
        "",
        "Attention: each row is an output character, each column a source character (in the order "
        "it was written, even though the model read it reversed); bright cells are where the "
        "decoder looked when it wrote that character.",
        "",
        "![attention](attention.png)",
        "",
        "![learning curve](learning_curve.png)",
        "",
        "Translate more with `jumok translate run --input FILE`.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _row(r: EpochRecord) -> str:
    return (
        f"| {r.epoch} | {r.train_loss:.4f} | {r.dev_loss:.4f} | {100 * r.dev_exact_match:.2f}% | "
        f"{r.epoch_seconds:.1f} | {r.train_tokens_per_second:,.0f} |"
    )
