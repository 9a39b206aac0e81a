"""The YAML a config may be: UTF-8 text, no repeated keys, no alias that multiplies the document.

PyYAML's ``safe_load`` builds only plain values, yet it accepts two things that hurt a config: a
repeated key (the last one wins, so a second ``model:`` section silently replaces the first) and
aliases that expand exponentially (the "billion laughs": a few hundred bytes whose nested
``*alias`` references stand for billions of values once the config is copied or validated).
:func:`load_yaml` refuses both while the document is composed, before any value is built, and
:func:`read_config_text` refuses a file that is not UTF-8 text. Every refusal is a
:class:`~jumok.errors.ConfigError` naming the file (and line).
"""

from __future__ import annotations

import codecs
import errno
import stat
from pathlib import Path
from typing import Any

import yaml

from jumok.errors import ConfigError

# Values that all the aliases of one document may stand for together. A config has a few
# hundred values; an anchor that shares a section stands for a few dozen at each alias.
MAX_ALIAS_VALUES = 10_000
# A config is a few kilobytes; a file far bigger is a mistake (a data file given as the config),
# and the pure-Python parser that can check keys and aliases takes seconds per megabyte.
MAX_CONFIG_CHARS = 256 * 1024

_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping's repeated key, an alias inside the collection
    it names, and aliases standing for more than :data:`MAX_ALIAS_VALUES` values in all.

    It subclasses the pure-Python loader: libyaml's (``CSafeLoader``) composes in C, out of reach.
    """

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        self._alias_values = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML reports the undefined alias
                self._count_alias(event.anchor, target, event.start_mark)
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        self._refuse_repeated_keys(node)
        return node

    def _count_alias(self, anchor: str, target: yaml.Node, mark: yaml.Mark) -> None:
        where = f"{self.source}:{mark.line + 1}"
        # PyYAML registers an anchored collection before composing its children, so an alias
        # inside it finds it unfinished (no end mark yet): a value that contains itself.
        if target.end_mark is None:
            raise ConfigError(f"{where}: alias *{anchor} is inside the value it names (a loop)")
        self._alias_values += self._size(target)
        if self._alias_values > MAX_ALIAS_VALUES:
            raise ConfigError(
                f"{where}: aliases (*{anchor} and those before it) stand for more than "
                f"{MAX_ALIAS_VALUES} values: an alias bomb? Write the values out, or use fewer "
                "aliases"
            )

    def _size(self, node: yaml.Node) -> int:
        """Values ``node`` stands for once every alias in it is expanded (memoised per node)."""
        known = self._sizes.get(id(node))
        if known is None:
            if isinstance(node, yaml.ScalarNode):
                known = 1
            elif isinstance(node, yaml.SequenceNode):
                known = 1 + sum(self._size(child) for child in node.value)
            else:
                known = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            self._sizes[id(node)] = known
        return known

    def _refuse_repeated_keys(self, node: yaml.MappingNode) -> None:
        # Only the mapping's own keys: a key that overrides one merged in by `<<: *base` is what
        # a merge is for. Keys compare as values, so `1` and `0x1`, `true` and `yes` are one key.
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise ConfigError(
                        f"{self.source}:{line}: duplicate key {key!r} (first at line {first[key]})"
                    )
                first[key] = line
            except TypeError:  # an unhashable key: PyYAML reports it when building the mapping
                continue


def load_yaml(text: str, source: str) -> Any:
    """The value of the YAML document ``text`` (one document), read by :class:`StrictLoader`.

    Raises:
        ConfigError: a repeated key, an alias bomb or a loop, a text over
            :data:`MAX_CONFIG_CHARS`, or nesting too deep for the parser, naming ``source``.
        yaml.YAMLError: any other YAML error (the caller words it).
    """
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(
            f"{source}: {len(text)} characters; a config is at most {MAX_CONFIG_CHARS} "
            "(is this a data file?)"
        )
    loader = StrictLoader(text, source)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()


def read_config_text(path: Path) -> str:
    """The text of the config file ``path``: UTF-8 (a BOM is allowed), of a sane size.

    Raises:
        ConfigError: the path is missing, a directory, a symbolic-link loop, not a regular
            file, unreadable, too big, or not UTF-8 text (binary, UTF-16); naming the file.
    """
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a directory, expected a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file, expected a YAML file")
        if info.st_size > 4 * MAX_CONFIG_CHARS:
            raise ConfigError(
                f"{path}: {info.st_size} bytes; a config is at most {MAX_CONFIG_CHARS} characters "
                "(is this a data file?)"
            )
        payload = path.read_bytes()
    except FileNotFoundError:
        hint = " (a symbolic link to a missing file)" if path.is_symlink() else ""
        raise ConfigError(f"{path}: config file not found{hint}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ConfigError(
                f"{path}: a loop of symbolic links that never reaches a file; expected a YAML file"
            ) from None
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    return decode_config_bytes(payload, str(path))


def decode_config_bytes(payload: bytes, source: str) -> str:
    """``payload`` as UTF-8 text (a leading BOM dropped); anything else is a ConfigError."""
    must = "a config must be UTF-8 YAML text"
    boms = (
        ("UTF-32", (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)),  # before UTF-16: FF FE 00 00
        ("UTF-16", (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)),
    )
    for encoding, marks in boms:
        if payload.startswith(marks):
            raise ConfigError(
                f"{source}: {encoding} text (it starts with a {encoding} byte-order mark); "
                f"{must}: save it as UTF-8"
            )
    if b"\x00" in payload:
        line = payload.count(b"\n", 0, payload.index(b"\x00")) + 1
        raise ConfigError(
            f"{source}:{line}: a NUL byte: a binary file (or UTF-16/UTF-32 text), not YAML; {must}"
        )
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = payload.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{source}:{line}: byte 0x{payload[err.start]:02x} is not UTF-8 (a binary file?); "
            f"{must}"
        ) from None
