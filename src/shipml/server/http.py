"""The few HTTP mechanics the server needs, independent of the HTTP server underneath.

Handlers see a :class:`Request` (method, path, headers by lower-case name, a bounded body read) and return a
:class:`Reply` (status, whole body, content type, extra headers). Three thin transports carry them: shipml's
own HTTP/1 cycle under uvicorn (``server/uvicorn_http.py``), ``server/rsgi.py`` for granian's RSGI protocol, and
:class:`AsgiRequest` / :func:`send_asgi` for ASGI servers (Ray Serve): neither of the first two goes through an
ASGI translation layer.

Reading a body has a deadline (:class:`ReadDeadlines`, ``limits.body_timeout_s``): a client that sends its body
a byte at a time gets 408, and a 408 always closes its connection (the rest of the body is never read).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import orjson

from shipml.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from shipml.serving.context import RequestContext

Headers = list[tuple[str, str]]
JSON = "application/json"


class ClientDisconnected(Exception):
    pass


class Request(Protocol):
    """One HTTP request as the handlers see it."""

    method: str
    path: str
    token_id: str | None  # the caller's token, when auth let the request through

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 as soon as it is known to exceed ``limit``; 408 when it has not all arrived by
        the body deadline; ClientDisconnected when the client goes away before it is read."""


class Reply:
    """A whole response. ``headers``: extra headers besides Content-Type and Content-Length."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers | None = None,
                 content_type: str = JSON) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type


def check_length(declared: str | None, limit: int) -> int | None:
    """The declared Content-Length as a number (None when absent); 400 when it is not one, 413 above ``limit``."""
    if declared is None:
        return None
    try:
        length = int(declared)
    except ValueError as exc:
        raise BadRequest("invalid Content-Length") from exc
    if length < 0:
        raise BadRequest("invalid Content-Length")
    if length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    return length


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


def closes_connection(status: int) -> bool:
    """Whether an answer with ``status`` must close its connection: a 408's body was not all read."""
    return status == 408


class ReadDeadlines:
    """The deadlines of the request bodies being read, kept by one timer task for all of them (a timer per
    request costs ~3 µs, a dict entry ~0.3 µs). Every ``tick_s`` the reads past their deadline are cancelled,
    and :meth:`read` turns that cancellation into 408. The timer task runs only while a body is being read."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(0.5, timeout_s / 4)
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> deadline (time.monotonic())
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None

    async def read(self, reading: Any) -> bytes:
        """Await ``reading`` (a coroutine that reads a body) within the deadline: 408 past it."""
        task = asyncio.current_task()
        if task is None:  # not in a task (never under a server): nothing to cancel
            result: bytes = await reading
            return result
        self._reading[task] = time.monotonic() + self.timeout_s
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._expire())
        try:
            result = await reading
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise RequestTimeout(f"the request body did not arrive within {self.timeout_s:g} s") from None
        finally:
            self._reading.pop(task, None)
        return result

    @property
    def reading(self) -> int:
        return len(self._reading)

    async def _expire(self) -> None:
        try:
            while self._reading:
                await asyncio.sleep(self.tick_s)
                now = time.monotonic()
                for task, deadline in list(self._reading.items()):
                    if deadline <= now:
                        del self._reading[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._timer = None


def check_json_content_type(request: Request, allow_binary: bool = False) -> bool:
    """True when the body is JSON (or binary-extended JSON for the v2 protocol); 415 for anything else,
    pickles included. A missing Content-Type is taken as JSON, as curl users expect."""
    value = request.header("content-type")
    if value is None or value == JSON:
        return True
    media = value.split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/json") or media.endswith("+json"):
        return True
    if allow_binary and media == "application/octet-stream":
        return True
    raise UnsupportedMediaType(f"unsupported content type {media[:100]!r}: send application/json")


def json_bytes(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


# -- ASGI ------------------------------------------------------------------------------------------------------
class AsgiRequest:
    """A :class:`Request` over an ASGI http scope and its ``receive``; ``deadlines``: the body deadline (none
    without it)."""

    __slots__ = ("deadlines", "method", "path", "receive", "scope", "token_id")

    def __init__(self, scope: dict[str, Any], receive: Any, deadlines: ReadDeadlines | None = None) -> None:
        self.scope = scope
        self.receive = receive
        self.deadlines = deadlines
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.token_id: str | None = scope.get("shipml.token_id")

    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        for k, value in self.scope["headers"]:
            if k == key:
                return bytes(value).decode("latin-1")
        return None

    async def body(self, limit: int) -> bytes:
        check_length(self.header("content-length"), limit)
        if self.deadlines is None:
            return await self._read(limit)
        return await self.deadlines.read(self._read(limit))

    async def _read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_asgi(send: Any, reply: Reply) -> None:
    headers = [(b"content-type", reply.content_type.encode("latin-1")),
               (b"content-length", str(len(reply.body)).encode())]
    if reply.headers:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    if closes_connection(reply.status):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def answered(ctx: RequestContext) -> Headers:
    """The headers of a prediction's answer: the request id, and which version and variant answered."""
    return [("x-request-id", ctx.id), ("x-shipml-version", ctx.version or "none"), ("x-shipml-variant", ctx.variant)]
