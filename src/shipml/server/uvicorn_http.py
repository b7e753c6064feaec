"""The HTTP/1 protocol shipml runs under uvicorn: uvicorn's httptools protocol, plus what it lacks against slow
and numerous clients (granian gets the same from its own settings, see ``rsgi.py``):

- **A header timeout** (``limits.header_timeout_s``): a connection that has not sent a request's complete
  headers within that time of its start, or of the previous answer on it, is closed. uvicorn's own keep-alive
  timer is no guard: any byte restarts it, so a client sending a header a byte a second held its connection for
  ever.
- **A cap on open connections** (``limits.max_connections``): past it, a new connection waits unread, in order
  of arrival, until one closes; then its header timeout starts. As under granian, whose connections past the cap
  wait in the listen backlog: the waiting list is as long as the backlog (2,048), a connection past it is
  closed at once.
- **While draining** (after SIGTERM), every answer carries ``Connection: close`` and its connection is closed
  after it, so clients reconnect elsewhere before the listener closes instead of being reset by the close.

The body timeout is the app's (``http.ReadDeadlines``): 408, and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("shipml.server")

#: Connections past the cap that may wait for a place (uvicorn's and granian's listen backlog).
MAX_WAITING = 2048


class ConnectionGuard:
    """The connections of one server: those being served (at most ``max_connections``), those waiting for a
    place, and among the served ones those waiting for a request's headers, with their deadlines. Every deadline
    is its start plus the same timeout, so the oldest entry is the first to expire."""

    def __init__(self, header_timeout_s: float, max_connections: int, draining: Callable[[], bool]) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.draining = draining
        self.tick_s = min(0.5, header_timeout_s / 4)
        self.served = 0
        self.queued: dict[GuardedHttpToolsProtocol, None] = {}  # waiting for a place, oldest first
        self.heads: dict[GuardedHttpToolsProtocol, float] = {}  # waiting for headers -> deadline, oldest first
        self._timer: asyncio.Task[None] | None = None
        self._warned = 0.0

    def arrived(self, connection: GuardedHttpToolsProtocol) -> None:
        if self.served < self.max_connections:
            self._serve(connection)
        elif len(self.queued) < MAX_WAITING:
            self.queued[connection] = None
            self._warn()
        else:
            connection.transport.close()

    def left(self, connection: GuardedHttpToolsProtocol) -> None:
        if not connection.placed:  # it never had a place
            self.queued.pop(connection, None)
            return
        self.heads.pop(connection, None)
        self.served -= 1
        while self.queued and self.served < self.max_connections:
            waiting = next(iter(self.queued))
            del self.queued[waiting]
            if not waiting.transport.is_closing():
                self._serve(waiting)
                waiting.take_place()

    def _serve(self, connection: GuardedHttpToolsProtocol) -> None:
        connection.placed = True
        self.served += 1
        self.wait_for_headers(connection)

    def wait_for_headers(self, connection: GuardedHttpToolsProtocol) -> None:
        self.heads.pop(connection, None)  # to the end: the newest
        self.heads[connection] = time.monotonic() + self.header_timeout_s
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._expire())

    def headers_arrived(self, connection: GuardedHttpToolsProtocol) -> None:
        self.heads.pop(connection, None)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned >= 10:
            self._warned = now
            log.warning("%d connections open, the cap (limits.max_connections): new ones wait for a place",
                        self.served)

    async def _expire(self) -> None:
        try:
            while self.heads:
                await asyncio.sleep(self.tick_s)
                now = time.monotonic()
                expired = []
                for connection, deadline in self.heads.items():
                    if deadline > now:
                        break
                    expired.append(connection)
                for connection in expired:
                    del self.heads[connection]
                    connection.transport.close()
        finally:
            self._timer = None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a :class:`ConnectionGuard` (see :func:`protocol_for`)."""

    guard: ClassVar[ConnectionGuard]
    placed = False  # served (else waiting for a place, or refused)
    held = b""  # what came while waiting for a place

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.arrived(self)

    def data_received(self, data: bytes) -> None:
        if self.placed:
            super().data_received(data)
        else:  # uvloop starts reading after connection_made: pausing there would not hold
            self.held += data
            self.transport.pause_reading()

    def take_place(self) -> None:
        """Served at last: read what came meanwhile, then what comes next."""
        held, self.held = self.held, b""
        if held:
            super().data_received(held)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.left(self)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.guard.headers_arrived(self)
        super().on_headers_complete()
        if self.guard.draining():
            self.cycle.keep_alive = False  # uvicorn adds Connection: close and closes after the answer

    def on_response_complete(self) -> None:
        next_is_waiting = not self.pipeline  # else a pipelined request, its headers in, starts now
        super().on_response_complete()
        if next_is_waiting and not self.transport.is_closing():
            self.guard.wait_for_headers(self)


def protocol_for(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server (uvicorn makes one instance per connection)."""
    attributes: dict[str, Any] = {"guard": guard}
    return type("ShipmlHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)
