"""Serve the app under granian, through granian's own RSGI protocol (no ASGI layer in between).

:class:`ShipmlRSGI` is the RSGI app: granian parses HTTP in Rust and calls it once per request with a scope
object and a protocol object; it wraps them in an :class:`RsgiRequest` (the handlers' transport-free
:class:`~shipml.server.http.Request`), applies the token gate when auth is on, and sends the handler's
:class:`~shipml.server.http.Reply` in one call. Translating each request to ASGI and back cost ~20 µs, more
than granian's own work.

:func:`serve_granian` runs it with granian's embedded server on uvloop, with the lifecycle of the uvicorn
backend (``runner.DrainingServer``): models load at start-up (before the port opens when there are several
workers); on SIGTERM or SIGINT readiness turns 503 at once while requests keep being served for
``drain_delay_s``; then the listener closes, idle keep-alive connections are closed, in-flight requests finish
(cancelled after ``graceful_timeout_s``) and the process exits 0. A second signal exits at once.

What granian does differently from uvicorn, as found by test (granian 2.8):

- ``scope.path`` arrives percent-decoded (as ASGI's ``path``); the undecoded request target is not available.
- A header value that is not visible ASCII is dropped before the app sees it.
- Every listening socket is bound with ``SO_REUSEPORT``: several workers simply bind the same port and the
  kernel spreads connections over them. :func:`listen_address` checks the port first, so a second server on a
  port in use fails instead of silently taking part of its traffic.
- Responses carry ``server: granian`` and ``date`` headers; granian sets Content-Length itself.
- Against slow clients: hyper's header read timeout (``limits.header_timeout_s``; its clock also runs while a
  keep-alive connection is idle, so it is the idle timeout too) closes the connection; granian's
  ``backpressure`` is the cap on open connections (``limits.max_connections``); the body deadline is
  :class:`~shipml.server.http.ReadDeadlines` (408). An answer with ``Connection: close`` (while draining, and
  every 408) makes hyper close its connection after it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from shipml.errors import ConflictError
from shipml.server import http
from shipml.server.auth import gated

if TYPE_CHECKING:
    from granian._granian import RSGIHTTPProtocol as HTTPProtocol
    from granian.rsgi import Scope

    from shipml.server.app import ShipmlApp
    from shipml.server.auth import TokenGate
    from shipml.spec import DeploymentSpec

log = logging.getLogger("shipml.server")

_INTERNAL_ERROR = http.Reply(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")


class RsgiRequest:
    """A :class:`~shipml.server.http.Request` over an RSGI scope and protocol; ``deadlines``: the body deadline.

    The body is read chunk by chunk, each one copied out of granian as it comes, and the read stops at the
    declared Content-Length (one call for a body that came with its headers, as fast as granian's whole-body
    read). granian's whole-body read keeps every chunk as hyper read it, and each read of a slow client pins a
    buffer of 8 KB: a body sent a byte a second held ~120 KB after 15 s, and ~2,000 such clients ~250 MB."""

    __slots__ = ("deadlines", "headers", "method", "path", "protocol", "token_id")

    def __init__(self, scope: Scope, protocol: HTTPProtocol, deadlines: http.ReadDeadlines | None = None) -> None:
        self.protocol = protocol
        self.headers = scope.headers
        self.method: str = scope.method
        self.path: str = scope.path
        self.token_id: str | None = None
        self.deadlines = deadlines

    def header(self, name: str) -> str | None:
        value: str | None = self.headers.get(name)
        return value

    async def body(self, limit: int) -> bytes:
        length = http.check_length(self.headers.get("content-length"), limit)
        if length == 0:
            return b""
        if self.deadlines is None:
            return await self._read(length, limit)
        return await self.deadlines.read(self._read(length, limit))

    async def _read(self, length: int | None, limit: int) -> bytes:
        first = b""
        rest: bytearray | None = None
        size = 0
        stream = self.protocol.__aiter__()
        while length is None or size < length:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            except RuntimeError as exc:  # RSGIProtocolClosed: the client went away
                raise http.ClientDisconnected from exc
            if not chunk:  # granian marks the end of the body (and a broken one) with an empty chunk
                continue
            size += len(chunk)
            if size > limit:
                raise http.too_large(limit)
            if rest is not None:
                rest += chunk
            elif first:
                rest = bytearray(first)
                rest += chunk
            else:
                first = chunk
        if length is not None and size < length:  # the stream ended early: the client went away
            raise http.ClientDisconnected
        return first if rest is None else bytes(rest)


class ShipmlRSGI:
    """The RSGI app: every request through ``gate`` (when auth is on), then :meth:`ShipmlApp.respond`.
    ``inflight`` holds the tasks of the requests being served."""

    __slots__ = ("app", "gate", "inflight")

    def __init__(self, app: ShipmlApp, gate: TokenGate | None = None) -> None:
        self.app = app
        self.gate = gate
        self.inflight: set[asyncio.Task[Any]] = set()

    async def __rsgi__(self, scope: Scope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":  # websockets are switched off; nothing else is served
            return
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            reply = await self._reply(scope, RsgiRequest(scope, protocol, self.app.read_deadlines))
        except Exception:
            log.exception("request %s %s failed", scope.method, scope.path)
            reply = _INTERNAL_ERROR
        finally:
            if task is not None:
                self.inflight.discard(task)
        if reply is not None:  # None: the client went away
            headers = [("content-type", reply.content_type)]
            if reply.headers:
                headers += reply.headers
            if self.app.draining or http.closes_connection(reply.status):
                headers.append(("connection", "close"))  # hyper closes the connection after this answer
            protocol.response_bytes(reply.status, headers, reply.body)

    async def _reply(self, scope: Scope, request: RsgiRequest) -> http.Reply | None:
        if self.gate is None:
            return await self.app.respond(request)
        values = [v for k, v in scope.headers.items() if k == "authorization"]
        return await gated(self.gate, request, values, self.app.respond)

    def cancel_inflight(self) -> int:
        tasks = list(self.inflight)
        for task in tasks:
            task.cancel()
        return len(tasks)


def listen_address(host: str, port: int) -> str:
    """The IP address to give granian for ``host`` (granian takes no names), once ``port`` is known to be free.

    Granian binds with SO_REUSEPORT, so a second server on a port in use would share its traffic rather than
    fail; this probe binds without it and fails as uvicorn would."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # sockets in TIME_WAIT do not count
            probe.bind(address)
    except OSError as exc:
        raise ConflictError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return str(address[0])


