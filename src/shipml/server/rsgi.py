"""Serve the ASGI app under granian (RSGI interface), the leaner of the two HTTP backends.

:class:`RSGIAdapter` exposes an ASGI *http* callable (:class:`~shipml.server.app.ShipmlApp`, or the app behind
:class:`~shipml.server.auth.AuthMiddleware`) as an RSGI app: granian parses HTTP in Rust and calls it once per
request with a scope object and a protocol object; the adapter translates both to ASGI and back.

:func:`serve_granian` runs it with granian's embedded server on uvloop, with the lifecycle of the uvicorn
backend (``runner.DrainingServer``): models load at start-up (before the port opens when there are several
workers); on SIGTERM or SIGINT readiness turns 503 at once while requests keep being served for
``drain_delay_s``; then the listener closes, idle keep-alive connections are closed, in-flight requests finish
(cancelled after ``graceful_timeout_s``) and the process exits 0. A second signal exits at once.

What granian does differently from uvicorn, as found by test (granian 2.8):

- ``scope.path`` arrives percent-decoded, like ASGI's ``path``; the undecoded target is not available, so
  ``raw_path`` is the path quoted again (``%2F`` comes back as ``/``).
- A header value that is not visible ASCII is dropped before the app sees it.
- Every listening socket is bound with ``SO_REUSEPORT``: several workers simply bind the same port and the
  kernel spreads connections over them. :func:`listen_address` checks the port first, so a second server on a
  port in use fails instead of silently taking part of its traffic.
- Responses carry ``server: granian`` and ``date`` headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shipml.errors import ConflictError

if TYPE_CHECKING:
    from granian._granian import RSGIHTTPProtocol as HTTPProtocol
    from granian.rsgi import Scope

    from shipml.server.app import ShipmlApp
    from shipml.spec import DeploymentSpec

log = logging.getLogger("shipml.server")

ASGIApp = Any  # an ASGI callable: (scope, receive, send) -> awaitable

_ASGI = {"version": "3.0", "spec_version": "2.3"}
#: A body with a Content-Length up to this size is read in one call; longer or chunked bodies arrive chunk by
#: chunk, so an app that counts bytes can stop reading (413) before the whole body is in memory.
WHOLE_BODY_MAX = 1 << 20
#: Characters kept as they are when quoting the decoded path back into ``raw_path`` (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=~"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.\-~:@!$&'()*+,;=]*")
_DISCONNECT = {"type": "http.disconnect"}
_CACHE_SIZE = 4096
_INTERNAL_ERROR = b"Internal Server Error"


def _address(value: str) -> tuple[str, int] | None:
    """``"127.0.0.1:8000"`` or ``"[::1]:8000"`` as ASGI's ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _raw_path(path: str) -> bytes:
    """The decoded path quoted again: granian gives no undecoded request target."""
    return path.encode() if _PLAIN_PATH.fullmatch(path) else quote(path, safe=_PATH_SAFE).encode()


def _remember(cache: dict[str, Any], key: str, value: Any) -> Any:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value


class _Exchange:
    """One request: the ASGI ``receive`` and ``send`` over an RSGI protocol object."""

    __slots__ = ("chunks", "headers", "length", "protocol", "received", "responded", "started", "status",
                 "stream")

    def __init__(self, protocol: HTTPProtocol, length: int | None) -> None:
        self.protocol = protocol
        self.length = length  # the declared Content-Length; -1 once the body has been read
        self.chunks: Any = None  # the body iterator, when streaming it
        self.received = 0
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.responded = False
        self.stream: Any = None  # the response transport, for a body sent in several parts

    async def receive(self) -> dict[str, Any]:
        length = self.length
        if length == -1:  # the body is read: wait until the client goes (ASGI), unless the answer is sent already
            if not self.responded:
                await self.protocol.client_disconnect()
            return _DISCONNECT
        if self.chunks is None and length is not None and length <= WHOLE_BODY_MAX:
            self.length = -1
            try:
                body = await self.protocol()
            except RuntimeError:  # RSGIProtocolClosed: the client went away mid-body
                return _DISCONNECT
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._next_chunk()

    async def _next_chunk(self) -> dict[str, Any]:
        if self.chunks is None:
            self.chunks = self.protocol.__aiter__()
        try:
            while True:  # granian marks the end of the body (and a broken one) with empty chunks: skip them
                chunk = await self.chunks.__anext__()
                if chunk:
                    self.received += len(chunk)
                    return {"type": "http.request", "body": chunk, "more_body": True}
        except StopAsyncIteration:
            pass
        except RuntimeError:
            return _DISCONNECT
        declared, self.length = self.length, -1
        if declared is not None and self.received < declared:  # the stream ended early: the client went away
            return _DISCONNECT
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
            self.started = True
        elif kind == "http.response.body":
            if not self.started or self.responded:
                raise RuntimeError("ASGI: http.response.body before http.response.start, or after the last body")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.stream is None and not more:
                self.responded = True
                self.protocol.response_bytes(self.status, self.headers, body)
                return
            if self.stream is None:
                self.stream = self.protocol.response_stream(self.status, self.headers)
            self.responded = not more
            if body:
                try:
                    await self.stream.send_bytes(body)
                except RuntimeError:  # the client went away: nothing more to send (as uvicorn)
                    self.responded = True


