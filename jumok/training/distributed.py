"""Data-parallel training over several processes, launched by ``torchrun`` (docs/distributed.md).

Every process (rank) holds a full copy of the model and reads the same data in the same seeded
batch order. ``train.batch_size`` is the *global* batch: each batch is split between the ranks
(rank r takes rows r, r + N, ...; see :meth:`jumok.data.splits.Batch.shard`), each rank back-propagates
its rows' summed loss divided by the token count of the whole batch, and :meth:`World.sum_gradients`
adds the gradients of all ranks. The sum is the gradient one process computes on the whole batch,
so every rank takes the same optimizer step and the weights stay identical, whatever N is.

Every rank does one update per global batch, even when its share of a batch is empty, so all
ranks meet at every collective. Decisions that could differ between ranks (the wall-clock budget,
a signal, the dev score that drives early stopping) are agreed through :meth:`World.any` and
:meth:`World.broadcast`. Only rank 0 writes files and logs.

Gradients are added by one all-reduce per update over a flat buffer, after the backward passes,
rather than by wrapping the model in ``DistributedDataParallel``: the sum stays exact when a rank's
share of a batch is empty (a short last batch, a token batch of one long sentence) and under
``train.accumulate``, and the model saved is the model trained, with no ``module.`` prefix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from jumok.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this machine: which GPU it uses

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and logs."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device of this rank: GPU ``local_rank`` when training on CUDA."""
        if device.type == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def sum_gradients(self, parameters: list[torch.nn.Parameter], *numbers: float) -> list[float]:
        """Replace each gradient by its sum over all ranks; returns ``numbers`` summed too.

        A parameter keeps no gradient (``None``) only when it has none on every rank, as in one
        process; one that has a gradient on some ranks counts zeros on the others.
        """
        if self.size == 1:
            return list(numbers)
        reference = parameters[0]
        present = [float(p.grad is not None) for p in parameters]
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in parameters
            ]
            + [
                torch.tensor(
                    present + list(numbers), dtype=reference.dtype, device=reference.device
                )
            ]
        )
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        present_sum = flat[offset : offset + len(parameters)].tolist()
        for p, count in zip(parameters, present_sum, strict=True):
            if count == 0:
                p.grad = None
        return flat[offset + len(parameters) :].tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if self.size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if self.size == 1:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def seed_dropout(self, seed: int, step: int) -> None:
        """Give ranks other than 0 their own dropout masks (each sees different sentences).

        Call it after the model is built (initialisation must be identical on all ranks). Rank 0
        keeps the generator as it is, so a run with dropout 0, or rank 0 itself, draws as one
        process does; ``step`` makes a resumed run draw masks it has not used before.
        """
        if self.rank > 0:
            torch.manual_seed(seed + 1_000_003 * self.rank + step)

    def _comm_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


SINGLE = World()


def current_world() -> World:
    """The world of the process group this process joined; one process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def backend_for(device_name: str) -> str:
    """NCCL when the processes train on GPUs (``train.device`` cuda, or auto with one), else gloo."""
    return "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """Join the training processes ``torchrun`` started (from its environment), then leave.

    ``torchrun`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them, or
    with WORLD_SIZE 1, this is one process and nothing is initialised.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 or (dist.is_available() and dist.is_initialized()):
        yield current_world()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1, but this PyTorch build has no torch.distributed")
    backend = backend_for(device_name)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    try:
        yield current_world()
        # Leave together: a process tearing gloo down while another still talks to it can end
        # in "terminate called without an active exception" (SIGABRT), seen in the test suite.
        dist.barrier()
    finally:
        dist.destroy_process_group()
