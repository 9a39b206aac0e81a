"""Checkpoints: safetensors weights + resolved config + vocabularies, written atomically.

One ``.safetensors`` file holds everything needed to rebuild the model: the weights as tensors,
and in the file's metadata the resolved config (YAML), both vocabularies (JSON) and a little
about the run (JSON). Writes go to a temporary file in the same directory, are flushed to disk,
and then renamed over the target, so a crash leaves either the old file or the new one, never a
half-written one. Every file a training run writes goes through :func:`atomic_write_bytes` (or
:func:`atomic_path` for files another library writes, such as a matplotlib figure).

Loading checks what it reads: a truncated file, a file of another format or a checkpoint of
another format version gives a :class:`~jumok.errors.RunDirError` naming the file and what was
expected. The metadata also holds a SHA-256 of the tensors and of every other metadata entry
(:func:`checkpoint_digest`); a file whose content no longer matches it (flipped bytes, an edited
vocabulary) is refused, and so are weights that are NaN or infinite, digest or not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
# Version 2 stores the digest (DIGEST_KEY) and must have it; version 1 files, written before
# jumok stored one, still load, unverified (see _verify_digest).
FORMAT_VERSION = "2"
READ_VERSIONS = ("1", "2")
DIGEST_KEY = "sha256"


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    state_dict: dict[str, torch.Tensor]
    config: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    info: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from (named in errors)


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
        os.chmod(tmp, _mode_for(path))
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
        os.chmod(tmp, _mode_for(path))
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


def _mode_for(path: Path) -> int:
    """The permissions a replacement of ``path`` gets: those of the file it replaces, or for a
    new file the usual ``0666`` less the umask (``mkstemp`` alone gives 0600, which hides a run
    from a colleague or from a server running as another user)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


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
    metadata[DIGEST_KEY] = checkpoint_digest(tensors, metadata)
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def checkpoint_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """The SHA-256 a checkpoint stores under ``metadata["sha256"]``: of every tensor (its name,
    dtype, shape and raw bytes, in name order), then of every other metadata entry (key and
    value, in key order: the config, the vocabularies, the run info, the tokenizer files...).

    Each item is described by one line of JSON; a tensor's raw bytes follow its line, their
    length fixed by its dtype and shape, so two different checkpoints never hash the same stream.
    The bytes are hashed as they are in memory (no conversion), which is what the file holds.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        h.update(json.dumps(["tensor", name, str(tensor.dtype), list(tensor.shape)]).encode())
        h.update(b"\n")
        h.update(_raw_bytes(tensor))
    for key in sorted(metadata):
        if key != DIGEST_KEY:
            h.update(json.dumps(["metadata", key, metadata[key]]).encode())
            h.update(b"\n")
    return h.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    # A byte view of the tensor's memory, without a copy for the contiguous CPU tensors a
    # checkpoint holds; through uint8 because NumPy has no bfloat16.
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its digest and weights.

    Raises:
        RunDirError: the file is missing, truncated, not a safetensors file, not jumok's, of
            another format version, changed since jumok wrote it (its digest does not match) or
            holds NaN or infinite weights; the message names the file and what was expected.
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
    _check_format(path, metadata)
    _verify_digest(path, state_dict, metadata)
    refuse_non_finite(path, state_dict)
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
            path=path,
        )
    except JumokError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as err:  # JSONDecodeError included
        raise RunDirError(
            f"{path}: a jumok checkpoint whose metadata is damaged ({type(err).__name__}: {err})"
        ) from None


def _check_format(path: Path, metadata: Mapping[str, str]) -> None:
    if metadata.get("format") != FORMAT:
        raise RunDirError(
            f"{path}: a safetensors file, but not a jumok checkpoint (no '{FORMAT}' tag)"
        )
    if metadata.get("format_version") not in READ_VERSIONS:
        raise RunDirError(
            f"{path}: checkpoint format version {metadata.get('format_version')!r}; this jumok "
            f"reads versions {' and '.join(READ_VERSIONS)}"
        )


def _verify_digest(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Refuse a checkpoint whose content does not match the digest jumok stored when writing it.

    Format version 1 checkpoints were written before jumok stored a digest: they load without
    this check, so that existing runs keep working (their non-finite weights are still refused).
    """
    if metadata.get("format_version") == "1" and DIGEST_KEY not in metadata:
        return
    if metadata.get(DIGEST_KEY) != checkpoint_digest(tensors, metadata):
        what = "missing" if DIGEST_KEY not in metadata else "mismatch"
        raise RunDirError(
            f"{path}: checksum {what}: the file changed after jumok wrote it (damaged or "
            "edited), so its weights, config and vocabularies cannot be trusted; use another "
            "checkpoint (best or last of the run, or a backup) or train again"
        )


