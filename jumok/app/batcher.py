"""Dynamic batching: requests that arrive close together are decoded as one batch.

A server gets one short request at a time from many clients. Decoding each alone wastes the CPU
(a batch of 32 sentences costs little more than one), so :class:`DynamicBatcher` sits in front of
the model as a queue. The first waiting request opens a window of ``max_wait_ms``; requests with
the same decoding settings that arrive inside it (up to ``max_batch_size`` texts) join its batch.
One worker thread runs the model, so the event loop keeps accepting requests while it decodes,
and requests that pile up during a decode form the next batch at once. Each caller gets exactly
its own results back, in order.

With ``enabled=False`` every request is decoded alone, in arrival order, by the same worker:
the baseline that ``benchmarks/serve_load.py`` compares against.

A caller that stops waiting (its time limit passed, or it hung up) cancels its future. The decode
function gets a ``should_stop`` callable that turns True once every caller of its batch has gone,
so a long search stops at its next step instead of decoding for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Result = TypeVar("Result")


@dataclass
class _Job:
    texts: list[str]
    key: Hashable  # requests share a batch only when their keys (decoding settings) are equal
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What the batcher has done, for ``GET /v1/models`` and the load benchmark."""

    batches: int = 0
    requests: int = 0
    texts: int = 0
    largest_batch: int = 0

    def add(self, requests: int, texts: int) -> None:
        self.batches += 1
        self.requests += requests
        self.texts += texts
        self.largest_batch = max(self.largest_batch, texts)


class QueueFull(Exception):
    """More texts are waiting than ``max_queue`` allows."""


class DynamicBatcher(Generic[Result]):
    """Collect requests into batches for ``decode(texts, key) -> one result per text``.

    Args:
        decode: runs the model; called in the worker thread as ``decode(texts, key,
            should_stop)`` with the texts of a batch, the shared key and a callable that returns
            True once every caller of the batch has gone (it may then stop and raise). It must
            return one result per text, in order.
        max_batch_size: most texts in one batch (a single larger request is decoded alone).
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue: most texts waiting; beyond it :meth:`submit` raises :class:`QueueFull`.
        enabled: False decodes every request alone (no batching).
    """

    def __init__(
        self,
        decode: Callable[[list[str], Any, Callable[[], bool]], Sequence[Result]],
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
        enabled: bool = True,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.decode = decode
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.enabled = enabled
        self.stats = BatchStats()
        self._waiting: collections.deque[_Job] = collections.deque()
        self._arrival: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._busy_since: float | None = None  # when the decode under way started
        # One thread runs the model: torch already uses every core inside one call, and two
        # concurrent decodes would only fight over them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jumok-decode")

    # ---------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._worker is None:
            self._arrival = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop; requests still waiting get a ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        """The batching loop is alive (False before start, after stop, or if it crashed)."""
        return self._worker is not None and not self._worker.done()

    @property
    def waiting_texts(self) -> int:
        """Texts in the queue whose callers still wait (those who left do not fill it)."""
        return sum(len(job.texts) for job in self._waiting if not job.future.done())

    @property
    def busy_seconds(self) -> float:
        """How long the decode under way has run (0 when none is)."""
        return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    @property
    def oldest_wait_seconds(self) -> float:
        """How long the oldest request in the queue has waited, its caller gone or not: how far
        behind the worker is (0 when the queue is empty)."""
        return time.monotonic() - self._waiting[0].arrived if self._waiting else 0.0

    # ------------------------------------------------------------------------------- submit
    async def submit(self, texts: Sequence[str], key: Hashable) -> list[Result]:
        """Queue ``texts`` (decoded with settings ``key``) and wait for their results."""
        if self._worker is None:
            self.start()
        if self.waiting_texts + len(texts) > self.max_queue:
            raise QueueFull(f"{self.waiting_texts} texts are already waiting")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Job(list(texts), key, future))
        self._arrival.set()
        return await future

    # --------------------------------------------------------------------------------- loop
    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._arrival.clear()
                await self._arrival.wait()
            if self.enabled:
                await self._gather_company(self._waiting[0])
            batch = self._take_batch()
            await self._decode(batch)

    async def _gather_company(self, first: _Job) -> None:
        """Wait until the batch is full or the first request has waited ``max_wait``."""
        while self._compatible_texts(first.key) < self.max_batch_size:
            remaining = first.arrived + self.max_wait - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _compatible_texts(self, key: Hashable) -> int:
        return sum(len(job.texts) for job in self._waiting if job.key == key)

    def _take_batch(self) -> list[_Job]:
        """The oldest request, and (batching on) the later ones with its key that fit."""
        first = self._waiting.popleft()
        batch, size = [first], len(first.texts)
        if not self.enabled:
            return batch
        kept: collections.deque[_Job] = collections.deque()
        while self._waiting:
            job = self._waiting.popleft()
            if job.key == first.key and size + len(job.texts) <= self.max_batch_size:
                batch.append(job)
                size += len(job.texts)
            else:
                kept.append(job)
        self._waiting = kept
        return batch

    async def _decode(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # a caller may have gone
        if not batch:
            return
        texts = [text for job in batch for text in job.texts]
        self.stats.add(len(batch), len(texts))

        def everyone_gone() -> bool:
            # Read from the worker thread: Future.done() reads one attribute, and a stale
            # answer only means one more decoding step.
            return all(job.future.done() for job in batch)

        try:
            results = await self._in_worker(texts, batch[0].key, everyone_gone)
        except Exception as err:  # noqa: BLE001 - handed to the caller(s)
            if len(batch) == 1:
                _settle(batch[0].future, error=err)
                return
            # One request's text broke the batch: decode each alone so only that one fails.
            for job in batch:
                await self._decode([job])
            return
        start = 0
        for job in batch:
            _settle(job.future, value=list(results[start : start + len(job.texts)]))
            start += len(job.texts)

    async def _in_worker(self, texts: list[str], key: Hashable, should_stop) -> Sequence[Result]:
        """``decode`` in the worker thread, timed for :attr:`busy_seconds`."""
        self._busy_since = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self.decode, texts, key, should_stop
            )
        finally:
            self._busy_since = None


def _settle(future: asyncio.Future, value: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
