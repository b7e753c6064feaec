"""The load engine: open-loop constant arrival rate (or closed-loop workers) over raw keep-alive HTTP/1.1.

Why not an HTTP client library: at thousands of requests a second a per-request client object, future and
header dict cost more than the server under test. Here each request's bytes are encoded once, a connection is an
``asyncio.Protocol`` with an ``httptools`` response parser, and completion is a callback that records three
numbers in preallocated numpy arrays and hands the connection its next request.

Open loop: request ``i`` is due at ``t0 + i / rate`` whatever happened to earlier requests, and its latency runs
from that due time, not from when it went on the wire. A request waiting for a free connection, or behind a
slow event loop, is still being waited for: a slow server cannot hide behind a slow client (coordinated
omission). The scheduler wakes at most once a millisecond (see ``_schedule``), so a request goes out up to
about a millisecond after it is due; that is counted too. Closed loop (``concurrency``): that many connections
send back to back; latency runs from sending.

Statuses: an HTTP status, or a negative code for a request that got no HTTP answer (see ``ERROR_KINDS`` in
``shipml.loadtest.plan``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import httptools
import numpy as np

from shipml.errors import ServiceUnavailable
from shipml.loadtest.plan import (
    ERR_CONNECT,
    ERR_PROTOCOL,
    ERR_RESET,
    ERR_TIMEOUT,
    Plan,
    Progress,
    ProgressCallback,
    Samples,
)

#: Due requests handed out per scheduler wake-up at most, so responses are read in between when it falls behind.
_DISPATCH_CHUNK = 512
#: The scheduler's wake-up period at most (uvloop timers have millisecond resolution).
_TICK_S = 0.001
#: Pause before a slot whose connection attempt failed tries again.
_RECONNECT_PAUSE_S = 0.01


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = -1  # index of the request in flight
        self.retired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.engine.fail(self, ERR_PROTOCOL)

    def on_message_complete(self) -> None:
        self.engine.answered(self, self.parser.get_status_code(), self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.engine.lost(self)


class _Engine:
    def __init__(self, plan: Plan, progress: ProgressCallback | None, progress_interval_s: float) -> None:
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.requests = list(plan.requests)
        n = plan.capacity
        self.n = n
        self.scheduled = np.full(n, np.nan)
        if plan.rate is not None:
            self.scheduled[:] = np.arange(n, dtype=np.float64) / plan.rate
        self.sent = np.full(n, np.nan)
        self.latency = np.full(n, np.nan)
        self.status = np.zeros(n, dtype=np.int16)
        self.order = np.zeros(n, dtype=np.int64)  # request indices in the order they finished
        self.issued = 0
        self.n_sent = 0
        self.done = 0
        self.queued = 0
        self.opened = 0
        self.waiting: deque[int] = deque()
        self.idle: list[_Connection] = []  # LIFO: at low rates the same few connections stay warm
        self.live: list[_Connection] = []
        self.free_slots = 0  # connections that may still be opened
        self.tasks: set[asyncio.Task[None]] = set()
        self.running = False
        self.t0 = 0.0
        self.end = 0.0
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.last_connect_error = ""
        self._last_snapshot = (0, 0.0)  # (done, time) at the previous progress snapshot

    # -- running ---------------------------------------------------------------------------------------------
    async def run(self) -> Samples:
        await self._connect_all()
        self.running = True
        self.t0 = time.perf_counter()
        self.end = self.plan.duration_s
        sweeper = self.loop.create_task(self._sweep())
        reporter = self.loop.create_task(self._report()) if self.progress else None
        try:
            if self.plan.open_loop:
                await self._schedule()
            else:
                self._start_workers()
                await self._closed_loop_end()
            self.running = False
            grace_end = self._now() + self.plan.grace_s
            while self.done < self.issued and self._now() < grace_end:
                await asyncio.sleep(min(0.01, max(0.0, grace_end - self._now())))
            self._give_up_on_the_rest()
            elapsed = self._now()
            if self.progress is not None:
                self.progress(self._snapshot())
        finally:
            self.running = False
            sweeper.cancel()
            if reporter is not None:
                reporter.cancel()
            self._close_all()
        return Samples(self.scheduled, self.sent, self.latency, self.status, self.issued, elapsed,
                       self.queued, self.opened)

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    async def _closed_loop_end(self) -> None:
        """Until the duration is over, or every request allowed is issued and answered."""
        while (left := self.end - self._now()) > 0 and not (self.issued >= self.n and self.done >= self.issued):
            await asyncio.sleep(min(left, 0.01))

    async def _schedule(self) -> None:
        """Issue request i at i / rate. Wakes at most once per timer tick (1 ms): spinning for sub-millisecond
        precision would burn the core the server under test may need. So a request may go out up to a tick
        late; that lateness is part of its latency, and the report shows it as the send lag."""
        rate = self.plan.rate or 1.0
        while self.issued < self.n:
            due = min(self.n, int(self._now() * rate) + 1)
            upto = min(due, self.issued + _DISPATCH_CHUNK)
            while self.issued < upto:
                self._dispatch(self.issued)
                self.issued += 1
            if self.issued >= self.n:
                break
            if upto < due:  # far behind: read answers, then carry on at once
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(max(self.issued / rate - self._now(), _TICK_S))

    def _start_workers(self) -> None:
        """Closed loop: every connection (or slot to open one in) takes its first request."""
        idle, self.idle = self.idle, []
        slots, self.free_slots = self.free_slots, 0
        for conn in idle:
            self._serve_next(conn)
        for _ in range(slots):
            self._serve_next(None)

    async def _connect_all(self) -> None:
        size = self.plan.pool_size
        conns = [_Connection(self) for _ in range(size)]
        results = await asyncio.gather(*(self._open(c) for c in conns), return_exceptions=True)
        for conn, result in zip(conns, results, strict=True):
            if result is None and not conn.retired:
                self.idle.append(conn)
            elif result is not None:
                self.free_slots += 1
        if not self.idle:
            plan = self.plan
            raise ServiceUnavailable(f"cannot connect to {plan.host}:{plan.port}: {self.last_connect_error}")

    async def _open(self, conn: _Connection) -> None:
        try:
            await asyncio.wait_for(self.loop.create_connection(lambda: conn, self.plan.host, self.plan.port),
                                   self.plan.timeout_s)
        except TimeoutError:
            self.last_connect_error = f"no connection within {self.plan.timeout_s:g} s"
            raise
        except OSError as exc:
            self.last_connect_error = exc.strerror or str(exc)
            raise
        self.opened += 1
        if not conn.retired:  # (it may have been closed by the server already)
            self.live.append(conn)

    async def _open_for(self, conn: _Connection, i: int) -> None:
        try:
            await self._open(conn)
        except (TimeoutError, OSError) as exc:
            self._finish(i, ERR_TIMEOUT if isinstance(exc, TimeoutError) else ERR_CONNECT)
            # A short pause before the slot is used again, so a server that is down is not hammered in a loop.
            self.loop.call_later(_RECONNECT_PAUSE_S, self._slot_freed)
            return
        if self.status[i] != 0:  # timed out while waiting for the connection: keep it for the next one
            self._release(conn)
        else:
            self._send(conn, i)

    # -- handing out requests -----------------------------------------------------------------------------
    def _dispatch(self, i: int) -> None:
        """Open loop: request ``i`` is due now."""
        if not self._place(i):
            self.waiting.append(i)
            self.queued += 1

    def _place(self, i: int) -> bool:
        """Send ``i`` on an idle connection, or open one for it in a free slot; False when all are busy.
        (So a request only ever waits when no connection is idle and no slot is free.)"""
        if self.idle:
            self._send(self.idle.pop(), i)
        elif self.free_slots:
            self.free_slots -= 1
            self._start_open(i)
        else:
            return False
        return True

    def _start_open(self, i: int) -> None:
        task = self.loop.create_task(self._open_for(_Connection(self), i))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _next_request(self) -> int:
        """A request that wants a connection now, or -1."""
        if self.waiting:
            return self.waiting.popleft()
        if not self.plan.open_loop and self.running and self.issued < self.n and self._now() < self.end:
            i = self.issued
            self.issued += 1
            self.scheduled[i] = self._now()
            return i
        return -1

    def _serve_next(self, conn: _Connection | None) -> None:
        """Give a connection (None: a slot to open one in) the next request, or park it."""
        i = self._next_request()
        if i < 0:
            if conn is not None:
                self.idle.append(conn)
            else:
                self.free_slots += 1
        elif conn is not None:
            self._send(conn, i)
        else:
            self._start_open(i)

    def _release(self, conn: _Connection) -> None:
        self._serve_next(conn)

    def _slot_freed(self) -> None:
        self._serve_next(None)

    def _send(self, conn: _Connection, i: int) -> None:
        transport = conn.transport
        if transport is None or transport.is_closing():  # closed by the server while idle: its slot opens anew
            if self._drop(conn):
                self._start_open(i)
            elif not self._place(i):
                self.waiting.appendleft(i)
            return
        conn.current = i
        self.sent[i] = self._now()
        self.n_sent += 1
        transport.write(self.requests[i % len(self.requests)])

    # -- answers and failures (called by connections) -----------------------------------------------------
    def _finish(self, i: int, status: int) -> None:
        if self.status[i] != 0:
            return
        self.latency[i] = self._now() - self.scheduled[i]
        self.status[i] = status
        self.order[self.done] = i
        self.done += 1

    def answered(self, conn: _Connection, status: int, keep_alive: bool) -> None:
        i, conn.current = conn.current, -1
        if i >= 0:
            self._finish(i, status)
        if keep_alive and not conn.retired:
            self._release(conn)
        else:
            self._retire(conn)

    def fail(self, conn: _Connection, kind: int) -> None:
        i, conn.current = conn.current, -1
        if i >= 0:
            self._finish(i, kind)
        self._retire(conn)

    def lost(self, conn: _Connection) -> None:
        i, conn.current = conn.current, -1
        if i >= 0:
            self._finish(i, ERR_RESET)
        self._retire(conn)

    def _retire(self, conn: _Connection) -> None:
        """Close a connection for good and let its slot serve the next request."""
        if self._drop(conn):
            self._slot_freed()

    def _drop(self, conn: _Connection) -> bool:
        """Close a connection for good; False when it was closed already."""
        if conn.retired:
            return False
        conn.retired = True
        if conn in self.idle:
            self.idle.remove(conn)
        if conn in self.live:
            self.live.remove(conn)
        if conn.transport is not None:
            conn.transport.abort()
        return True

    # -- background ---------------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        """Time out requests in flight (closing their connection) and requests queued too long."""
        timeout = self.plan.timeout_s
        interval = min(0.05, timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = self._now()
            for conn in list(self.live):
                i = conn.current
                if i >= 0 and now - self.sent[i] > timeout:
                    self.fail(conn, ERR_TIMEOUT)
            while self.waiting and now - self.scheduled[self.waiting[0]] > timeout:
                self._finish(self.waiting.popleft(), ERR_TIMEOUT)

    async def _report(self) -> None:
        callback = self.progress
        if callback is None:
            return
        while True:
            await asyncio.sleep(self.progress_interval_s)
            callback(self._snapshot())

    def _snapshot(self) -> Progress:
        """Where the run is; rate and p99 over the answers since the previous snapshot."""
        now, done = self._now(), self.done
        last_done, last_t = self._last_snapshot
        recent = self.order[last_done:done]
        answered = recent[self.status[recent] > 0]
        p99 = float(np.percentile(self.latency[answered], 99)) * 1000 if len(answered) else None
        finished = self.order[:done]
        errors = int(np.count_nonzero((self.status[finished] < 200) | (self.status[finished] >= 300)))
        self._last_snapshot = (done, now)
        return Progress(now, self.issued, self.n_sent, done, (done - last_done) / max(now - last_t, 1e-9), p99,
                        errors)

    # -- ending -------------------------------------------------------------------------------------------
    def _give_up_on_the_rest(self) -> None:
        """Requests still unanswered after the grace count as timeouts."""
        self.waiting.clear()
        for conn in list(self.live):
            if conn.current >= 0:
                self.fail(conn, ERR_TIMEOUT)
        pending = np.flatnonzero(self.status[: self.issued] == 0)
        self.latency[pending] = self._now() - self.scheduled[pending]
        self.status[pending] = ERR_TIMEOUT
        self.order[self.done: self.done + len(pending)] = pending
        self.done += len(pending)

    def _close_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.live):
            conn.retired = True
            if conn.transport is not None:
                conn.transport.close()
        self.live.clear()
        self.idle.clear()


async def run_plan_async(plan: Plan, progress: ProgressCallback | None = None,
                         progress_interval_s: float = 1.0) -> Samples:
    """Run ``plan`` in the running event loop."""
    return await _Engine(plan, progress, progress_interval_s).run()


def run_plan(plan: Plan, progress: ProgressCallback | None = None, progress_interval_s: float = 1.0) -> Samples:
    """Run ``plan`` in a fresh event loop (uvloop where installed) and return what every request did."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_plan_async(plan, progress, progress_interval_s))

