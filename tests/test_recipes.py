"""The recipes in examples/ are valid configs, and read their data when ../shared is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from jumok.config import load_config
from jumok.data.splits import load_splits

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


def test_date_fast_is_the_lecture_model_and_stops_at_its_target(tmp_path):
    # The same architecture as examples/date.yaml; only the training differs. A short run (a
    # smaller data set, a reachable target) shows the target ends it.
    from jumok.training.train import train

    fast, lecture = (load_config(ROOT / "examples" / n) for n in ("date-fast.yaml", "date.yaml"))
    assert fast.model == lecture.model
    assert fast.train.early_stopping.target == 0.999 and fast.train.precision == "bf16"
    small = [
        "data.generate.size=800",
        "data.generate.dev_size=50",
        "data.generate.test_size=50",
        "train.valid_every=5",
        "train.early_stopping.metric=loss",
        "train.early_stopping.target=100",
    ]
    cfg = load_config(ROOT / "examples/date-fast.yaml", small)
    result = train(cfg, tmp_path / "run", log=lambda _: None, progress=False)
    assert result.stopped_early and [r.step for r in result.history] == [5]
