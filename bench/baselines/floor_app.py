"""The HTTP floor: a bare ASGI app under uvicorn (httptools, uvloop) that reads the body, parses it with orjson
and returns a constant. No model, no validation: what any Python server on this stack pays per request.

    uvicorn bench.baselines.floor_app:app --port 8002 --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from typing import Any

import orjson

ANSWER = b'{"predictions":[1],"probabilities":[[0.25,0.75]]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
