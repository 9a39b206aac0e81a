"""Pictures: attention heatmaps and learning curves, as PNG files.

matplotlib is imported inside the functions (with the non-interactive Agg backend), so importing
jumok never pulls it in and never changes global plotting state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, **options) -> Path:
    """Write the figure as PNG and release it."""
    plt = _pyplot()
    path = Path(path)
    fig.savefig(path, **options)
    plt.close(fig)
    return path


def _label(token: str) -> str:
    """Make whitespace visible on an axis: a space is shown as '␣'."""
    return {" ": "␣", "\t": "⇥"}.get(token, token)


def _draw_heatmap(ax, attention: Sequence[Sequence[float]], source_tokens, output_tokens, title):
    image = ax.imshow(attention, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source_tokens)))
    # a source has no </s> of its own: it is data.fill_source_to's filler, drawn small as '·'
    ax.set_xticklabels(["·" if t == "</s>" else _label(t) for t in source_tokens], fontsize=9)
    ax.set_yticks(range(len(output_tokens)))
    ax.set_yticklabels([_label(t) for t in output_tokens], fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=10)
    return image


def attention_heatmap(
    path: str | Path,
    attention: Sequence[Sequence[float]],
    source_tokens: Sequence[str],
    output_tokens: Sequence[str],
    title: str | None = None,
) -> Path:
    """Draw one attention matrix: source tokens on x, output tokens on y, with a colour bar.

    Args:
        path: where to write the PNG.
        attention: ``len(output_tokens)`` rows of ``len(source_tokens)`` weights.
        source_tokens: column labels, in the source's original order.
        output_tokens: row labels.
        title: drawn above the map.
    """
    plt = _pyplot()
    rows, cols = len(output_tokens), len(source_tokens)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * cols + 2.0), max(3.0, 0.32 * rows + 1.5)))
    image = _draw_heatmap(ax, attention, source_tokens, output_tokens, title)
    fig.colorbar(image, ax=ax, label="attention weight")
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def attention_grid(path: str | Path, items: Sequence[dict[str, Any]], columns: int = 3) -> Path:
    """Several attention maps side by side, one colour bar; each item has the keys of
    :class:`jumok.decoding.translator.Translation` (``attention``, ``source_tokens``, ``tokens``) and an
    optional ``title``."""
    plt = _pyplot()
    n = len(items)
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    image = None
    for ax, item in zip(axes.flat, items, strict=False):
        image = _draw_heatmap(
            ax, item["attention"], item["source_tokens"], item["tokens"], item.get("title")
        )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.subplots_adjust(wspace=0.35, hspace=0.4)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="attention weight", shrink=0.8)
    return _save(fig, path, dpi=110, bbox_inches="tight")


def learning_curve(
    path: str | Path, history: Sequence[dict[str, Any]], title: str | None = None
) -> Path:
    """Loss (train and dev) and dev scores per validation, from ``metrics.jsonl`` records.

    The x axis is the epoch when there is one validation per epoch, else the update step. BLEU
    and chrF are drawn when the records have them and they are not all zero (or None).
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    by_epoch = len(set(epochs)) == len(epochs)
    xs = epochs if by_epoch else [r["step"] for r in history]
    xlabel = "epoch" if by_epoch else "update step"
    fig, (ax_loss, ax_em) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(xs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(xs, [r["dev_loss"] for r in history], "s-", label="dev")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel(xlabel)
    ax_loss.set_ylabel("cross-entropy per token (log scale)")
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_em.plot(xs, [100 * r["dev_exact_match"] for r in history], "o-", label="exact match (%)")
    for key, label in (("dev_bleu", "BLEU"), ("dev_chrf", "chrF")):
        values = [r.get(key) or 0.0 for r in history]
        if any(values):
            ax_em.plot(xs, values, "s-", label=label)
    ax_em.set_xlabel(xlabel)
    ax_em.set_ylabel("dev score (0-100)")
    ax_em.set_ylim(0, 101)
    ax_em.set_title("dev scores")
    ax_em.legend(loc="lower right")
    ax_em.grid(alpha=0.3)
    if by_epoch:
        for ax in (ax_loss, ax_em):
            ax.set_xticks(xs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def curves(
    path: str | Path,
    series: dict[str, Sequence[float]],
    ylabel: str,
    title: str | None = None,
) -> Path:
    """One line per named series against epochs 1..n (e.g. the ladder's exact-match curves)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-1, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path, dpi=120)
