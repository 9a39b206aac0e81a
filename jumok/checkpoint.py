"""Checkpoints: safetensors weights + resolved config + vocabularies, written atomically.

One ``.safetensors`` file holds everything needed to rebuild the model: the weights as tensors,
and in the file's metadata the resolved config (YAML), both vocabularies (JSON) and a little
about the run (JSON). Writes go to a temporary file in the same directory, are flushed to disk,
and then renamed over the target, so a crash leaves either the old file or the new one, never a
half-written one. Every file a training run writes goes through :func:`atomic_write_bytes` (or
:func:`atomic_path` for files another library writes, such as a matplotlib figure).

Loading checks what it reads: a truncated file, a file of another format or a checkpoint of
another format version gives a :class:`~jumok.errors.RunDirError` naming the file and what was
expected.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from jumok.config import Config, config_from_yaml, config_to_yaml
from jumok.data.vocab import Vocab
from jumok.errors import JumokError, RunDirError, WriteError

FORMAT = "jumok-checkpoint"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    state_dict: dict[str, torch.Tensor]
    config: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    info: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


TEMP_SUFFIX = ".tmp"  # temporary files are ".NAME.RANDOM.tmp" (+ the target's suffix)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file + fsync + rename.

    Raises:
        WriteError: the write failed (a full disk, no permission); ``path`` is unchanged and the
            temporary file is removed.
    """
    atomic_write(path, lambda f: _write_all(f, payload))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Have ``write`` fill a temporary file (opened for binary writing, seekable), then fsync it
    and rename it to ``path``: what a large payload uses, streamed to disk rather than built in
    memory first.

    Raises:
        WriteError: as :func:`atomic_write_bytes`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
        raise
    _fsync_dir(path.parent)


def _write_all(f: BinaryIO, payload: bytes) -> None:
    """Write every byte of ``payload`` (a seam for the tests' full disk)."""
    f.write(payload)


def _write_error(path: Path, err: OSError) -> WriteError:
    return WriteError(
        f"{path}: cannot write ({err.strerror or err}); the previous {path.name}, if any, is "
        "unchanged"
    )


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` on success.

    For files another library writes by name (a matplotlib figure). The temporary name keeps
    ``path``'s suffix, from which such libraries pick the format.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX + path.suffix
    )
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
        raise
    _fsync_dir(path.parent)


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``directory``."""
    removed = []
    for pattern in (f".*{TEMP_SUFFIX}", f".*{TEMP_SUFFIX}.*"):
        for tmp in directory.glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: Config,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    info: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
) -> None:
    """Write weights, config, vocabularies (and tokenizer model ``files``) to one file, atomically.

    The checkpoint is self-contained: a SentencePiece model travels inside it.
    """
    # Contiguous CPU copies: safetensors needs them, and a wrapper prefix never reaches disk
    # because the caller passes the plain module.
    tensors, aliases = {}, {}
    first_name: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, value in model.state_dict().items():
        # Tied weights (decoder.tie_embeddings) are one tensor under two names: stored once,
        # the second name recorded as an alias.
        key = (value.data_ptr(), tuple(value.shape))
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = value.detach().to("cpu").contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_yaml(config),
        "src_vocab": src_vocab.to_json(),
        "tgt_vocab": tgt_vocab.to_json(),
        "info": json.dumps(info or {}),
        "aliases": json.dumps(aliases),
        "files": json.dumps(
            {k: base64.b64encode(v).decode("ascii") for k, v in (files or {}).items()}
        ),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        RunDirError: the file is missing, truncated, not a safetensors file, not jumok's, or of
            another format version; the message names the file and what was expected.
    """
    path = Path(path)
    payload = read_file(path, "checkpoint")
    if payload[:2] == b"PK":  # a zip archive: what torch.save writes
        raise RunDirError(
            f"{path}: a PyTorch pickle (torch.save), not a jumok checkpoint; expected a "
            ".safetensors file written by jumok train"
        )
    try:
        state_dict = st_load(payload)
        metadata = _read_metadata(payload)
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise RunDirError(
            f"{path}: not a readable safetensors checkpoint (truncated or another format?): {err}"
        ) from None
    if metadata.get("format") != FORMAT:
        raise RunDirError(
            f"{path}: a safetensors file, but not a jumok checkpoint (no '{FORMAT}' tag)"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise RunDirError(
            f"{path}: checkpoint format version {metadata.get('format_version')!r}; this jumok "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        config = config_from_yaml(metadata["config"], source=f"{path} (embedded config)")
        for alias, name in json.loads(metadata.get("aliases", "{}")).items():
            state_dict[alias] = state_dict[name]
        files = json.loads(metadata.get("files", "{}"))
        return Checkpoint(
            state_dict=state_dict,
            config=config,
            src_vocab=Vocab.from_json(metadata["src_vocab"]),
            tgt_vocab=Vocab.from_json(metadata["tgt_vocab"]),
            info=json.loads(metadata.get("info", "{}")),
            files={k: base64.b64decode(v) for k, v in files.items()},
        )
    except JumokError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as err:  # JSONDecodeError included
        raise RunDirError(
            f"{path}: a jumok checkpoint whose metadata is damaged ({type(err).__name__}: {err})"
        ) from None


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; a missing or unreadable file is a RunDirError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise RunDirError(f"{path}: a directory; expected a {what} file") from None
    except OSError as err:
        raise RunDirError(f"{path}: cannot read the {what}: {err.strerror or err}") from None


def _read_metadata(payload: bytes) -> dict[str, str]:
    # The safetensors header: 8-byte little-endian length, then a JSON object.
    if len(payload) < 8:
        raise ValueError("file shorter than a safetensors header")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ValueError("header length exceeds the file")
    header = json.loads(payload[8 : 8 + size])
    return header.get("__metadata__", {}) or {}
