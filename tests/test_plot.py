"""Pictures: CJK labels drawn with an installed CJK font, or one line saying how to get one;
the learning curve of a language model."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest

from jumok import plot

EYE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _pixels(path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def _heatmap(path, source: list[str]):
    """A heatmap with ``source`` as the column labels; any warning it raises is returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot.attention_heatmap(path, EYE, [*source, "</s>"], ["a", "b", "</s>"])
    return [str(w.message) for w in caught]


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a new process: the font not looked up yet, the missing-glyph line not printed."""
    monkeypatch.setattr(plot, "_found", {})
    monkeypatch.setattr(plot, "_told", set())


def test_hangul_labels_are_drawn_not_boxes(tmp_path, fresh_process, monkeypatch, capsys):
    if plot.cjk_family() is None:
        pytest.skip("no CJK font installed (e.g. apt-get install fonts-noto-cjk)")
    assert _heatmap(tmp_path / "hangul.png", ["안", "녕"]) == []
    assert capsys.readouterr().err == ""
    drawn = _pixels(tmp_path / "hangul.png")
    # two other syllables are drawn differently; as missing glyphs, every Hangul syllable is
    # the same box (matplotlib's last-resort font draws one box per Unicode block)
    _heatmap(tmp_path / "other.png", ["하", "이"])
    assert not np.array_equal(drawn, _pixels(tmp_path / "other.png"))
    # the same labels without the fallback font: the missing glyph's boxes
    monkeypatch.setattr(plot, "cjk_family", lambda: None)
    _heatmap(tmp_path / "boxes.png", ["안", "녕"])
    boxes = _pixels(tmp_path / "boxes.png")
    assert boxes.shape == drawn.shape and not np.array_equal(drawn, boxes)
    monkeypatch.setattr(plot, "_told", set())
    _heatmap(tmp_path / "boxes2.png", ["하", "이"])
    assert np.array_equal(boxes, _pixels(tmp_path / "boxes2.png"))  # the box, whatever syllable


def test_without_a_cjk_font_one_line_says_how_to_get_one(tmp_path, fresh_process, monkeypatch):
    import sys

    monkeypatch.setattr(plot, "cjk_family", lambda: None)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for name in ("one", "two"):  # two pictures of four Hangul labels: still one line
        assert _heatmap(tmp_path / f"{name}.png", ["안", "녕"]) == []  # no warning per glyph
        plot.attention_grid(
            tmp_path / f"{name}-grid.png",
            [{"attention": EYE, "source_tokens": ["하", "이", "</s>"], "tokens": ["a", "b", "c"]}],
        )
    lines = err.getvalue().splitlines()
    assert lines == [
        "jumok: no installed font draws '안', '녕' in the plot labels, so they show as boxes; "
        + plot.HOW_TO_GET_A_FONT
    ]
    assert "fonts-noto-cjk" in plot.HOW_TO_GET_A_FONT


def test_other_warnings_still_pass(fresh_process):
    with pytest.warns(UserWarning, match="something else"), plot.label_fonts():
        warnings.warn("something else", UserWarning, stacklevel=1)


def test_drawing_leaves_matplotlib_settings_as_they_were(tmp_path):
    import matplotlib

    before = list(matplotlib.rcParams["font.family"])
    _heatmap(tmp_path / "x.png", ["x", "y"])
    assert matplotlib.rcParams["font.family"] == before


def test_learning_curve_of_a_language_model_draws_its_perplexity(tmp_path):
    row = {"dev_exact_match": None, "dev_token_accuracy": None, "dev_bleu": None}
    history = [
        {**row, "epoch": e, "step": 10 * e, "train_loss": loss + 0.1, "dev_loss": loss}
        | {"dev_chrf": None, "dev_perplexity": math.exp(loss)}
        for e, loss in ((1, 3.2), (2, 2.9), (3, 2.7))
    ]
    path = plot.learning_curve(tmp_path / "curve.png", history)
    assert path.read_bytes()[:4] == b"\x89PNG"