class RSGIAdapter:
    """An ASGI http callable as an RSGI app. ``inflight`` holds the tasks of the requests being served."""

    __slots__ = ("_addresses", "_raw_paths", "app", "inflight")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inflight: set[asyncio.Task[Any]] = set()
        # Parsing the same client address (one per connection) and quoting the same few paths for every request
        # costs more than a dict lookup: both are remembered, in bounded caches.
        self._addresses: dict[str, tuple[str, int] | None] = {}
        self._raw_paths: dict[str, bytes] = {}

    def asgi_scope(self, scope: Scope, headers: Any) -> dict[str, Any]:
        """The ASGI http scope of an RSGI request scope (``headers``: its ``scope.headers``)."""
        path, client, server = scope.path, scope.client, scope.server
        addresses = self._addresses
        raw_path = self._raw_paths.get(path)
        if raw_path is None:
            raw_path = _remember(self._raw_paths, path, _raw_path(path))
        client_address = addresses.get(client)
        if client_address is None:
            client_address = _remember(addresses, client, _address(client))
        server_address = addresses.get(server)
        if server_address is None:
            server_address = _remember(addresses, server, _address(server))
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            "client": client_address,
            "server": server_address,
        }

    async def __rsgi__(self, scope: Scope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":  # websockets are switched off; nothing else is served
            return
        headers = scope.headers
        length = headers.get("content-length")
        exchange = _Exchange(protocol, int(length) if length is not None and length.isdigit() else None)
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            await self.app(self.asgi_scope(scope, headers), exchange.receive, exchange.send)
        except Exception:
            log.exception("the ASGI app failed on %s %s", scope.method, scope.path)
        finally:
            if task is not None:
                self.inflight.discard(task)
        if not exchange.responded and exchange.stream is None:  # the app returned (or failed) without answering
            protocol.response_bytes(500, [("content-type", "text/plain; charset=utf-8")], _INTERNAL_ERROR)

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
        self.app.draining = True
        self.app.metrics.ready.set(0)
        log.info("signal %s: draining for %.1fs, then graceful shutdown", sig, self.app.spec.server.drain_delay_s)


async def _serve(spec: DeploymentSpec, address: str) -> int:
    """Serve until a signal says stop; the exit code."""
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    from shipml.server.runner import build_app

    app, asgi = build_app(spec)
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
    adapter = RSGIAdapter(asgi)
    server = Server(adapter, address=address, port=spec.server.port, interface=Interfaces.RSGI,
                    http=HTTPModes.http1, websockets=False, runtime_threads=1, backlog=2048,
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
    code = await _stop(server, serving, adapter, spec.server.graceful_timeout_s)
    await app.shutdown()
    return code


async def _stop(server: Any, serving: asyncio.Task[None], adapter: RSGIAdapter, timeout_s: float) -> int:
    """Close the listener and idle connections, and wait for the requests in flight (cancelled after
    ``timeout_s``). granian's ``serve()`` returns once its worker has finished every request."""
    server.stop()
    _, pending = await asyncio.wait({serving}, timeout=timeout_s)
    if pending:
        count = adapter.cancel_inflight()
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
