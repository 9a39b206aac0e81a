"""Pictures: attention heatmaps and learning curves, as PNG files.

matplotlib is imported inside the functions (with the non-interactive Agg backend), so importing
jumok never pulls it in and never changes global plotting state.

Labels in Korean, Japanese or Chinese: matplotlib's default font (DejaVu Sans) has no CJK
glyphs. Each drawing here adds an installed CJK font (:data:`CJK_FAMILIES`) as a per-character
fallback for that drawing only (matplotlib >= 3.6 falls back through a list of families). With
none installed, the labels show as boxes and one line on stderr says how to get a font, once
per process, instead of matplotlib's warning for every missing character.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Fonts that draw Hangul, in order of preference; the Noto and Source Han ones draw all of CJK
# (their KR, JP, SC and TC faces differ only in the preferred forms of shared Han characters).
CJK_FAMILIES = (
    "Noto Sans CJK KR",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Source Han Sans KR",
    "Source Han Sans",
    "Noto Sans KR",
    "NanumGothic",
    "NanumBarunGothic",
    "Malgun Gothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Droid Sans Fallback",
    "WenQuanYi Zen Hei",
    "UnDotum",
    "Baekmuk Gulim",
)
# File names (lower case, letters only) that may hold one of them.
_CJK_FILE = re.compile(
    r"cjk|nanum|sourcehan|notosanskr|malgun|applesdgothic|applegothic|droidsansfallback|"
    r"wqy|wenquanyi|undotum|baekmuk"
)
# matplotlib's warning for a character that no font of the drawing has.
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")
HOW_TO_GET_A_FONT = (
    "install one with Hangul/CJK, e.g. `apt-get install fonts-noto-cjk` (Debian, Ubuntu) or "
    "Noto Sans CJK / NanumGothic elsewhere (docs/decoding.md)"
)

_found: dict[str, str | None] = {}  # the CJK family, looked up once per process
_told: set[str] = set()  # the missing-glyph line is printed once per process


def cjk_family() -> str | None:
    """The installed font that draws CJK labels (one of :data:`CJK_FAMILIES`), or None.

    Looked up once per process. matplotlib's font list is a cache made when matplotlib first
    ran, so a font installed since is not in it: then the system's font files whose names
    look like a CJK font's are added to matplotlib's list (for this process) and looked up again.
    """
    if "cjk" not in _found:
        _found["cjk"] = _find_cjk_family()
    return _found["cjk"]


def _find_cjk_family() -> str | None:
    from matplotlib import font_manager

    manager = font_manager.fontManager

    def first_known() -> str | None:
        names = {font.name for font in manager.ttflist}
        return next((name for name in CJK_FAMILIES if name in names), None)

    found = first_known()
    if found is not None:
        return found
    for path in font_manager.findSystemFonts():
        if _CJK_FILE.search(re.sub(r"[^a-z]", "", Path(path).name.lower())):
            try:
                manager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # unreadable: try the others
                continue
    return first_known()


@contextmanager
def label_fonts() -> Iterator[None]:
    """Draw the figures made inside with the CJK fallback font, and report missing glyphs once.

    The fallback is set with ``matplotlib.rc_context``, so it holds for the drawing inside and
    is undone after it. matplotlib's warnings about characters that no font has are replaced
    by one line on stderr, once per process (:func:`_tell_missing`); other warnings pass.
    """
    import matplotlib

    cjk = cjk_family()
    families = [*matplotlib.rcParams["font.family"], *([cjk] if cjk else [])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matplotlib.rc_context({"font.family": families}):
            yield
    missing: list[str] = []
    for w in caught:
        glyph = _MISSING_GLYPH.match(str(w.message))
        if glyph is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif chr(int(glyph.group(1))) not in missing:
            missing.append(chr(int(glyph.group(1))))
    if missing:
        _tell_missing(missing, cjk)


def _tell_missing(characters: list[str], cjk: str | None) -> None:
    """One line on stderr, once per process: which characters show as boxes, and why."""
    if "missing" in _told:
        return
    _told.add("missing")
    shown = ", ".join(repr(c) for c in characters[:3])
    more = f" and {len(characters) - 3} more" if len(characters) > 3 else ""
    if cjk is None:
        print(
            f"jumok: no installed font draws {shown}{more} in the plot labels, so they show as "
            f"boxes; {HOW_TO_GET_A_FONT}",
            file=sys.stderr,
        )
    else:
        print(
            f"jumok: neither the default font nor {cjk} draws {shown}{more} in the plot "
            "labels, so they show as boxes",
            file=sys.stderr,
        )


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
    with label_fonts():
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
    with label_fonts():
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
    and chrF are drawn when the records have them and they are not all zero (or None). A
    language model's records have no scores of decoded text (``dev_exact_match`` is None):
    the second panel then draws its dev perplexity.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    by_epoch = len(set(epochs)) == len(epochs)
    xs = epochs if by_epoch else [r["step"] for r in history]
    xlabel = "epoch" if by_epoch else "update step"
    with label_fonts():
        fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(10, 3.8))
        ax_loss.plot(xs, [r["train_loss"] for r in history], "o-", label="train")
        ax_loss.plot(xs, [r["dev_loss"] for r in history], "s-", label="dev")
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("cross-entropy per token (log scale)")
        ax_loss.set_title("loss")
        ax_loss.legend()
        if all(r.get("dev_exact_match") is None for r in history):
            _draw_perplexity(ax_dev, xs, history)
        else:
            _draw_scores(ax_dev, xs, history)
        for ax in (ax_loss, ax_dev):
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if by_epoch:
                ax.set_xticks(xs)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path, dpi=120)


def _draw_scores(ax, xs: list[int], history: Sequence[dict[str, Any]]) -> None:
    """Dev exact match, and BLEU and chrF when the records have them, on a 0-100 scale."""
    ax.plot(xs, [100 * r["dev_exact_match"] for r in history], "o-", label="exact match (%)")
    for key, label in (("dev_bleu", "BLEU"), ("dev_chrf", "chrF")):
        values = [r.get(key) or 0.0 for r in history]
        if any(values):
            ax.plot(xs, values, "s-", label=label)
    ax.set_ylabel("dev score (0-100)")
    ax.set_ylim(0, 101)
    ax.set_title("dev scores")
    ax.legend(loc="lower right")


def _draw_perplexity(ax, xs: list[int], history: Sequence[dict[str, Any]]) -> None:
    """A language model's dev perplexity, exp(dev loss per token); lower is better."""
    values = [r["dev_perplexity"] for r in history]
    ax.plot(xs, values, "s-", color="C1", label="dev perplexity")
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("dev perplexity")
    ax.legend()


