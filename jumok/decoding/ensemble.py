"""Several trained models as one: decoding with the average of their probabilities, and
checkpoint averaging.

An :class:`Ensemble` has the two methods search needs (``encode`` and ``decode_step``), so
greedy search, beam search and sampling run on it unchanged. Each step it averages the members'
next-token *probabilities* (not their logits) and returns the log of that average, so the
scores are log-probabilities of the ensemble. Its attention is the mean of the members' weights
(every row still sums to 1). Members must read the same source the same way: same
vocabularies, tokenizers and source order; :func:`check_compatible` says which run differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from jumok.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from jumok.errors import ConfigError
from jumok.model.seq2seq import Encoded, Seq2Seq, build_model


@dataclass
class EnsembleState:
    """One decoder state per member."""

    members: list

    def select(self, rows_N: Tensor) -> EnsembleState:
        return EnsembleState([state.select(rows_N) for state in self.members])

    def cat(self, other: EnsembleState) -> EnsembleState:
        return EnsembleState([a.cat(b) for a, b in zip(self.members, other.members, strict=True)])

    def put(self, rows_N: Tensor, other: EnsembleState) -> None:
        for mine, theirs in zip(self.members, other.members, strict=True):
            mine.put(rows_N, theirs)


@dataclass
class EnsembleEncoded:
    """One :class:`~jumok.model.decoder.Encoded` per member."""

    members: list[Encoded]

    @property
    def state(self) -> EnsembleState:
        return EnsembleState([enc.state for enc in self.members])

    def select(self, rows_N: Tensor) -> EnsembleEncoded:
        return EnsembleEncoded([enc.select(rows_N) for enc in self.members])

    @property
    def source_length(self) -> int:
        return max(enc.source_length for enc in self.members)

    def padded(self, S: int) -> EnsembleEncoded:
        return EnsembleEncoded([enc.padded(S) for enc in self.members])

    def cat(self, other: EnsembleEncoded) -> EnsembleEncoded:
        pairs = zip(self.members, other.members, strict=True)
        return EnsembleEncoded([a.cat(b) for a, b in pairs])

    def put(self, rows_N: Tensor, other: EnsembleEncoded) -> None:
        for mine, theirs in zip(self.members, other.members, strict=True):
            mine.put(rows_N, theirs)


class Ensemble(nn.Module):
    """Average the next-token probabilities of ``models`` at every step."""

    def __init__(self, models: Sequence[Seq2Seq]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(
        self, src_BS: Tensor, src_len_B: Tensor, tgt_in_BT: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced: (log of the mean probability (B, T, V), mean attention or None)."""
        outputs = [m(src_BS, src_len_B, tgt_in_BT) for m in self.members]
        logps = torch.stack([logits.float().log_softmax(-1) for logits, _ in outputs])
        weights = [w.float() for _, w in outputs if w is not None]
        mean_weights = torch.stack(weights).mean(0) if weights else None
        return torch.logsumexp(logps, dim=0) - math.log(len(outputs)), mean_weights

    def encode(self, src_BS: Tensor, src_len_B: Tensor) -> EnsembleEncoded:
        return EnsembleEncoded([m.encode(src_BS, src_len_B) for m in self.members])

    def decode_step(
        self, tokens_B: Tensor, state: EnsembleState, enc: EnsembleEncoded
    ) -> tuple[Tensor, EnsembleState, Tensor | None]:
        """(log of the mean probability (B, V), new states, mean attention (B, S) or None)."""
        logps, states, weights = [], [], []
        for model, member_state, member_enc in zip(
            self.members, state.members, enc.members, strict=True
        ):
            logits_BV, new_state, weights_BS = model.decode_step(tokens_B, member_state, member_enc)
            logps.append(logits_BV.float().log_softmax(-1))
            states.append(new_state)
            if weights_BS is not None:
                weights.append(weights_BS.float())
        mean_logp_BV = torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))
        mean_weights_BS = torch.stack(weights).mean(0) if weights else None
        return mean_logp_BV, EnsembleState(states), mean_weights_BS


# The settings that decide how text becomes source ids and how ids become text.
_SHARED = ("data.reverse_source", "data.fill_source_to", "data.tokenizer")


