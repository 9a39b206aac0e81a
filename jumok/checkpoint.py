"""Checkpoints: safetensors weights + resolved config + vocabularies, written atomically.

One ``.safetensors`` file holds everything needed to rebuild the model: the weights as tensors,
and in the file's metadata the resolved config (YAML), both vocabularies (JSON) and a little
about the run (JSON). Writes go to a temporary file in the same directory, are flushed to disk,
and then renamed over the target, so a crash leaves either the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from jumok.config import Config, config_from_yaml, config_to_yaml
from jumok.errors import RunDirError
from jumok.vocab import Vocab

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


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file + fsync + rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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
        RunDirError: the file is missing, truncated, not a safetensors file, or not jumok's.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path}: checkpoint not found") from None
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
    config = config_from_yaml(metadata["config"], source=f"{path} (embedded config)")
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        state_dict[alias] = state_dict[name]
    return Checkpoint(
        state_dict=state_dict,
        config=config,
        src_vocab=Vocab.from_json(metadata["src_vocab"]),
        tgt_vocab=Vocab.from_json(metadata["tgt_vocab"]),
        info=json.loads(metadata.get("info", "{}")),
        files={k: base64.b64decode(v) for k, v in json.loads(metadata.get("files", "{}")).items()},
    )


def _read_metadata(payload: bytes) -> dict[str, str]:
    # The safetensors header: 8-byte little-endian length, then a JSON object.
    if len(payload) < 8:
        raise ValueError("file shorter than a safetensors header")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ValueError("header length exceeds the file")
    header = json.loads(payload[8 : 8 + size])
    return header.get("__metadata__", {}) or {}
