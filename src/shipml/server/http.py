"""The few HTTP mechanics the server needs over raw ASGI: bounded body reads and plain responses."""

from __future__ import annotations

from typing import Any

import orjson

from shipml.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


class ClientDisconnected(Exception):
    pass


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` - from Content-Length before
    reading anything, or while reading a body sent without one."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError as exc:
            raise BadRequest("invalid Content-Length") from exc
        if declared > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_json_content_type(scope: dict[str, Any], allow_binary: bool = False) -> bool:
    """True when the body is JSON (or binary-extended JSON for the v2 protocol); 415 for anything else,
    pickles included. A missing Content-Type is taken as JSON, as curl users expect."""
    value = header(scope, b"content-type")
    if value is None:
        return True
    media = value.split(b";", 1)[0].strip().lower()
    if media in (b"application/json", b"text/json") or media.endswith(b"+json"):
        return True
    if allow_binary and media == b"application/octet-stream":
        return True
    shown = media.decode("latin-1")[:100]
    raise UnsupportedMediaType(f"unsupported content type {shown!r}: send application/json")


async def send(send_fn: Any, status: int, body: bytes, headers: Headers | None = None,
               content_type: bytes = JSON) -> None:
    base: Headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send_fn({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send_fn({"type": "http.response.body", "body": body})


def json_bytes(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
