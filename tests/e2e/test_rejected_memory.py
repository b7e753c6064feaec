"""The memory of rejected requests, on each HTTP backend (issue 12, item 5).

A request refused with a large 422 used to stay in memory until the cyclic garbage collector ran: the batcher's
future held the SchemaError, whose traceback held the frame awaiting that future - a reference cycle through the
frames of the whole request (its parsed body included). With the collector tuned for throughput (runner.tune_gc)
and the loaded models frozen out of its sight, such garbage piled up: 10,000 rejected requests grew the server
by ~60 MB. Now 100,000 rejected requests of every kind, after a warm-up, grow it by less than 20 MB.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.e2e.server_process import start
from tests.e2e.slow_clients import rss_mb

pytestmark = pytest.mark.slow

WARM_UP = 2_000
REQUESTS = 100_000
CONNECTIONS = 4
LIVENESS_S = 600  # the whole run, at most: a hung server fails rather than blocks


def raw(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def row(**changes: object) -> dict[str, object]:
    return {**{f"x{i}": 0.1 * i for i in range(6)}, **changes}


#: Every kind of refusal, with its status: row problems found in the batch (through the batcher's future; a
#: 200-row body, and a body carrying 20,000 numbers the model does not take), column problems found before it
#: (100 problems), v1 and v2 routes, and the refusals of the transport layer.
KINDS: list[tuple[int, bytes]] = [
    (422, raw("POST", "/predict", orjson.dumps({"instances": [row(x0=None) for _ in range(10)]}))),
    (422, raw("POST", "/predict", orjson.dumps({"instances": [row(x0=None)], "note": [0.5] * 20_000}))),
    (422, raw("POST", "/v1/models/clf:predict", orjson.dumps({"instances": [row(x1="bad") for _ in range(5)]}))),
    (422, raw("POST", "/predict", orjson.dumps({"instances": [row(**{f"extra{i}": i for i in range(100)})]}))),
    (422, raw("POST", "/predict", orjson.dumps({"inputs": {"x0": [1.0] * 199 + [None], **{f"x{i}": [0.5] * 200
                                                                                         for i in range(1, 6)}}}))),
    (413, raw("POST", "/predict", orjson.dumps({"instances": [row() for _ in range(201)]}))),
    (400, raw("POST", "/predict", b'{"instances": [')),
    (400, raw("POST", "/v2/models/clf/infer", orjson.dumps({"inputs": [{"name": "x", "datatype": "FP64",
                                                                        "shape": [2, 6], "data": [1.0]}]}))),
    (415, raw("POST", "/predict", b"x0=1", content_type="application/x-www-form-urlencoded")),
    (404, raw("POST", "/models/nobody/predict", b"{}")),
]


def answer_status(sock: socket.socket, pending: bytearray) -> int:
    """The status of the next whole response on ``sock`` (``pending``: bytes read past the previous one)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed a keep-alive connection")
        pending += chunk
    end = pending.index(b"\r\n\r\n") + 4
    head = bytes(pending[:end]).lower()
    length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(pending) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed a keep-alive connection mid-answer")
        pending += chunk
    del pending[:end + length]
    return int(head[9:12])


def send_rejected(port: int, count: int, give_up_at: float) -> None:
    """``count`` refused requests over ``CONNECTIONS`` keep-alive connections, every kind in turn; each answer
    must be its kind's status."""
    errors: list[str] = []

    def connection(offset: int, n: int) -> None:
        pending = bytearray()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                for i in range(n):
                    if time.monotonic() > give_up_at:
                        errors.append(f"not done within {LIVENESS_S} s")
                        return
                    status, request = KINDS[(offset + i) % len(KINDS)]
                    sock.sendall(request)
                    got = answer_status(sock, pending)
                    if got != status:
                        errors.append(f"kind {(offset + i) % len(KINDS)}: {got} instead of {status}")
                        return
        except OSError as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=connection, args=(c, count // CONNECTIONS)) for c in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_rejected_requests_do_not_grow_the_server(served_registry: Path, tmp_path: Path, http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend, limits={"max_rows": 200})
    give_up_at = time.monotonic() + LIVENESS_S
    try:
        send_rejected(server.port, WARM_UP, give_up_at)
        before = rss_mb(server.proc.pid)
        samples = []
        for _ in range(10):
            send_rejected(server.port, REQUESTS // 10, give_up_at)
            samples.append(rss_mb(server.proc.pid))
    finally:
        assert server.stop() == 0
    assert max(samples) - before < 20, (f"RSS {before:.0f} MB after the warm-up, then every {REQUESTS // 10:,}"
                                        f" rejected requests: {', '.join(f'{mb:.0f}' for mb in samples)} MB")
