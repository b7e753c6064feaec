"""Adaptive batching: concurrent requests for one model are merged into one predict call.

Continuous batching: while a batch is being predicted (in a worker thread, off the event loop), new requests
queue; when the worker is free it takes everything waiting, up to ``max_batch_size`` rows. An idle server
therefore answers a lone request at once, and a busy one makes large batches by itself. While more requests
for the model are on their way (``coming``: the server counts requests whose bodies it is still reading), the
batcher also waits up to ``max_latency_ms`` (measured on the monotonic clock from the oldest request's arrival)
for them to join the batch; it never waits for requests that are not coming (that only left the CPU idle and,
with a few concurrent clients, doubled their latency).

A request past its deadline answers ``DeadlineExceeded`` at its deadline, queued or in flight, and is dropped
before inference when still queued; a full queue refuses new requests at once (``Overloaded``), so admitted
requests keep their latency. Deadlines are kept by one timer per batcher, armed for the earliest live deadline
(not one timer per request: that costs more than the rest of the batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shipml.errors import DeadlineExceeded, InferenceError, Overloaded

T = TypeVar("T")
R = TypeVar("R")
R2 = TypeVar("R2")


@dataclass(eq=False, slots=True)
class Pending(Generic[T, R]):
    payload: T
    rows: int
    deadline: float
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchStats:
    rows: int
    requests: int
    dropped: int
    seconds: float


Process = Callable[[Sequence[T]], Sequence["R | Exception"]]


class AdaptiveBatcher(Generic[T, R]):
    def __init__(self, process: Callable[[Sequence[T]], Sequence[R | Exception]], *, name: str,
                 max_batch_size: int = 1024, max_latency_ms: float = 2.0, max_queue: int = 2048,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self.process = process
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[Pending[T, R]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"shipml-{name}")
        self.coming = 0  # requests on their way to submit(), counted by the caller (see the module docstring)
        self.in_flight = 0
        self._forming: list[Pending[T, R]] = []  # the batch being collected
        self._running: list[Pending[T, R]] = []  # the batch being predicted
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0  # when the armed timer fires (monotonic)
        self._stopping = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        deadline = time.monotonic() + 60
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        while (self._queue or self.in_flight or self._forming) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[[], R2]) -> R2:
        """Run ``fn`` in the worker thread, between two batches (never at the same time as ``process``)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, payload: T, rows: int, deadline: float) -> R:
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"model {self.name} is overloaded ({len(self._queue)} requests queued); retry later")
        if self._task is None:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append(Pending(payload, rows, deadline, future))
        if self._expiry is None or deadline < self._expiry_at:  # the timer is armed for the earliest deadline
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire)
            self._expiry_at = deadline
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await future
        finally:
            del future  # the future holds its exception, whose traceback holds this frame: no reference cycle

    def _expire(self, granularity_s: float = 0.005) -> None:
        """Answer every request past its deadline (the timer fired), then re-arm for the earliest one left - at
        least ``granularity_s`` ahead, so that a stream of expiring requests costs one scan per few ms."""
        self._expiry = None
        now = time.monotonic()
        earliest = float("inf")
        for pending in itertools.chain(self._running, self._forming, self._queue):
            if pending.future.done():
                continue
            if pending.deadline <= now:
                pending.future.set_exception(DeadlineExceeded("no answer before the request's deadline"))
            elif pending.deadline < earliest:
                earliest = pending.deadline
        if earliest != float("inf"):
            delay = max(earliest - now, granularity_s)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)
            self._expiry_at = now + delay

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            if not batch:
                continue
            self.in_flight = len(batch)
            self._running = batch
            started = time.monotonic()
            try:
                outcomes = await loop.run_in_executor(self._executor, self.process, [p.payload for p in batch])
            except Exception as exc:  # the process function itself failed: every request in it fails
                outcomes = [exc] * len(batch)
            finally:
                self.in_flight = 0
                self._running = []
            if len(outcomes) != len(batch):
                outcomes = [InferenceError(f"model {self.name}: {len(outcomes)} outcomes for {len(batch)} requests")
                            ] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():  # the client gave up (timeout, disconnect)
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
            if self.on_batch is not None:
                self.on_batch(BatchStats(sum(p.rows for p in batch), len(batch), 0, time.monotonic() - started))

    async def _collect(self) -> list[Pending[T, R]]:
        batch: list[Pending[T, R]] = []
        self._forming = batch
        rows = 0
        dropped = 0
        wait_until = self._queue[0].enqueued + self.max_latency_s
        while True:
            while self._queue and (rows < self.max_batch_size or not batch):
                pending = self._queue[0]
                if batch and rows + pending.rows > self.max_batch_size:
                    break
                self._queue.popleft()
                if pending.future.done():  # its caller gave up (request timeout, disconnect): never predicted
                    dropped += 1
                    continue
                if time.monotonic() > pending.deadline:
                    dropped += 1
                    pending.future.set_exception(DeadlineExceeded("request deadline passed before inference"))
                    continue
                batch.append(pending)
                rows += pending.rows
            remaining = wait_until - time.monotonic()
            if rows >= self.max_batch_size or remaining <= 0 or (self._queue and batch) or self._stopping \
                    or self.coming <= 0:
                break
            assert self._wakeup is not None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        self._forming = []
        if dropped and self.on_batch is not None:
            self.on_batch(BatchStats(0, 0, dropped, 0.0))
        return batch
