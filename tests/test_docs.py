"""Generated docs are current, and the demo's packaged config is examples/date.yaml."""

from __future__ import annotations

from pathlib import Path

from jumok.docgen import PAGES

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_up_to_date():
    for rel, make in PAGES.items():
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert committed == make(), f"{rel} is stale: run `make docs` (python -m jumok.docgen)"


def test_every_config_field_is_documented():
    from jumok.config import Config
    from jumok.docgen import _sections

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
    for path in sorted((ROOT / "jumok").glob("*.py")):
        if not path.name.startswith("__"):
            assert f"\n  {path.name} " in readme, f"README.md's layout misses jumok/{path.name}"
