"""The ``jumok`` parser's manners: "did you mean" for mistyped commands and flags, help groups.

:class:`Parser` is an :class:`argparse.ArgumentParser` whose errors suggest the nearest command
(``jumok tranlsate`` -> ``translate``) or flag of the chosen command (``--beem`` -> ``--beam``),
found with :mod:`difflib`, and are printed with that command's usage. :class:`HelpGroups` sorts a
command's many flags into titled sections of its ``--help``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any


def nearest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (difflib's ratio at least 0.6), or None."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The parser's subcommands (argparse keeps them as an action), or None."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


class Parser(argparse.ArgumentParser):
    """An argument parser that says which command or flag was meant."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """As argparse's, with a suggestion for an unknown command or flag."""
        self._check_commands(list(sys.argv[1:] if args is None else args))
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = self._chosen(parsed)
            flags = [a for a in chosen._option_string_actions if a.startswith("--")]
            hints = [
                (word.split("=")[0], match)
                for word in extras
                if word.startswith("-") and (match := nearest(word.split("=")[0], flags))
            ]
            said = [m if len(hints) == 1 else f"{m} for {w}" for w, m in hints]
            hint = f" (did you mean {', '.join(said)}?)" if hints else ""
            chosen.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _check_commands(self, argv: list[str]) -> None:
        """Refuse an unknown (sub)command with the nearest one, before argparse's bare list.

        The commands' parents take no option with a value, so the first word that is not an
        option is the command."""
        sub = subparsers(self)
        words = [(i, a) for i, a in enumerate(argv) if not a.startswith("-")]
        if sub is None or not words:
            return
        i, word = words[0]
        if word in sub.choices:
            child = sub.choices[word]
            if isinstance(child, Parser):
                child._check_commands(argv[i + 1 :])
            return
        match = nearest(word, list(sub.choices))
        hint = f"; did you mean {match!r}?" if match else "."
        self.error(
            f"unknown command {word!r}{hint} The commands: {', '.join(sub.choices)} "
            f"({self.prog} --help says what each does)"
        )

    def _chosen(self, parsed: Any) -> argparse.ArgumentParser:
        """The deepest subcommand's parser that ``parsed`` went through (``jumok data check``)."""
        sub = subparsers(self)
        name = getattr(parsed, sub.dest, None) if sub is not None else None
        if name is None:
            return self
        child = sub.choices[name]
        return child._chosen(parsed) if isinstance(child, Parser) else child


class HelpGroups:
    """Adds each flag to the titled section of ``--help`` that lists it.

    Helpers that take a parser and call ``add_argument`` (the shared decoding flags) take this
    in its place unchanged. A flag no section lists stays in the parser's ``options``.
    """

    def __init__(self, parser: argparse.ArgumentParser, sections: dict[str, Sequence[str]]):
        self.parser = parser
        self.by_flag: dict[str, argparse._ArgumentGroup] = {}
        for title, flags in sections.items():
            group = parser.add_argument_group(title)
            self.by_flag.update(dict.fromkeys(flags, group))

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        """``add_argument`` on the section that lists the first of ``names``."""
        target = self.by_flag.get(names[0], self.parser)
        return target.add_argument(*names, **kwargs)