def refuse_non_finite(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights that are NaN or infinite: such a model decodes nothing useful, silently."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            # A NaN or inf anywhere makes the sum NaN or inf: one pass, no mask (a sum that
            # overflows from large finite values falls through to the exact check).
            continue
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise RunDirError(
                f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) of "
                f"{tensor.numel()}; a model with non-finite weights cannot decode (did its "
                "training diverge?). Use another checkpoint"
            )


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load ``ckpt``'s weights into ``model``, built from ``ckpt``'s config.

    Raises:
        RunDirError: a tensor's shape does not fit the model (the message names the file, the
            tensor and both shapes), or a tensor is missing or extra.
    """
    expected = model.state_dict()
    # Names the model does not have (a legacy name a load hook renames) are left to torch.
    misfits = [
        (name, list(tensor.shape), list(expected[name].shape))
        for name, tensor in ckpt.state_dict.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    if misfits:
        name, found, needed = misfits[0]
        more = f" (and {len(misfits) - 1} more tensors)" if len(misfits) > 1 else ""
        raise RunDirError(
            f"{ckpt.path}: tensor {name!r} has shape {found}, but the model its config builds "
            f"needs {needed}{more}; the weights do not fit the checkpoint's own config"
        )
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise RunDirError(
            f"{ckpt.path}: the weights do not fit the model its config builds: {detail}"
        ) from None


def check_vocab_file(vocab_json: Path, ckpt: Checkpoint) -> None:
    """Refuse a run whose ``vocab.json`` (``{"source": [...], "target": [...]}``, written when
    the run started) differs from the vocabularies ``ckpt`` embeds; no ``vocab.json``, no check.

    They differ only when one of the two files was replaced or edited, and then ids would map to
    the wrong tokens: which one is right cannot be told, so neither is used.
    """
    if not vocab_json.is_file():
        return
    try:
        tokens = json.loads(read_file(vocab_json, "vocabulary file").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(
            f"{vocab_json}: not readable JSON ({err}); expected the vocabularies jumok train "
            f"writes, the same as those in {ckpt.path}"
        ) from None
    embedded = {"source": ckpt.src_vocab.tokens, "target": ckpt.tgt_vocab.tokens}
    if tokens != embedded:
        raise RunDirError(
            f"{vocab_json} and {ckpt.path}: the vocabularies differ "
            f"({_first_difference(tokens, embedded, vocab_json.name)}); one of the two files "
            "was replaced or edited. Restore the run's files (or translate the checkpoint file "
            "itself, which ignores vocab.json)"
        )


def _first_difference(tokens: Any, embedded: dict[str, list[str]], name: str) -> str:
    """Where ``vocab.json``'s ``tokens`` first differ from the checkpoint's, in words."""
    for side, theirs in embedded.items():
        ours = tokens.get(side) if isinstance(tokens, dict) else None
        if not isinstance(ours, list):
            return f"{name} has no {side} token list"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            if a != b:
                return f"{side} token {i} is {a!r} in {name} and {b!r} in the checkpoint"
        if len(ours) != len(theirs):
            return f"{len(ours)} {side} tokens in {name}, {len(theirs)} in the checkpoint"
    return f"{name} holds more than the source and target lists"


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
