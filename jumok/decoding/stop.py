"""Stopping a decode under way: every search loop asks ``should_stop()`` once per step.

A server stops decoding a request whose caller has gone (timed out or hung up): otherwise a long
beam search keeps the CPU and its memory for minutes after nobody waits for it. The searches
take an optional ``should_stop`` callable and call :func:`check` at the top of each step; when it
returns True the search raises :class:`DecodingStopped`, and the partial work is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

StopCheck = Callable[[], bool]


class DecodingStopped(Exception):
    """A search was stopped by its ``should_stop`` before it finished."""


def check(should_stop: StopCheck | None) -> None:
    """Raise :class:`DecodingStopped` when ``should_stop`` is given and returns True."""
    if should_stop is not None and should_stop():
        raise DecodingStopped("the decode was stopped before it finished")
