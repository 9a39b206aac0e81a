"""Writing a command's output file (``translate --output``, ``data check --json``) without replacing
what must not be replaced.

A regular file (or a new one) is written to a temporary file and renamed over it, so a crash or a
full disk leaves the previous content whole; the new file keeps the old one's permissions (a new
file gets the usual ``0666 & ~umask``). Anything else is written as a stream, never replaced:

* ``-`` is standard output;
* a symlink is followed: the file it points to is replaced, the link stays a link
  (``/dev/stdout`` is a link to the terminal or pipe, and ``/dev/null`` must stay a device);
* a FIFO, a terminal or any device node is opened and written in place;
* a directory is refused.

Every check happens in :func:`check_output`, which a command calls before its work, so a bad
``--output`` fails in the first second, not after an hour of decoding.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

from jumok.errors import WriteError


def check_output(path: str | Path | None, flag: str) -> None:
    """Refuse an output that cannot be written, before any work is done.

    Raises:
        WriteError: ``path`` is a directory, a symlink loop, or its folder does not exist.
    """
    if path is None or str(path) == "-":
        return
    target = _follow(Path(path), flag)
    if target.is_dir():
        raise WriteError(f"{flag} {path}: is a directory; expected a file to write")
    if not target.exists() and not target.parent.is_dir():
        raise WriteError(f"{flag} {path}: folder {target.parent} does not exist; create it first")


def write_output(path: str | Path, text: str, flag: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as the module docstring says.

    Raises:
        WriteError: the output cannot be written; a regular file that existed is unchanged.
    """
    payload = text.encode("utf-8")
    if str(path) == "-":
        write_stream(sys.stdout, payload)
        return
    check_output(path, flag)
    target = _follow(Path(path), flag)
    try:
        mode = target.stat().st_mode if target.exists() else None
    except OSError as err:
        raise WriteError(f"{flag} {path}: cannot write ({err.strerror or err})") from None
    if mode is not None and not stat.S_ISREG(mode):
        try:
            with open(target, "wb", buffering=0) as stream:  # a FIFO or a device: in place
                _write_fd(stream.fileno(), payload)
        except OSError as err:
            raise WriteError(f"{flag} {path}: cannot write ({err.strerror or err})") from None
        return
    from jumok.checkpoint import atomic_write_bytes  # here: importing it loads torch

    atomic_write_bytes(target, payload)  # keeps the replaced file's mode (a new one: the umask's)


def write_stream(stream, payload: bytes) -> None:
    """Write every byte of ``payload`` to a text stream's file descriptor.

    ``stream.write`` may silently drop the tail of a partial write when Python runs unbuffered
    (``PYTHONUNBUFFERED``, ``python -u``); this loops until every byte is written, and a reader
    that went away raises :class:`BrokenPipeError` instead of cutting the output short.

    Raises:
        WriteError: the stream is closed (a program started with ``>&-``).
    """
    if stream is None:
        raise WriteError("standard output is closed; give --output FILE or open it")
    stream.flush()
    try:
        fd = stream.fileno()
    except (AttributeError, io.UnsupportedOperation):  # an in-memory stream (a test's capture)
        stream.write(payload.decode("utf-8"))
        stream.flush()
        return
    _write_fd(fd, payload)


def _write_fd(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _follow(path: Path, flag: str) -> Path:
    """``path`` with every symlink followed (a missing last target is the file to create)."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a link to a file not written yet: that file is created
        return Path(os.path.realpath(path))
    except OSError as err:  # a symlink loop
        raise WriteError(f"{flag} {path}: cannot follow the link ({err.strerror or err})") from None


def make_output_dir(path: Path, flag: str) -> Path | None:
    """Create the folder a command writes into, before its work; returns the top-most folder it
    created (for :func:`remove_if_empty` should the work fail), or None if ``path`` existed.

    Raises:
        WriteError: the folder cannot be created (a file in the way, no permission).
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(
            f"{flag} {path}: cannot create the folder ({err.strerror or err})"
        ) from None
    return missing[-1] if missing else None


def remove_if_empty(top: Path | None) -> None:
    """Remove the folders :func:`make_output_dir` created, if nothing was written into them."""
    if top is None:
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()
