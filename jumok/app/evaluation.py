"""``jumok eval``: score a run on a source file against a reference file, reproducibly.

The report records everything needed to get the same number again: the sacrebleu signatures,
every decoding setting, the sha256 of the data files and checkpoints, the seed, the package
versions and the command line. Scores: BLEU, chrF and TER (sacrebleu), exact match, token
accuracy (target tokenizer), and for chat, distinct-1/2 and the share of the most frequent
output, so "the same answer to everything" is a number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shlex
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jumok.checkpoint import atomic_write_text
from jumok.data.inputs import read_lines
from jumok.decoding.translator import Reranker, load, resolve_checkpoint
from jumok.errors import DataError
from jumok.training import metrics
from jumok.training.rundir import refuse_nonempty_dir

if TYPE_CHECKING:
    from jumok.data.tokenizers import Tokenizer

PACKAGES = ("jumok", "torch", "sacrebleu", "sentencepiece", "numpy", "pydantic")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_files(
    run_dirs: Sequence[str | Path],
    src: str | Path,
    ref: str | Path,
    options: dict[str, Any] | None = None,
    which: str = "best",
    rerank: Reranker | None = None,
    device: str = "cpu",
) -> tuple[dict[str, Any], list[str]]:
    """Translate ``src`` and score it against ``ref`` (decoding on ``device``).

    Returns:
        (the report, the outputs, one per source line).

    Raises:
        DataError: a file is missing, not UTF-8, has an empty line, or the two files differ in
            length.
    """
    options = dict(options or {})
    (sources, _), (refs, _) = read_lines(src), read_lines(ref)  # strict: a test set is whole
    if len(sources) != len(refs):
        raise DataError(
            f"{src} has {len(sources)} lines but {ref} has {len(refs)}; expected one reference "
            "per source line"
        )
    translator = load([Path(r) for r in run_dirs], which=which, device=device)
    opts = translator.options(**options)
    results = translator.translate(sources, rerank=rerank, **options)
    outputs = [r.text for r in results]
    scores, signatures = score(outputs, refs, translator.tgt_tok)
    scores.update(abstained=sum(r.abstained for r in results), sentences=len(sources))
    report = {
        "scores": scores,
        "signatures": signatures,
        **provenance(run_dirs, src, ref, len(sources), opts.model_dump(mode="json"), which, rerank),
    }
    return report, outputs


def score(
    outputs: list[str], refs: list[str], tok: Tokenizer
) -> tuple[dict[str, Any], dict[str, str]]:
    """The scores of ``outputs`` against ``refs``, and the sacrebleu signatures of BLEU, chrF and
    TER. Token accuracy compares the tokens of ``tok`` (the target tokenizer)."""
    import sacrebleu

    scores: dict[str, Any] = {}
    signatures = {}
    for name, metric in (
        ("bleu", sacrebleu.BLEU()),
        ("chrf", sacrebleu.CHRF()),
        ("ter", sacrebleu.TER()),
    ):
        scores[name] = round(float(metric.corpus_score(outputs, [refs]).score), 2)
        signatures[name] = str(metric.get_signature())
    share, top = metrics.top_output_share(outputs)
    scores.update(
        exact_match=round(100 * metrics.exact_match(outputs, refs), 2),
        token_accuracy=round(
            100
            * metrics.token_accuracy(
                [tok.tokenize(o) for o in outputs], [tok.tokenize(r) for r in refs]
            ),
            2,
        ),
        distinct_1=round(metrics.distinct_n(outputs, 1), 4),
        distinct_2=round(metrics.distinct_n(outputs, 2), 4),
        top_output_share=round(share, 4),
        top_output=top,
    )
    return scores, signatures


def provenance(
    run_dirs: Sequence[str | Path],
    src: str | Path,
    ref: str | Path,
    lines: int,
    decoding: dict[str, Any],
    which: str,
    rerank: Reranker | None,
) -> dict[str, Any]:
    """What a report records to get the same scores again: the decoding settings, the data files
    (``lines`` each) and checkpoints with their sha256, the seed, the versions, the reranker and
    the command line."""
    checkpoints = [resolve_checkpoint(r, which) for r in run_dirs]
    return {
        "decoding": decoding,
        "data": {
            "src": {"path": str(src), "sha256": sha256(src), "lines": lines},
            "ref": {"path": str(ref), "sha256": sha256(ref), "lines": lines},
        },
        "checkpoints": [{"path": str(c), "sha256": sha256(c)} for c in checkpoints],
        "seed": decoding["seed"],
        "versions": {"python": platform.python_version(), **_versions()},
        "rerank": None
        if rerank is None
        else {
            "lm": None if rerank.lm is None else rerank.lm.source,
            "reverse": None if rerank.reverse is None else rerank.reverse.source,
            "lambda": rerank.weight,
        },
        "command": reproduce_command(run_dirs, src, ref, decoding, which, rerank),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def reproduce_command(
    run_dirs: Sequence[str | Path],
    src,
    ref,
    decoding: dict[str, Any],
    which: str,
    rerank: Reranker | None = None,
) -> str:
    """The ``jumok eval`` command line with every decoding setting spelled out."""
    parts = ["jumok", "eval", *map(str, run_dirs), "--src", str(src), "--ref", str(ref)]
    if which != "best":
        parts += ["--checkpoint", which]
    # Every decode.NAME has the flag --NAME-WITH-DASHES; booleans are switches. The batch size
    # changes no output, so it is left out.
    for name, value in decoding.items():
        if name == "batch_size" or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    if rerank is not None:
        if rerank.lm is not None:
            parts += ["--mmi-lm", str(rerank.lm.source)]
        if rerank.reverse is not None:
            parts += ["--mmi-reverse", str(rerank.reverse.source)]
        parts += ["--mmi-lambda", str(rerank.weight)]
    return shlex.join(parts)


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown: the scores table, then how to reproduce them."""
    s = report["scores"]
    lines = [
        "# Evaluation",
        "",
        f"{s['sentences']} sentences; {report['date']}.",
        "",
        "| BLEU | chrF | TER | exact match % | token accuracy % | distinct-1 | distinct-2 | "
        "top output share |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['bleu']:.2f} | {s['chrf']:.2f} | {s['ter']:.2f} | {s['exact_match']:.2f} | "
        f"{s['token_accuracy']:.2f} | {s['distinct_1']:.4f} | {s['distinct_2']:.4f} | "
        f"{s['top_output_share']:.4f} |",
        "",
        f"Most frequent output: {s['top_output']!r}. Abstained: {s['abstained']}.",
        "",
        "## Reproduce",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        "sacrebleu signatures:",
        "",
        *[f"- {name}: `{sig}`" for name, sig in report["signatures"].items()],
        "",
        "Data: "
        + "; ".join(f"{k} `{v['path']}` sha256 `{v['sha256']}`" for k, v in report["data"].items()),
        "",
        "Checkpoints: "
        + "; ".join(f"`{c['path']}` sha256 `{c['sha256']}`" for c in report["checkpoints"]),
        "",
        "Decoding: " + ", ".join(f"{k}={v}" for k, v in report["decoding"].items()) + ".",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], outputs: list[str]) -> None:
    """report.json, report.md and hypotheses.txt in ``out`` (which must not hold a report)."""
    refuse_nonempty_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(out / "report.md", format_report(report))
    atomic_write_text(out / "hypotheses.txt", "".join(o + "\n" for o in outputs))


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
