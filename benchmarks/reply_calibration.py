"""Issue 32 on the date task: reply-set cost and accuracy, and calibrated abstain on unseen data.

Dates are generated with ``jumok.data.synthetic`` (the run's own training dates, seed 0 and
``--train-size``, are left out): 2,000 from seed 1 to calibrate on and 2,000 from seed 2 to
check on. For each target precision the run is calibrated on the first split (``jumok
calibrate``, exact match as good) and the second split is decoded with ``--abstain-below auto``;
the precision among the outputs kept there should be within 3 points of the target. Then
``Translator.reply`` with 200 inputs x 300 candidates (the 200 references and 100 others) is
timed against ``Translator.score`` on the same 60,000 pairs. Writes calibration.json and
calibration.png into RUN.

    jumok train examples/date.yaml --run-dir /tmp/date3 --set data.generate.size=12000 \
        --set model.encoder.hidden_size=64 --set model.decoder.hidden_size=64 --set train.epochs=3
    .venv/bin/python benchmarks/reply_calibration.py /tmp/date3 --train-size 12000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jumok
from jumok.app.cli import main
from jumok.data.synthetic import generate


def splits(folder: Path, train_size: int) -> dict[str, list[tuple[str, str]]]:
    seen = {s for s, _ in generate("date", train_size, 0)}
    found = {}
    for seed, name in ((1, "calib"), (2, "check")):
        pairs = [p for p in generate("date", 3000, seed) if p[0] not in seen][:2000]
        seen |= {s for s, _ in pairs}
        for side, column in (("src", 0), ("ref", 1)):
            text = "".join(p[column] + "\n" for p in pairs)
            (folder / f"{name}.{side}").write_text(text, encoding="utf-8")
        found[name] = pairs
    return found


def calibration(run: str, folder: Path, targets: list[float], check) -> None:
    for target in targets:
        argv = ["calibrate", run, "--target-precision", str(target)]
        main([*argv, "--src", str(folder / "calib.src"), "--ref", str(folder / "calib.ref")])
        results = jumok.load(run).translate(
            [s for s, _ in check], abstain_below=jumok.app.calibrate.calibrated_threshold(run)
        )
        kept = [
            r.text == ref for r, (_, ref) in zip(results, check, strict=True) if not r.abstained
        ]
        print(
            f"  unseen split: coverage {len(kept) / len(check):.1%}, precision "
            f"{sum(kept) / max(1, len(kept)):.1%} (target {target:.0%})\n"
        )


def replies(run: str, check, calib) -> None:
    translator = jumok.load(run)
    sources = [s for s, _ in check[:200]]
    candidates = [t for _, t in check[:200]] + [t for _, t in calib[:100]]
    started = time.perf_counter()
    found = translator.reply(sources, candidates, n_best=3)
    reply_s = time.perf_counter() - started
    started = time.perf_counter()
    pairs = [(s, c) for s in sources for c in candidates]
    scores = translator.score([s for s, _ in pairs], [c for _, c in pairs], batch_size=512)
    score_s = time.perf_counter() - started
    C = len(candidates)
    same = sum(
        candidates[max(range(C), key=lambda c: scores[i * C + c])] == f.text
        for i, f in enumerate(found)
    )
    right = sum(f.text == t for f, (_, t) in zip(found, check, strict=False))
    free = sum(r.text == t for r, (_, t) in zip(translator.translate(sources), check, strict=False))
    print(f"reply sets: {len(sources)} inputs x {C} candidates: reply {reply_s:.2f} s, "
          f"score pair by pair {score_s:.2f} s; same best {same}/200; best reply is the "
          f"reference {right}/200 (free greedy decode {free}/200)")  # fmt: skip


def run_all() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--train-size", type=int, default=12000, help="the run's data.generate.size")
    p.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    args = p.parse_args()
    import jumok.app.calibrate  # noqa: F401 - calibrated_threshold, read above

    with tempfile.TemporaryDirectory() as tmp:
        data = splits(Path(tmp), args.train_size)
        calibration(args.run, Path(tmp), args.targets, data["check"])
        replies(args.run, data["check"], data["calib"])


if __name__ == "__main__":
    run_all()
