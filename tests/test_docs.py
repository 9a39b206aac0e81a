"""Generated docs are current, and the demo's packaged config is examples/date.yaml."""

from __future__ import annotations

from pathlib import Path

from jumok.app.docgen import PAGES

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_up_to_date():
    for rel, make in PAGES.items():
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert committed == make(), f"{rel} is stale: run `make docs` (python -m jumok.app.docgen)"


def test_every_config_field_is_documented():
    from jumok.app.docgen import _sections
    from jumok.config import Config

    page = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    for path, model in _sections(Config, ""):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}.{name} has no description"
            assert f"`{path + '.' if path else ''}{name}`" in page


def test_packaged_demo_config_is_the_example():
    packaged = (ROOT / "jumok/resources/date.yaml").read_bytes()
    assert packaged == (ROOT / "examples/date.yaml").read_bytes()


def test_the_readme_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    for path in sorted((ROOT / "jumok").rglob("*.py")):
        if path.name.startswith("__"):
            continue
        depth = len(path.relative_to(ROOT / "jumok").parts)  # 1: jumok/x.py, 2: jumok/data/x.py
        folder = path.parent.name + "/"
        assert f"\n{'  ' * depth}{path.name} " in layout, f"README.md's layout misses {path}"
        if depth == 2:
            assert f"\n  {folder} " in layout, f"README.md's layout misses jumok/{folder}"
