"""The load harness of the release tests (tests/e2e/traffic.py), checked against a real ``shipml serve`` process
and against a small HTTP/1.1 server in this process whose answers the test controls (release headers that change
at a known instant)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e.server_process import start
from tests.e2e.traffic import Traffic, percentile

ROW = {f"x{i}": 0.1 * i for i in range(6)}


class _Switching(BaseHTTPRequestHandler):
    """Answers version "1" until the server's ``switch_at`` (monotonic), then "2"; the variant echoes X-User-ID;
    every 50th request (by X-Request-N) gets a 503."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
    server: _SwitchingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        version = "2" if time.monotonic() >= self.server.switch_at else "1"
        status = 503 if int(self.headers.get("x-request-n", "1")) % 50 == 0 else 200
        body = orjson.dumps({"version": version})
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-shipml-version", version)
        if self.headers.get("x-user-id") is not None:
            self.send_header("x-shipml-variant", self.headers["x-user-id"])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _SwitchingServer(ThreadingHTTPServer):
    daemon_threads = True
    switch_at = float("inf")


@pytest.fixture
def switching() -> Iterator[_SwitchingServer]:
    server = _SwitchingServer(("127.0.0.1", 0), _Switching)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_records_release_headers_per_request_headers_and_a_timeline(switching: _SwitchingServer) -> None:
    url = f"http://127.0.0.1:{switching.server_address[1]}/predict"
    with Traffic(url, body={"x": 1}, clients=4, max_requests=20_000, max_seconds=20,
                 headers_for=lambda n: {"X-User-ID": f"user-{n % 7}", "X-Request-N": str(n)},
                 extract=lambda b: orjson.loads(b)["version"]) as traffic:
        traffic.wait(0.5)
        switching.switch_at = time.monotonic()
        traffic.wait(0.5)
    result = traffic.result()
    assert result.errors == (), result.summary()
    assert result.attempts == len(result.responses) > 100
    assert len({r.n for r in result.responses}) == result.attempts  # request numbers are unique
    assert {r.status for r in result.non_2xx} == {503}
    assert {r.n % 50 for r in result.non_2xx} == {0}
    assert result.by_status[503] == len([r for r in result.responses if r.n % 50 == 0])
    for r in result.responses:
        assert r.headers is not None and r.variant == r.headers["X-User-ID"] == f"user-{r.n % 7}"
        if r.status == 200:
            assert r.value == r.version  # what extract kept of the body is the body's
    assert {r.version for r in result.responses if r.done < switching.switch_at} == {"1"}
    assert result.versions(since=switching.switch_at) == {"2"}
    last_old = result.last_sent(lambda r: r.version == "1")
    first_new = result.first_sent(lambda r: r.version == "2")
    assert last_old is not None and first_new is not None and last_old <= switching.switch_at <= first_new + 0.5
    assert sum(result.by_release.values()) == len(result.responses)
    assert result.connections == 4  # keep-alive: one connection per client for the whole run


def test_every_loop_is_bounded_in_count_and_in_time(switching: _SwitchingServer) -> None:
    url = f"http://127.0.0.1:{switching.server_address[1]}/predict"
    with Traffic(url, body=b"{}", clients=3, max_requests=100, max_seconds=30) as traffic:
        traffic.wait(30)  # returns when the clients are done, well before 30 s
    counted = traffic.result()
    assert counted.attempts == len(counted.responses) == 100
    assert sorted(len(c.responses) for c in traffic.clients) == [33, 33, 34]

    with Traffic(url, body=b"{}", clients=3, max_requests=10_000_000, max_seconds=0.5) as traffic:
        time.sleep(1.5)
    timed = traffic.result()
    assert timed.attempts == len(timed.responses) > 0
    assert max(r.sent for r in timed.responses) <= timed.started + 0.5


def test_refuses_anything_but_loopback() -> None:
    for url in ("http://10.0.0.1:8000/predict", "http://example.org/predict", "https://127.0.0.1/predict",
                "http://[::2]:80/"):
        with pytest.raises(ValueError, match=r"loopback|http://"):
            Traffic(url, body=b"{}")


@settings(max_examples=50, deadline=None)
@given(st.ip_addresses(v=4))
def test_only_127_0_0_0_8_is_accepted(address: object) -> None:
    url = f"http://{address}:8000/predict"
    if str(address).startswith("127."):
        Traffic(url, body=b"{}")  # built, never started: no traffic
    else:
        with pytest.raises(ValueError, match="loopback"):
            Traffic(url, body=b"{}")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=100))
def test_percentile_is_a_value_with_at_least_q_percent_at_or_below_it(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= q / 100 * len(values) - 1e-9
    assert sum(v < p for v in values) < max(q / 100 * len(values), 1)


@pytest.mark.slow
def test_a_healthy_server_answers_everything_and_the_counts_add_up(served_registry: Path, tmp_path: Path) -> None:
    server = start(served_registry, tmp_path)
    try:
        with Traffic(server.url + "/predict", body={"instances": [ROW]}, clients=8, max_requests=3000,
                     max_seconds=30, extract=lambda b: orjson.loads(b)["version"]) as traffic:
            traffic.wait(30)
    finally:
        server.stop()
    result = traffic.result()
    assert result.errors == (), result.summary()
    assert result.by_status == {200: 3000}, result.summary()
    assert result.attempts == 3000 == sum(result.by_release.values())
    assert {r.value for r in result.responses} == {"1.1.0"}  # the body names the version served
    assert result.connections == 8, result.summary()  # keep-alive
    latency = result.latency_ms()
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


@pytest.mark.slow
def test_connection_errors_are_counted_when_the_server_dies(served_registry: Path, tmp_path: Path) -> None:
    server = start(served_registry, tmp_path)
    try:
        with Traffic(server.url + "/predict", body={"instances": [ROW]}, clients=8, max_requests=100_000,
                     max_seconds=10, error_pause_s=0.02) as traffic:
            traffic.wait(1.0)
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            killed = time.monotonic()
            traffic.wait(1.0)
    finally:
        server.stop()
    result = traffic.result()
    assert result.attempts == len(result.responses) + len(result.errors)
    assert result.by_status.keys() == {200}, result.summary()
    assert all(r.done <= killed for r in result.responses)
    assert len(result.errors) >= 8, result.summary()  # every client saw the server go
    assert set(result.by_error) <= {"ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected",
                                    "BrokenPipeError", "ConnectionAbortedError"}, result.by_error
    after = [e for e in result.errors if e.sent >= killed]
    assert after and {e.error for e in after} == {"ConnectionRefusedError"}
    # each client waits error_pause_s between attempts at a dead server: bounded, not a busy loop
    assert len(after) <= 8 * (1.0 / 0.02 + 5), result.summary()
