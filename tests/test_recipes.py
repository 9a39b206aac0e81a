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


def test_chatbot_helper_models_share_the_chatbots_held_out_pairs():
    """The reply LM and the reverse model (for MMI reranking) hold out the same 1,000 pairs as
    the chatbot, so reranking on its dev set uses no model that trained on those pairs."""
    configs = {
        n: load_config(ROOT / "examples/chatbot-ko" / f"{n}.yaml") for n in ("lm", "reverse")
    }
    assert configs["lm"].model.type == "lm"
    assert (configs["reverse"].data.source_field, configs["reverse"].data.target_field) == (
        "A",
        "Q",
    )
    if not (SHARED / "chatbot-ko").is_dir():
        pytest.skip(f"{SHARED / 'chatbot-ko'} is absent")
    chatbot = load_splits(load_config(ROOT / "examples/chatbot-ko/config.yaml").data)
    reverse = load_splits(configs["reverse"].data)
    swapped_dev = {(a, q) for q, a in reverse.dev}
    assert swapped_dev == set(chatbot.dev)
    assert not swapped_dev & {(a, q) for q, a in reverse.train}
