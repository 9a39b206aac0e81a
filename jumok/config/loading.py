"""Reading a config: YAML, ``a.b=c`` overrides, validation with readable errors, and writing it back."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from jumok.config.strict_yaml import load_yaml, read_config_text
from jumok.config.tree import Config
from jumok.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``a.b=c`` overrides, validate.

    Raises:
        ConfigError: naming the file (or ``--set``), the key path and what was expected.
    """
    path = Path(path)
    raw = parse_yaml(read_config_text(path), source=str(path))
    raw = apply_overrides(raw, overrides)
    config = validate(raw, source=str(path), overrides=overrides)
    # Relative data paths are relative to the config file, so a config works from any directory.
    return _resolve_paths(config, path.parent)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text to a mapping, with the file and line in any error.

    Repeated keys and aliases that multiply the document are refused (:mod:`.strict_yaml`).
    """
    try:
        raw = load_yaml(text, source)
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        raise ConfigError(
            f"{source}:{line}: character U+{err.character:04X} is not allowed in YAML text"
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: YAML syntax error: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: YAML error: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` applied; values are parsed as YAML."""
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.lr=3e-4")
        try:
            shown = item if len(item) <= 60 else item[:57] + "..."
            value = load_yaml(value_text, f"--set {shown}") if value_text.strip() else None
        except yaml.YAMLError:
            value = value_text
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return raw


def validate(raw: dict[str, Any], source: str = "<config>", overrides: tuple | list = ()) -> Config:
    """Validate a raw mapping into a :class:`Config`, with readable errors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        lines = [_describe(e, source, overrides) for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None


def format_validation_error(err: ValidationError, source: str, section: str = "") -> str:
    """Readable lines for a validation error of one section (e.g. ``decode`` options)."""
    lines = []
    for error in err.errors():
        loc = (section, *error["loc"]) if section else error["loc"]
        lines.append(_describe({**error, "loc": loc}, source, ()))
    return "\n".join(lines)


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML (paths as strings), the form written into runs."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_from_yaml(text: str, source: str) -> Config:
    """Inverse of :func:`config_to_yaml`."""
    return validate(parse_yaml(text, source), source=source)


def _resolve_paths(config: Config, base: Path) -> Config:
    data = config.data
    updates = {}
    for name in ("train", "dev", "test"):
        value = getattr(data, name)
        if isinstance(value, tuple):
            resolved = tuple(v if v.is_absolute() else _absolute(base / v) for v in value)
            if resolved != value:
                updates[name] = resolved
        elif value is not None and not value.is_absolute():
            updates[name] = _absolute(base / value)
    if not updates:
        return config
    return config.model_copy(update={"data": data.model_copy(update=updates)})


def _absolute(path: Path) -> Path:
    """``path`` resolved; a symlink loop is left for the reader to report (naming the file)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a symlink loop
        return Path(os.path.abspath(path))


def _deep_copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _deep_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deep_copy(v) for v in node]
    return node


def _describe(error: dict[str, Any], source: str, overrides: tuple | list) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    origin = source
    for item in overrides:
        if item.partition("=")[0].strip() == key:
            origin = f"--set {item}"
    if error["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], fields, n=1)
        suggestion = f" (did you mean {hint[0]}?)" if hint else ""
        known = ", ".join(fields)
        return f"{origin}: {key}: unknown field{suggestion}; expected one of: {known}"
    if error["type"] == "missing":
        if key == "data":
            return f"{origin}: data: missing section; give data.generate (a toy task) or data.train (a pairs file)"
        return f"{origin}: {key}: missing required field"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    got = error.get("input")
    shown = "" if error["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
    if not key:  # a check across sections names its fields in its message
        return f"{origin}: {message}{shown}"
    return f"{origin}: {key}: {message}{shown}"


def _fields_at(path: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return []
        model = models[0]
    return list(model.model_fields)
