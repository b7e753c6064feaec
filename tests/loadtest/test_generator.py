"""The engine against a tiny real HTTP server on 127.0.0.1: open-loop accounting, closed loop, failures."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shipml.errors import ServiceUnavailable, SpecError
from shipml.loadtest.generator import run_plan
from shipml.loadtest.payloads import encode_request
from shipml.loadtest.plan import ERR_CONNECT, ERR_PROTOCOL, ERR_RESET, ERR_TIMEOUT, Plan, Progress
from shipml.loadtest.report import RunInfo, build_report
from tests.e2e.server_process import free_port
from tests.loadtest.tiny_server import Reply, TinyServer, running


def request(server: TinyServer, headers: dict[str, str] | None = None) -> bytes:
    return encode_request("POST", "/models/m/predict", f"127.0.0.1:{server.port}", b'{"instances":[{"x":1}]}',
                          headers)


def plan(server: TinyServer, **kwargs: object) -> Plan:
    options: dict[str, object] = {"duration_s": 1.0, "timeout_s": 5.0, "grace_s": 3.0} | kwargs
    return Plan("127.0.0.1", server.port, [request(server)], **options)  # type: ignore[arg-type]


def info(p: Plan) -> RunInfo:
    return RunInfo(url=f"http://{p.host}:{p.port}", path="/models/m/predict", model="m", protocol="simple",
                   rows=1, duration_s=p.duration_s, connections=p.pool_size, rate=p.rate,
                   concurrency=p.concurrency)


def test_open_loop_issues_exactly_the_planned_requests_on_schedule() -> None:
    with running() as server:
        p = plan(server, rate=400.0)
        samples = run_plan(p)
    n = samples.issued
    assert n == 400 == server.requests
    np.testing.assert_allclose(samples.scheduled[:n], np.arange(n) / 400.0)
    assert (samples.status[:n] == 200).all()
    assert (samples.latency[:n] > 0).all()
    assert (samples.sent[:n] >= samples.scheduled[:n]).all()  # never sent before it was due
    report = build_report(info(p), samples)
    assert report.ok == 400 and report.errors == 0 and report.passed
    assert report.statuses == {"200": 400}
    assert [s.requests for s in report.timeline] == [400]


def test_slow_server_makes_latency_grow_instead_of_hiding_it() -> None:
    """100 ms per request, one at a time, one connection, 20 requests/s: the server falls 50 ms further behind
    with every request. Latency counts from the time each request was due, so it must grow accordingly."""
    with running(script=lambda n: Reply(delay_s=0.1), serial=True) as server:
        p = plan(server, rate=20.0, connections=1)
        samples = run_plan(p)
    n = samples.issued
    assert n == 20 and (samples.status[:n] == 200).all()
    latency = samples.latency[:n]
    # Request i cannot finish before (i + 1) * 100 ms and was due at i * 50 ms.
    floor = np.arange(1, n + 1) * 0.1 - np.arange(n) * 0.05
    assert (latency >= floor - 0.005).all(), latency - floor
    assert latency[-1] > 1.0 and (np.diff(latency) > 0).all()
    waited = samples.sent[:n] - samples.scheduled[:n]  # the queueing a closed-loop client would not see
    assert waited[-1] > 0.9
    report = build_report(info(p), samples)
    assert report.queued >= 10
    rate_check = report.checks[-1]
    assert not rate_check.passed and "connections were busy" in rate_check.note
    assert report.exit_code == 1


def test_closed_loop_keeps_concurrency_requests_in_flight() -> None:
    with running(script=lambda n: Reply(delay_s=0.05)) as server:
        p = plan(server, concurrency=3, duration_s=0.6)
        samples = run_plan(p)
    n = samples.issued
    assert 3 <= n <= 3 * 13 and server.requests == n
    assert server.max_in_flight == 3
    assert (samples.status[:n] == 200).all()
    assert (samples.latency[:n] >= 0.05 - 1e-3).all()
    wait = samples.sent[:n] - samples.scheduled[:n]  # closed loop: due when a worker is free, sent at once
    assert (wait >= 0).all() and (wait < 0.05).all()
    report = build_report(info(p), samples)
    assert report.passed and not any(c.name.startswith("send rate") for c in report.checks)


def script_of_failures(n: int) -> Reply:
    if n % 10 == 3:
        return Reply(status=503)
    if n % 10 == 5:
        return Reply(drop=True)
    if n % 10 == 7:
        return Reply(hang=True)
    if n % 10 == 9:
        return Reply(garbage=True)
    return Reply()


def test_failures_are_counted_by_kind() -> None:
    with running(script=script_of_failures) as server:
        p = plan(server, rate=100.0, duration_s=0.5, timeout_s=0.5, grace_s=1.0)
        samples = run_plan(p)
    n = samples.issued
    assert n == 50
    status = samples.status[:n]
    assert (status != 0).all()  # every request ended somehow
    report = build_report(info(p), samples)
    assert report.statuses == {"200": 30, "503": 5, "timeout": 5, "reset": 5, "protocol": 5}
    assert report.errors == 20 and report.error_rate == pytest.approx(40.0)
    assert report.answered == 35  # 200s and 503s
    timeouts = samples.latency[:n][status == ERR_TIMEOUT]
    assert (timeouts >= 0.5).all()  # given up on after the timeout, and counted in the latency percentiles
    assert report.latency.max is not None and report.latency.max >= 500
    assert set(np.unique(status[status < 0]).tolist()) == {ERR_TIMEOUT, ERR_RESET, ERR_PROTOCOL}


def test_unanswered_at_the_end_of_the_grace_count_as_timeouts() -> None:
    with running(script=lambda n: Reply(hang=n > 5)) as server:
        p = plan(server, rate=50.0, duration_s=0.2, timeout_s=30.0, grace_s=0.2)
        samples = run_plan(p)
    report = build_report(info(p), samples)
    assert report.statuses == {"200": 5, "timeout": 5}
    assert samples.elapsed_s < 5


def test_connection_close_answers_reopen_connections() -> None:
    with running(script=lambda n: Reply(close=True)) as server:
        samples = run_plan(plan(server, rate=100.0, duration_s=0.3, connections=2))
    assert (samples.status[: samples.issued] == 200).all() and samples.issued == 30
    assert samples.connections_opened >= 30 and server.connections >= 30


def test_max_requests_caps_the_run() -> None:
    with running() as server:
        samples = run_plan(plan(server, concurrency=2, duration_s=5.0, max_requests=25))
    assert samples.issued == 25 == server.requests


def test_server_going_away_mid_run_is_counted_not_fatal() -> None:
    server = TinyServer(script=lambda n: Reply(delay_s=0.01)).start()
    stopper = threading.Thread(target=server.stop)

    def stop_once_answering(p: Progress) -> None:
        if p.done >= 20 and not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    samples = run_plan(plan(server, concurrency=4, duration_s=0.8, timeout_s=1.0, grace_s=0.5),
                       stop_once_answering, progress_interval_s=0.05)
    stopper.join(10)
    status = samples.status[: samples.issued]
    assert stopper.ident is not None and (status != 0).all() and (status == 200).sum() >= 20
    assert ERR_CONNECT in status  # reconnecting was refused...
    # ...with a 10 ms pause between attempts (at most 4 slots x 0.8 s / 10 ms of them), not in a tight loop
    assert (status == ERR_CONNECT).sum() <= 4 * 80


def test_nothing_listening_is_an_error_before_any_load() -> None:
    port = free_port()
    with pytest.raises(ServiceUnavailable, match=f"cannot connect to 127.0.0.1:{port}"):
        run_plan(Plan("127.0.0.1", port, [b"x"], 0.2, rate=10.0, connections=2))


def test_progress_snapshots_are_reported() -> None:
    seen: list[Progress] = []
    with running() as server:
        run_plan(plan(server, rate=200.0, duration_s=0.6), seen.append, progress_interval_s=0.15)
    assert len(seen) >= 3
    assert all(0 <= s.done <= s.sent <= s.issued <= 120 for s in seen)
    assert seen[-1].done > seen[0].done and seen[-1].errors == 0
    assert any(s.p99_ms is not None and s.p99_ms > 0 for s in seen)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": 10.0, "concurrency": 2}, "not both"),
    ({}, "not both and not neither"),
    ({"rate": -1.0}, "rate must be a positive"),
    ({"rate": 10.0, "duration_s": 0.0}, "duration must be positive"),
    ({"rate": 10.0, "connections": 0}, "connections must be at least 1"),
    ({"rate": 10.0, "max_requests": 0}, "max requests"),
    ({"rate": 1e9, "duration_s": 3600.0}, "more than one run records"),
])
def test_bad_plans_are_refused(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"duration_s": 1.0} | kwargs
    with pytest.raises(SpecError, match=message):
        Plan("127.0.0.1", 1, [b"x"], **options)  # type: ignore[arg-type]