def serve_granian(spec: DeploymentSpec, address: str | None = None) -> None:
    """Serve ``spec`` under granian in this process until a signal says stop. Blocks.

    ``address``: the IP address to bind, checked already by :func:`listen_address` (the parent process does it
    once when there are several workers: their sockets share the port)."""
    import uvloop

    if address is None:
        address = listen_address(spec.server.host, spec.server.port)
    code = uvloop.run(_serve(spec, address))
    if code:
        sys.exit(code)


class _Signals:
    """The first SIGTERM/SIGINT starts draining; a second one exits at once."""

    def __init__(self, app: ShipmlApp) -> None:
        self.app = app
        self.stop = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.received, sig)

    def received(self, sig: int) -> None:
        if self.stop.is_set():  # exit code 0, as uvicorn's forced exit
            log.warning("signal %s again: exiting at once", sig)
            logging.shutdown()
            os._exit(0)
        self.stop.set()
        self.app.begin_drain(f"signal {sig}")


async def _serve(spec: DeploymentSpec, address: str) -> int:
    """Serve until a signal says stop; the exit code."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    from shipml.server.runner import build_parts, connection_cap

    app, gate = build_parts(spec)
    signals = _Signals(app)
    signals.install(asyncio.get_running_loop())
    loading = app.start_loading()
    if app.load_before_serving:  # several workers: open the port once loaded
        await _first(loading, signals.stop.wait())
        if loading.done() and loading.exception() is not None:
            log.error("loading the models failed: %s", loading.exception())
            return 3  # as uvicorn when the lifespan start-up fails
    if signals.stop.is_set():
        await app.shutdown()
        return 0
    rsgi = ShipmlRSGI(app, gate)
    limits = spec.limits
    # backpressure: connections served at once; past it granian accepts no more until one closes. Its default
    # (the backlog, 2,048) let as many slow clients take every place, /healthz included.
    http1 = HTTP1Settings(header_read_timeout=max(1, round(limits.header_timeout_s * 1000)), keep_alive=True)
    server = Server(rsgi, address=address, port=spec.server.port, interface=Interfaces.RSGI,
                    http=HTTPModes.http1, websockets=False, runtime_threads=1, backlog=2048,
                    backpressure=connection_cap(limits.max_connections), http1_settings=http1,
                    log_level=LogLevels.error, log_dictconfig=_GRANIAN_LOGGING, log_access=False)
    serving = asyncio.get_running_loop().create_task(server.serve())
    await _first(serving, signals.stop.wait())
    if not serving.done():
        await _first(serving, asyncio.sleep(spec.server.drain_delay_s))
    if serving.done():  # granian stopped by itself: it could not listen, or its worker failed
        error = serving.exception()
        log.error("granian stopped unexpectedly%s", f": {error}" if error else "")
        await app.shutdown()
        return 1
    code = await _stop(server, serving, rsgi, spec.server.graceful_timeout_s)
    await app.shutdown()
    return code


async def _stop(server: Any, serving: asyncio.Task[None], rsgi: ShipmlRSGI, timeout_s: float) -> int:
    """Close the listener and idle connections, and wait for the requests in flight (cancelled after
    ``timeout_s``). granian's ``serve()`` returns once its worker has finished every request."""
    server.stop()
    _, pending = await asyncio.wait({serving}, timeout=timeout_s)
    if pending:
        count = rsgi.cancel_inflight()
        log.warning("graceful shutdown timed out after %.1fs: cancelled %d request(s)", timeout_s, count)
        _, pending = await asyncio.wait({serving}, timeout=5)
    return 1 if pending else 0


async def _first(task: asyncio.Future[Any], other: Any) -> None:
    """Wait until ``task`` is done or ``other`` (a coroutine) completes; ``task`` goes on running."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


#: granian's own log lines go to stderr: stdout carries the access log.
_GRANIAN_LOGGING: dict[str, Any] = {
    "handlers": {
        "console": {"formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
}