def check_compatible(checkpoints: Sequence[Checkpoint], names: Sequence[str]) -> None:
    """Raise ConfigError naming the first run whose vocabularies or source reading differ."""
    first = checkpoints[0]
    for ckpt, name in zip(checkpoints[1:], names[1:], strict=True):
        if ckpt.src_vocab.tokens != first.src_vocab.tokens:
            raise ConfigError(f"{name}: its source vocabulary differs from {names[0]}'s")
        if ckpt.tgt_vocab.tokens != first.tgt_vocab.tokens:
            raise ConfigError(f"{name}: its target vocabulary differs from {names[0]}'s")
        for path in _SHARED:
            mine, theirs = _get(ckpt.config, path), _get(first.config, path)
            if mine != theirs:
                raise ConfigError(
                    f"{name}: {path} is {mine!r} but {theirs!r} in {names[0]}; an ensemble's "
                    "members must read the source the same way"
                )
        if ckpt.files != first.files:
            raise ConfigError(f"{name}: its tokenizer model differs from {names[0]}'s")


def average_checkpoints(
    paths: Sequence[str | Path], out: str | Path, *, one_run: bool = False
) -> Checkpoint:
    """Write the element-wise mean of the weights of ``paths`` (same model and vocabularies) to
    ``out``, with the first checkpoint's config, vocabularies and tokenizer files.

    Args:
        one_run: refuse checkpoints of different runs (:func:`require_one_run`), as ``jumok
            average`` does unless given ``--force``.

    Raises:
        ConfigError: fewer than one checkpoint, ``out`` is one of the inputs, the models
            differ in shape, config or vocabulary, or (``one_run``) they come from different runs.
    """
    if not paths:
        raise ConfigError("jumok average: give at least one checkpoint")
    out = Path(out)
    if out.exists():
        raise ConfigError(f"--out {out}: exists; nothing was changed. Choose a new file")
    checkpoints = [load_checkpoint(p) for p in paths]
    names = [str(p) for p in paths]
    check_compatible(checkpoints, names)
    if one_run:
        require_one_run(checkpoints, names)
    first = checkpoints[0]
    for ckpt, name in zip(checkpoints[1:], names[1:], strict=True):
        if ckpt.config.model != first.config.model:
            raise ConfigError(f"{name}: its model section differs from {names[0]}'s")
    model = build_model(first.config.model, len(first.src_vocab), len(first.tgt_vocab))
    for ckpt in checkpoints:  # each must fit the model, or the mean has no meaning
        load_weights(model, ckpt)
    mean = {
        key: torch.stack([c.state_dict[key].double() for c in checkpoints]).mean(0).to(value.dtype)
        for key, value in first.state_dict.items()
    }
    model.load_state_dict(mean)
    info = {"averaged": names, **{k: v for k, v in first.info.items() if k in ("epoch", "step")}}
    save_checkpoint(out, model, first.config, first.src_vocab, first.tgt_vocab, info, first.files)
    return load_checkpoint(out)


# What a run's checkpoints may differ in: the fields a resumed run may change (the list of
# jumok.training.resume.MAY_CHANGE, which decoding cannot import, with the budgets a finished
# run is continued under) and the decoding settings, which no weight depends on.
SAME_RUN_MAY_DIFFER = (
    "train.threads",
    "train.examples",
    "train.device",
    "train.resume_every",
    "train.epochs",
    "train.max_steps",
    "train.max_seconds",
    "decode.",
)


def require_one_run(checkpoints: Sequence[Checkpoint], names: Sequence[str]) -> None:
    """Refuse checkpoints that do not come from one training run.

    Checkpoints carry no run id; a run is known by its resolved config, seed included, which
    every checkpoint embeds (two runs of one config and seed draw the same initial weights and
    batches, so they are the same run as far as averaging goes). Averaging separately trained
    models is meaningless: their hidden units need not line up, and the mean of two good models
    is usually a bad one.

    Raises:
        ConfigError: one line naming the first two checkpoints that differ and how.
    """
    first = _flat(checkpoints[0].config.model_dump(mode="json"))
    for ckpt, name in zip(checkpoints[1:], names[1:], strict=True):
        mine = _flat(ckpt.config.model_dump(mode="json"))
        differ = [
            f"{key} {first.get(key)!r} vs {mine.get(key)!r}"
            for key in sorted(first.keys() | mine.keys())
            if first.get(key) != mine.get(key) and not key.startswith(SAME_RUN_MAY_DIFFER)
        ]
        if differ:
            shown = "; ".join(differ[:3]) + ("; ..." if len(differ) > 3 else "")
            raise ConfigError(
                f"{names[0]} and {name} come from different runs ({shown}); the mean of "
                "separately trained models is not a model of either. Average checkpoints of one "
                "run (best, last, checkpoints/), or add --force to average them anyway"
            )


def _flat(node, prefix: str = "") -> dict:
    """A nested dict as {dotted.path: value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
