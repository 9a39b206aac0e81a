"""The package's shape: imports go one way between its folders, and no module imports itself back
through another, counting imports made inside functions (read from the syntax trees)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jumok"

# The import rule of jumok/__init__.py: a module may import from its own layer or lower ones.
LAYERS = {
    "jumok.errors": 0,
    "jumok.config": 0,
    "jumok.data": 1,
    "jumok.fast": 2,
    "jumok.model": 3,
    "jumok.checkpoint": 4,
    "jumok.plot": 4,
    "jumok.decoding": 5,
    "jumok.training": 6,
    "jumok.app": 7,
    "jumok": 8,  # the package's face: jumok.load, python -m jumok
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


MODULES = module_names()


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(module: str, source: str | None = None) -> set[str]:
    """Every jumok module ``module`` imports, at the top or inside a function (from its file, or
    from ``source``)."""
    if source is None:
        source = MODULES[module].read_text(encoding="utf-8")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from jumok.data import vocab` imports the module jumok.data.vocab
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != module}
    # importing a package's own __init__ from inside it is not an edge worth counting
    return {t for t in found if not module.startswith(t + ".")}


def test_every_module_has_a_layer_and_the_folders_are_the_documented_ones():
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["app", "config", "data", "decoding", "fast", "model", "training"]
    for module in MODULES:
        layer(module)  # raises for a module outside every layer
    rule = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    assert (
        "config, errors ← data ← fast ← model ← checkpoint, plot ← decoding ← training ← app"
        in rule
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    upward = sorted(t for t in imports(module) if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from a higher layer: {upward}"


def test_no_import_cycle_anywhere():
    graph = {m: imports(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_an_upward_import_inside_a_function_is_found():
    # the checks above can fail: a lazy import of the decoding layer from the model is an edge
    source = "import torch\n\ndef f():\n    from jumok.decoding import beam\n    return beam\n"
    found = imports("jumok.model.encoder", source)
    assert found == {"jumok.decoding", "jumok.decoding.beam"}
    assert layer("jumok.decoding.beam") > layer("jumok.model.encoder")
    assert imports("jumok.model.encoder", "from jumok.data.vocab import PAD_ID\n") == {
        "jumok.data.vocab"
    }
