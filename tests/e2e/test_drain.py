"""Draining after SIGTERM without resets, on each HTTP backend (issue 12, item 4).

While a worker drains, every answer carries ``Connection: close`` and its connection is closed after it, so a
keep-alive client learns to go elsewhere on its next request instead of finding its connection reset when the
listener closes. Keep-alive clients send continuously; after SIGTERM each one stops starting requests when an
answer says ``Connection: close`` (or, failing that, when the drain delay is over); none of them sees a reset,
and every answer to a request sent once the server was draining says close.
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.server_process import start

pytestmark = pytest.mark.slow

DRAIN_S = 2.0
CLIENTS = 8
BODY = orjson.dumps({"instances": [{f"x{i}": 0.1 * i for i in range(6)}]})


@dataclass
class Sent:
    at: float  # time.monotonic() when the request started
    done: float = 0.0  # when its answer (or error) came
    status: int | None = None
    closes: bool = False
    error: str | None = None


@dataclass
class Client:
    url: str
    signalled_at: list[float]  # set once SIGTERM is sent
    sent: list[Sent] = field(default_factory=list)
    stopped_by: str = ""

    def run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=self.url, timeout=10, limits=limits) as client:
            give_up = time.monotonic() + 60
            while time.monotonic() < give_up and len(self.sent) < 20_000:
                if self.signalled_at and time.monotonic() > self.signalled_at[0] + DRAIN_S:
                    self.stopped_by = "drain delay"
                    return
                request = Sent(time.monotonic())
                self.sent.append(request)
                try:
                    answer = client.post("/predict", content=BODY, headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    request.done = time.monotonic()
                    request.error = f"{type(exc).__name__}: {exc}"
                    self.stopped_by = "error"
                    return
                request.done = time.monotonic()
                request.status = answer.status_code
                request.closes = answer.headers.get("connection", "").lower() == "close"
                if request.closes:
                    self.stopped_by = "connection: close"
                    return
        self.stopped_by = "limit"


def test_draining_answers_say_close_and_no_keep_alive_client_is_reset(served_registry: Path, tmp_path: Path,
                                                                      http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend,
                   server={"drain_delay_s": DRAIN_S, "graceful_timeout_s": 10}, batching={"max_latency_ms": 0})
    signalled_at: list[float] = []
    clients = [Client(server.url, signalled_at) for _ in range(CLIENTS)]
    started = threading.Barrier(CLIENTS + 1)

    def run(client: Client) -> None:
        started.wait()
        client.run()

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(run, c) for c in clients]
        started.wait()
        time.sleep(1.0)
        signalled_at.append(time.monotonic())
        server.proc.send_signal(signal.SIGTERM)
        draining_from = None
        while time.monotonic() < signalled_at[0] + DRAIN_S:  # from when on the server says it drains
            if httpx.get(server.url + "/readyz", timeout=5).status_code == 503:
                draining_from = time.monotonic()
                break
            time.sleep(0.01)
        for future in futures:
            future.result(timeout=90)
    server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0
    assert draining_from is not None, "never answered /readyz 503 while draining"

    sent = [s for c in clients for s in c.sent]
    errors = [s.error for s in sent if s.error is not None]
    assert errors == [], errors[:5]  # no resets
    assert {s.status for s in sent} == {200}
    unclosed = [s for s in sent if s.at >= draining_from and not s.closes]
    assert unclosed == [], f"{len(unclosed)} answers while draining without Connection: close"
    assert not [s for s in sent if s.done < signalled_at[0] and s.closes]  # nothing said close before the signal
    assert {c.stopped_by for c in clients} == {"connection: close"}  # each one was told, within the drain delay