def curves(
    path: str | Path,
    series: dict[str, Sequence[float]],
    ylabel: str,
    title: str | None = None,
) -> Path:
    """One line per named series against epochs 1..n (e.g. the ladder's exact-match curves)."""
    plt = _pyplot()
    with label_fonts():
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


def reliability_diagram(
    path: str | Path, bins: Sequence[Any], threshold: float | None, title: str | None = None
) -> Path:
    """Accuracy against confidence per bin (``jumok calibrate``): bars of each bin's accuracy,
    its mean confidence as a dot, the diagonal of perfect calibration, the abstain threshold as
    a vertical line, and below, how many lines each bin holds. ``bins``: objects with ``low``,
    ``high``, ``count``, ``confidence`` and ``accuracy`` (:class:`jumok.app.calibrate.Bin`)."""
    plt = _pyplot()
    full = [b for b in bins if b.count]
    with label_fonts():
        fig, (ax, ax_n) = plt.subplots(
            2, 1, figsize=(5.5, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        width = [b.high - b.low for b in bins]
        ax.bar([b.low for b in bins], [b.accuracy for b in bins], width=width, align="edge",
               edgecolor="black", alpha=0.7, label="accuracy (good share)")  # fmt: skip
        ax.plot([b.confidence for b in full], [b.accuracy for b in full], "o", color="C3",
                label="mean confidence of the bin")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax_n.bar([b.low for b in bins], [b.count for b in bins], width=width, align="edge",
                 edgecolor="black", color="C2")  # fmt: skip
        if threshold is not None:
            for a in (ax, ax_n):
                a.axvline(threshold, color="C1", linewidth=2)
            right = threshold > 0.5  # the label on the side with room
            label = f"abstain below {threshold:.3f}"
            ax.text(threshold, 0.02, f"{label} " if right else f" {label}", color="C1",
                    ha="right" if right else "left")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        ax_n.set_xlabel("confidence (geometric mean of token probabilities)")
        ax_n.set_ylabel("lines")
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return _save(fig, path, dpi=110)
