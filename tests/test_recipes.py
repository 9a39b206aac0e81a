"""The recipes in examples/ are valid configs, and read their data when ../shared is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from jumok.config import load_config
from jumok.data import load_splits

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RECIPES = {  # recipe: (shared folder, train, dev, test pairs)
    "multi30k": ("multi30k", 29_000, 1_014, 1_000),
    "ko-en": ("ko-en", 3_749, 500, 500),
    "en-fr": ("en-fr", 140_787, 1_000, 1_000),
    "chatbot-ko": ("chatbot-ko", None, 1_000, 0),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_config_is_valid_and_reads_its_data(name):
    cfg = load_config(ROOT / "examples" / name / "config.yaml")
    folder, n_train, n_dev, n_test = RECIPES[name]
    if not (SHARED / folder).is_dir():
        pytest.skip(f"{SHARED / folder} is absent")
    splits = load_splits(cfg.data)
    if n_train is not None:
        assert len(splits.train) <= n_train and len(splits.train) > 0.98 * n_train
    assert (len(splits.dev), len(splits.test)) == (n_dev, n_test)
    assert not set(splits.train) & (set(splits.dev) | set(splits.test))
