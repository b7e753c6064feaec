"""Overload and deadlines on a real server, with a model that sleeps on request: a full queue answers 503 with
Retry-After while admitted requests complete; a request past its deadline answers 504 and, when still queued, is
dropped before inference."""

from __future__ import annotations

import concurrent.futures
import re
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


def test_full_queue_gets_503_with_retry_after_and_admitted_requests_complete(served_registry: Path,
                                                                            tmp_path: Path) -> None:
    server = start(served_registry, tmp_path, endpoints=[{"name": "sleepy", "models": ["sleepy"]}],
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


def test_deadline_gives_504_and_queued_requests_are_dropped_before_inference(served_registry: Path,
                                                                           tmp_path: Path) -> None:
    server = start(served_registry, tmp_path, endpoints=[{"name": "sleepy", "models": ["sleepy"]}],
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
