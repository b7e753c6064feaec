"""The alert webhook against a real HTTP receiver on 127.0.0.1: delivered JSON, retries with back-off on 5xx,
none on 4xx, a receiver that is down or hangs never blocks send(), a bounded queue, a bounded close()."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.monitoring.alerts import AlertEvent
from shipml.monitoring.spec import WebhookSpec
from shipml.monitoring.webhook import Webhook

DEADLINE_S = 10.0  # liveness bound for waiting on deliveries (never a speed assertion)


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    retry_after: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int) -> None:
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            with self.lock:
                if len(self.times) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"the receiver got {len(self.times)} requests, expected {count}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.times.append(time.monotonic())
                state.headers.append(dict(self.headers))
                status = state.statuses.pop(0) if state.statuses else 200
                if status == 200:
                    state.bodies.append(json.loads(body))
            self.send_response(status)
            if status != 200 and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/alerts?token=secret"
    yield state
    server.shutdown()
    server.server_close()


def event(**fields: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert": "input-drift", "state": "firing", "severity": "warning", "endpoint": "churn", "model": "churn",
        "version": "1.0.0", "feature": "age", "label": None, "metric": "psi", "value": 0.42,
        "condition": "psi > 0.2", "since": 1_780_000_000.0, "at": 1_780_000_300.0}
    values.update(fields)
    return AlertEvent(**values)


def webhook(url: str, **options: Any) -> Webhook:
    spec = WebhookSpec.model_validate({"url": url, **{k: options.pop(k) for k in ("retries", "timeout_s",
                                                                                      "headers") if k in options}})
    return Webhook(spec, **{"backoff_s": 0.05, "max_backoff_s": 0.5, **options})


def test_delivered_json_is_the_event_body(receiver: Receiver) -> None:
    outcomes: list[str] = []
    hook = webhook(receiver.url, headers={"Authorization": "Bearer t0k"}, on_outcome=outcomes.append)
    first, second = event(), event(state="resolved", value=0.1, feature=None, label="1")
    hook.send(first)
    hook.send(second)
    receiver.wait_for(2)
    hook.close(timeout_s=2.0)
    assert receiver.bodies == [first.to_dict(), second.to_dict()]
    assert receiver.headers[0]["Authorization"] == "Bearer t0k"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert (hook.sent, hook.failed, hook.dropped) == (2, 0, 0) and outcomes == ["sent", "sent"]


def test_5xx_is_retried_with_back_off(receiver: Receiver) -> None:
    receiver.statuses = [503, 503]
    hook = webhook(receiver.url, retries=3)
    hook.send(event())
    receiver.wait_for(3)
    hook.close(timeout_s=2.0)
    assert receiver.bodies == [event().to_dict()]
    assert (hook.sent, hook.failed) == (1, 0)
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    # waits of backoff_s x 2^attempt, each at least half of it (jitter): 0.025 s, then 0.05 s
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05


def test_429_honours_retry_after_and_gives_up_after_the_retries(receiver: Receiver) -> None:
    receiver.statuses = [429, 500, 502, 504]
    receiver.retry_after = "0.2"
    hook = webhook(receiver.url, retries=2)
    hook.send(event())
    receiver.wait_for(3)
    hook.close(timeout_s=2.0)
    assert len(receiver.times) == 3 and receiver.bodies == []  # the first try and two retries, all refused
    assert receiver.times[1] - receiver.times[0] >= 0.2
    assert (hook.sent, hook.failed) == (0, 1)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_4xx_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status, 200]
    hook = webhook(receiver.url, retries=5)
    hook.send(event())
    receiver.wait_for(1)
    hook.send(event(alert="next"))  # the queue moves on to the next event
    receiver.wait_for(2)
    hook.close(timeout_s=2.0)
    assert [b["alert"] for b in receiver.bodies] == ["next"]
    assert (hook.sent, hook.failed) == (1, 1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_receiver_that_is_down_never_blocks_send() -> None:
    hook = webhook(f"http://127.0.0.1:{_closed_port()}/alerts", retries=2)
    start = time.monotonic()
    for i in range(20):
        hook.send(event(alert=f"a{i}"))
    assert time.monotonic() - start < 0.5
    end = time.monotonic() + DEADLINE_S
    while hook.failed < 20 and time.monotonic() < end:
        time.sleep(0.01)
    assert (hook.sent, hook.failed, hook.dropped) == (0, 20, 0)
    hook.close(timeout_s=1.0)


@pytest.fixture
def hanging() -> Iterator[str]:
    """A socket that accepts connections into its backlog and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"


def test_a_hanging_receiver_never_blocks_send_and_the_queue_is_bounded(hanging: str) -> None:
    outcomes: list[str] = []
    hook = webhook(hanging, timeout_s=30, max_queue=3, on_outcome=outcomes.append)
    hook.send(event(alert="first"))
    end = time.monotonic() + DEADLINE_S
    while hook.queued and time.monotonic() < end:  # the first one is in flight, hanging
        time.sleep(0.01)
    start = time.monotonic()
    for i in range(10):
        hook.send(event(alert=f"a{i}"))
    assert time.monotonic() - start < 0.5
    assert hook.queued == 3 and hook.dropped == 7
    start = time.monotonic()
    hook.close(timeout_s=0.3)
    assert time.monotonic() - start < 2.0
    assert (hook.dropped, hook.failed, hook.sent) == (10, 1, 0)  # 3 queued dropped too; the hanging one failed
    hook.send(event())  # after close: dropped, not queued
    assert hook.dropped == 11 and outcomes.count("dropped") == 11


def test_send_returns_at_once_while_a_delivery_hangs(hanging: str) -> None:
    hook = webhook(hanging, timeout_s=30)
    for i in range(50):
        start = time.monotonic()
        hook.send(event(alert=f"a{i}"))
        assert time.monotonic() - start < 0.5
    start = time.monotonic()
    hook.close(timeout_s=0.2)
    assert time.monotonic() - start < 2.0


def test_close_during_back_off_returns_within_its_timeout(receiver: Receiver) -> None:
    receiver.statuses = [503] * 100
    hook = webhook(receiver.url, retries=50)
    hook.backoff_s = hook.max_backoff_s = 5.0
    hook.send(event())
    receiver.wait_for(1)
    start = time.monotonic()
    hook.close(timeout_s=0.3)
    assert time.monotonic() - start < 2.0
    assert (hook.sent, hook.failed) == (0, 1)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        webhook("http://127.0.0.1:9/x", max_queue=0)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names, st.one_of(st.none(), names), st.one_of(st.none(), names),
       st.floats(allow_nan=False, allow_infinity=False), st.floats(0, 4e9))
def test_any_event_arrives_as_its_json(receiver: Receiver, alert: str, feature: str | None, label: str | None,
                                       value: float, at: float) -> None:
    before = len(receiver.bodies)
    sent = event(alert=alert, feature=feature, label=label, value=value, since=at, at=at)
    hook = webhook(receiver.url)
    hook.send(sent)
    receiver.wait_for(before + 1)
    hook.close(timeout_s=2.0)
    assert receiver.bodies[before] == sent.to_dict()
