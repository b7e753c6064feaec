"""shipml's HTTP/1 server under uvicorn: uvicorn runs the process (sockets, workers, signals, lifespan, graceful
shutdown) and httptools parses; the request/response cycle is shipml's own. Each request goes from the parser's
callbacks to the app's transport-free handlers (``web.Request`` -> ``web.Reply``, as under granian's RSGI) and
its answer leaves in one write. uvicorn's ASGI cycle (a scope dict, an Event, receive/send messages, two regular
expressions per response header, a keep-alive timer per answer) cost ~11 µs per request on a machine where the
whole bare-floor request took ~20 µs; this cycle costs ~1.5 µs.

What the cycle keeps of HTTP/1.1, as uvicorn's did:

- **Keep-alive** unless the client says ``Connection: close`` or speaks HTTP/1.0; an answer written before its
  request's body was all read (an early 401, 404 or 413) closes the connection, so no unread body is ever parsed
  as a request.
- **Pipelining**: requests are answered one at a time, in order; while one is served, reading pauses after the
  next one's headers.
- ``Expect: 100-continue`` gets its interim answer when the app starts reading the body, so a refused request
  never makes the client send it.
- A ``HEAD`` answer has the headers (Content-Length included) and no body; every answer has a ``Date``.
- A request's head may hold 64 KiB (``MAX_HEAD_BYTES``): past it, 431 and the connection closed.
- A client that stops reading answers: the next answer waits until the transport drains.

And what it adds against slow and numerous clients (granian gets the same from its own settings, see ``rsgi.py``):

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
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from httptools import parse_url
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shipml.server import http as web
from shipml.server.auth import gated

if TYPE_CHECKING:
    from shipml.server.app import ShipmlApp
    from shipml.server.auth import TokenGate

log = logging.getLogger("shipml.server")

#: Connections past the cap that may wait for a place (uvicorn's and granian's listen backlog).
MAX_WAITING = 2048
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n" \
    b"connection: close\r\n\r\nInvalid HTTP request."
#: The most a request's head (request line and headers) may hold: httptools keeps a header whole in memory
#: however long it grows, so a client sending one endless header would fill it. Past this (give or take one
#: read), 431 and the connection closed.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n" \
    b"content-length: 32\r\nconnection: close\r\n\r\nRequest header fields too large."
_INTERNAL_ERROR = web.Reply(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")
_UNREADABLE_PATH = web.Reply(400, b'{"error":"the request target is not a path"}')


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
        self.queued: dict[ShipmlHttpProtocol, None] = {}  # waiting for a place, oldest first
        self.heads: dict[ShipmlHttpProtocol, float] = {}  # waiting for headers -> deadline, oldest first
        self._timer: asyncio.Task[None] | None = None
        self._warned = 0.0

    def arrived(self, connection: ShipmlHttpProtocol) -> None:
        if self.served < self.max_connections:
            self._serve(connection)
        elif len(self.queued) < MAX_WAITING:
            self.queued[connection] = None
            self._warn()
        else:
            connection.transport.close()

    def left(self, connection: ShipmlHttpProtocol) -> None:
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

    def _serve(self, connection: ShipmlHttpProtocol) -> None:
        connection.placed = True
        self.served += 1
        self.wait_for_headers(connection)

    def wait_for_headers(self, connection: ShipmlHttpProtocol) -> None:
        self.heads.pop(connection, None)  # to the end: the newest
        self.heads[connection] = time.monotonic() + self.header_timeout_s
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._expire())

    def headers_arrived(self, connection: ShipmlHttpProtocol) -> None:
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


class DirectRequest:
    """One request on a connection, as the parser gives it: an ``web.Request`` for the handlers. Header names
    are lower case, a repeated header keeps its first value (every ``Authorization`` value is kept for the token
    gate); ``path`` is percent-decoded, without the query."""

    __slots__ = ("authorization", "complete", "disconnected", "expect_continue", "headers", "keep_alive", "method",
                 "parts", "path", "protocol", "size", "token_id", "waiter")

    def __init__(self, protocol: ShipmlHttpProtocol) -> None:
        self.protocol = protocol
        self.headers: dict[str, str] = {}
        self.authorization: list[str] = []
        self.method = ""
        self.path = ""
        self.token_id: str | None = None
        self.keep_alive = True
        self.expect_continue = False
        self.parts: list[bytes] = []
        self.size = 0  # body bytes received (kept only up to the app's limit)
        self.complete = False  # the whole body is in
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None  # set when more of the body or the end comes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    async def body(self, limit: int) -> bytes:
        web.check_length(self.headers.get("content-length"), limit)
        if not self.complete:
            await self.protocol.shipml_app.read_deadlines.read(self._rest(limit))
        if self.size > limit:
            raise web.too_large(limit)
        parts = self.parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _rest(self, limit: int) -> None:
        protocol = self.protocol
        if self.expect_continue:
            self.expect_continue = False
            protocol.transport.write(_CONTINUE)
        while not self.complete:
            if self.disconnected:
                raise web.ClientDisconnected
            if self.size > limit:
                raise web.too_large(limit)
            self.waiter = protocol.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ShipmlHttpProtocol(HttpToolsProtocol):
    """One connection: uvicorn's httptools protocol (parser, flow control, its place in uvicorn's server) with
    shipml's request cycle, under a :class:`ConnectionGuard` (see :func:`protocol_for`)."""

    guard: ClassVar[ConnectionGuard]
    shipml_app: ClassVar[ShipmlApp]  # called directly (uvicorn's own ``app`` is the ASGI app, for the lifespan)
    gate: ClassVar[TokenGate | None]
    placed = False  # served (else waiting for a place, or refused)
    held = b""  # what came while waiting for a place
    parsing: DirectRequest | None = None  # the request whose bytes the parser is reading
    active: DirectRequest | None = None  # the request being answered
    closing = False  # close once the active request is answered (uvicorn's shutdown)
    began = False  # a request began in the read being parsed
    head_bytes = 0  # bytes of the current request's head read so far (see MAX_HEAD_BYTES)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.queue: deque[DirectRequest] = deque()  # pipelined requests, headers in, waiting their turn
        self.guard.arrived(self)

    def data_received(self, data: bytes) -> None:
        if not self.placed:  # uvloop starts reading after connection_made: pausing there would not hold
            self.held += data
            self.transport.pause_reading()
            return
        self.began = False
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools' parse errors and upgrade requests (not served)
            if not self.transport.is_closing():
                log.debug("invalid HTTP request: %s", exc)
                self.transport.write(_BAD_REQUEST)
                self.transport.close()
            return
        parsing = self.parsing
        if parsing is not None and not parsing.method and not self.began:  # all of it is head: count it
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(_HEAD_TOO_LARGE)
                self.transport.close()

    def take_place(self) -> None:
        """Served at last: read what came meanwhile, then what comes next."""
        held, self.held = self.held, b""
        self.placed = True
        if held:
            self.data_received(held)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.left(self)
        self.connections.discard(self)
        for request in (self.active, self.parsing, *self.queue):
            if request is not None:
                request.disconnected = True
                request.wake()
        self.queue.clear()
        self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def shutdown(self) -> None:
        """uvicorn stops: close now when idle, else once the request being answered is."""
        if self.active is None:
            self.transport.close()
        else:
            self.closing = True

    # -- parser callbacks -------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.parsing = DirectRequest(self)
        self.url = b""
        self.began = True  # the head's bytes in this read are not counted (at most one read's worth)
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        key = name.decode("latin-1").lower()
        text = value.rstrip(b" \t").decode("latin-1")  # llhttp keeps trailing whitespace (RFC 9110 5.5: not part)
        if key == "authorization":
            request.authorization.append(text)
        elif key == "expect" and text.lower() == "100-continue":
            request.expect_continue = True
        request.headers.setdefault(key, text)

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        self.guard.headers_arrived(self)
        parser = self.parser
        request.method = parser.get_method().decode("ascii")
        request.path = _path(self.url)
        request.keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"  # draining: _write
        if self.active is None:
            self._start(request)
        else:  # pipelined: its turn comes when the active one is answered
            self.queue.append(request)
            self.flow.pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        if request.size <= self.shipml_app.max_body:  # past the limit the body is only counted: it will be refused
            request.parts.append(body)
        request.size += len(body)
        request.wake()

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.complete = True
        request.wake()
        self.parsing = None

    # -- the cycle ------------------------------------------------------------------------------------------
    def _start(self, request: DirectRequest) -> None:
        self.active = request
        task = self.loop.create_task(self._answer(request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer(self, request: DirectRequest) -> None:
        reply: web.Reply | None
        try:
            if not request.path:
                reply = _UNREADABLE_PATH
            elif self.gate is None:
                reply = await self.shipml_app.respond(request)
            else:
                reply = await gated(self.gate, request, request.authorization, self.shipml_app.respond)
        except asyncio.CancelledError:  # uvicorn's graceful shutdown timed out
            self.transport.close()
            raise
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            reply = _INTERNAL_ERROR
        if reply is None or request.disconnected:  # the client went away
            return
        if self.flow.write_paused:  # the client does not read its answers: wait until it does
            await self.flow.drain()
            if request.disconnected:
                return
        try:
            self._write(request, reply)
        except Exception:  # nothing was written
            log.exception("request %s %s: its answer could not be written", request.method, request.path)
            request.keep_alive = False
            self._write(request, _INTERNAL_ERROR)

    def _write(self, request: DirectRequest, reply: web.Reply) -> None:
        body = reply.body
        keep = request.keep_alive and request.complete and not self.closing \
            and not web.closes_connection(reply.status) and not self.guard.draining()
        head = f"content-type: {reply.content_type}\r\ncontent-length: {len(body)}\r\n"
        if reply.headers:
            for name, value in reply.headers:
                if not value.isprintable():  # never a header split by a value the client sent
                    raise ValueError(f"unprintable value of response header {name}")
            head += "".join([f"{name}: {value}\r\n" for name, value in reply.headers])
        if not keep:
            head += "connection: close\r\n"
        data = STATUS_LINE[reply.status] + head.encode("latin-1")  # the status line as uvicorn writes it
        for key, raw in self.server_state.default_headers:  # the date, updated each second by uvicorn
            data += key + b": " + raw + b"\r\n"
        data += b"\r\n"
        self.transport.write(data if request.method == "HEAD" else data + body)
        self.active = None
        if not keep:
            self.transport.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
            if not self.queue:
                self.flow.resume_reading()
        else:
            self.guard.wait_for_headers(self)
            self.flow.resume_reading()


def _path(url: bytes) -> str:
    """The request target's path, percent-decoded ('' when it cannot be read)."""
    try:
        if b"?" in url or not url.startswith(b"/"):
            url = parse_url(url).path or b""
        path = url.decode("ascii")
    except Exception:
        return ""
    return urllib.parse.unquote(path) if "%" in path else path


def protocol_for(guard: ConnectionGuard, app: ShipmlApp, gate: TokenGate | None) -> type[ShipmlHttpProtocol]:
    """The protocol class for one server (uvicorn makes one instance per connection)."""
    attributes: dict[str, Any] = {"guard": guard, "shipml_app": app, "gate": gate}
    return type("ShipmlConnection", (ShipmlHttpProtocol,), attributes)
