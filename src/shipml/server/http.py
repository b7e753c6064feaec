"""The few HTTP mechanics the server needs, independent of the HTTP server underneath.

Handlers see a :class:`Request` (method, path, headers by lower-case name, a bounded body read) and return a
:class:`Reply` (status, whole body, content type, extra headers). Two thin transports carry them:
:class:`AsgiRequest` / :func:`send_asgi` for ASGI servers (uvicorn, Ray Serve) and ``server/rsgi.py`` for
granian's RSGI protocol, so a request under granian never goes through an ASGI translation layer.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from shipml.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

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
        """The whole body; 413 as soon as it is known to exceed ``limit``; ClientDisconnected when the client
        goes away before it is read."""


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
    """A :class:`Request` over an ASGI http scope and its ``receive``."""

    __slots__ = ("method", "path", "receive", "scope", "token_id")

    def __init__(self, scope: dict[str, Any], receive: Any) -> None:
        self.scope = scope
        self.receive = receive
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
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
