"""A tiny real HTTP/1.1 server on 127.0.0.1, in a thread, whose behaviour per request is scripted.

Each request gets a :class:`Reply` from ``script(n)`` (n counts from 1): a status after a delay, or a failure
(close without answering, never answer, answer garbage). ``serial=True`` makes the server handle one request
at a time across all connections, like a single-threaded model server: with a fixed delay its throughput is
exactly 1/delay, which is what the open-loop accounting tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    close: bool = False  # answer with "connection: close" and close
    drop: bool = False  # close the connection without answering
    hang: bool = False  # never answer
    garbage: bool = False  # answer bytes that are not HTTP


def always_ok(n: int) -> Reply:
    return Reply()


@dataclass
class TinyServer:
    script: Callable[[int], Reply] = always_ok
    serial: bool = False
    get_json: dict[str, Any] = field(default_factory=dict)  # path -> JSON answered to a GET
    port: int = 0
    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    paths_seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._lock: asyncio.Lock | None = None
        self._hanging: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TinyServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("tiny server did not start")
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._hanging:
                writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._lock = asyncio.Lock()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                pairs = (line.partition(":") for line in lines[1:] if line)
                headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.headers_seen.append(headers)
                self.paths_seen.append(path)
                if method == "GET":
                    found = path in self.get_json
                    body = orjson.dumps(self.get_json.get(path, {"error": f"no route {path}"}))
                    writer.write(_response(200 if found else 404, body, close=False))
                    continue
                self.requests += 1
                reply = self.script(self.requests)
                if not await self._answer(reply, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping
        finally:
            if not writer.is_closing():
                writer.close()

    async def _answer(self, reply: Reply, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is done."""
        if reply.hang:
            self._hanging.append(writer)
            await asyncio.sleep(3600)
        if reply.drop:
            writer.transport.abort()
            return False
        if reply.garbage:
            writer.write(b"this is not HTTP\r\n\r\n")
            await writer.drain()
            return True
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.serial and self._lock is not None:
                async with self._lock:
                    await asyncio.sleep(reply.delay_s)
            elif reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            self.in_flight -= 1
        writer.write(_response(reply.status, b'{"predictions":[1]}', reply.close))
        await writer.drain()
        return not reply.close


def _response(status: int, body: bytes, close: bool) -> bytes:
    head = (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'close' if close else 'keep-alive'}\r\n\r\n")
    return head.encode() + body


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[TinyServer]:
    server = TinyServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
