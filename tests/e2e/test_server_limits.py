"""Overload, deadlines and shutdown on a real server (each test on each HTTP backend), with a model that sleeps on
request: a full queue answers 503 with Retry-After while admitted requests complete; a request past its deadline
answers 504 and, when still queued, is dropped before inference; a body over the limit is refused before it has
all been sent; a request still running when the graceful timeout ends is cancelled, and a second signal exits at
once."""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow


def body(delay: float, x0: float = 0.5) -> dict[str, list[dict[str, float]]]:
    return {"instances": [{"x0": x0, "delay": delay}]}


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model="sleepy"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_full_queue_gets_503_with_retry_after_and_admitted_requests_complete(served_registry: Path, tmp_path: Path,
                                                                            http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend, endpoints=[{"name": "sleepy", "models": ["sleepy"]}],
                   batching={"max_batch_size": 1, "max_latency_ms": 0}, limits={"max_queue": 2})
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            busy = pool.submit(httpx.post, server.url + "/predict", json=body(1.0), timeout=10)
            time.sleep(0.3)  # the busy request is in inference: the queue is empty and the worker occupied
            answers = list(pool.map(lambda i: httpx.post(server.url + "/predict", json=body(0.0, float(i)),
                                                         timeout=10), range(6)))
            assert busy.result().status_code == 200
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 200, 503, 503, 503, 503]
        for a in answers:
            if a.status_code == 503:
                assert int(a.headers["retry-after"]) >= 1 and "queue" in a.json()["error"]
            else:
                x0 = a.json()["predictions"][0]
                assert x0 in range(6)
        assert metric(server, "shipml_requests_total") >= 7
    finally:
        assert server.stop() == 0


def test_deadline_gives_504_and_queued_requests_are_dropped_before_inference(served_registry: Path, tmp_path: Path,
                                                                           http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend, endpoints=[{"name": "sleepy", "models": ["sleepy"]}],
                   batching={"max_batch_size": 1, "max_latency_ms": 0}, limits={"request_timeout_ms": 400})
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            slow = pool.submit(httpx.post, server.url + "/predict", json=body(1.5), timeout=10)
            time.sleep(0.2)
            queued = pool.submit(httpx.post, server.url + "/predict", json=body(0.0), timeout=10)
            for answer in (slow.result(), queued.result()):
                assert answer.status_code == 504
                assert re.fullmatch(r"no answer within 400 ms", answer.json()["error"])
        time.sleep(1.5)  # let the sleeping batch finish
        assert metric(server, "shipml_requests_expired_total") == 1  # the queued one never reached the model
        assert metric(server, "shipml_rows_predicted_total") == 1  # only the slow request's row was predicted
        fine = httpx.post(server.url + "/predict", json=body(0.0), timeout=10)
        assert fine.status_code == 200
    finally:
        assert server.stop() == 0


def status_code(sock: socket.socket) -> int:
    """The status of the answer, read while the request body is still unfinished."""
    answer = b""
    while b"\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    return int(answer.split(b" ", 2)[1])


def test_body_over_the_limit_is_refused_before_it_is_all_sent(served_registry: Path, tmp_path: Path,
                                                              http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend, limits={"max_body_bytes": 100_000})
    head = b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:  # 64 KB of a 50 MB body
            sock.sendall(head + b"Content-Length: 50000000\r\n\r\n" + b" " * 65536)
            assert status_code(sock) == 413
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:  # no length: 160 KB sent
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b" " * 32768
            for _ in range(5):  # and the last chunk never comes
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            assert status_code(sock) == 413
        assert httpx.post(server.url + "/predict", json={"instances": []}).status_code != 413
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("signals", [1, 2])
def test_shutdown_does_not_wait_for_a_request_past_the_graceful_timeout(served_registry: Path, tmp_path: Path,
                                                                         http_backend: str, signals: int) -> None:
    """One signal: the request still running once the graceful timeout is over is cancelled (its client gets an
    answer or a closed connection at once; the process exits 0 when the model's thread returns). A second
    signal exits at once."""
    server = start(served_registry, tmp_path, http=http_backend, endpoints=[{"name": "sleepy", "models": ["sleepy"]}],
                   server={"drain_delay_s": 0.2, "graceful_timeout_s": 1 if signals == 1 else 30})

    def call() -> float:
        with contextlib.suppress(httpx.TransportError):  # the answer, or a closed connection: at once
            httpx.post(server.url + "/predict", json=body(5.0), timeout=20)
        return time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(call)
        time.sleep(0.5)  # the request is in inference, for 5 s
        stopped = time.monotonic()
        for _ in range(signals):
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        answered = slow.result(timeout=20)
    server.proc.communicate(timeout=20)
    assert server.proc.returncode == 0
    assert answered - stopped < 3.5  # 0.2 s of drain + 1 s of grace, or at once: not after the 5 s of inference
