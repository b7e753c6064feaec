"""The canary watch (shipml.release.canary): verdicts exactly at the limits, the sliding window, min_requests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.release import CanaryWatch
from shipml.release.canary import P99_EVERY

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Limits:
    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    min_requests: int = 200
    window: int = 1000


def fed(limits: Limits, outcomes: list[tuple[bool, float]]) -> CanaryWatch:
    watch = CanaryWatch(limits)
    for ok, seconds in outcomes:
        watch.record(ok, seconds)
    return watch


def nearest_rank_p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def test_the_error_rate_at_the_limit_passes_and_one_more_failure_aborts() -> None:
    at = fed(Limits(), [(i >= 2, 0.001) for i in range(200)])  # 2 failures in 200: exactly 1%
    assert at.verdict() is None
    over = fed(Limits(), [(i >= 3, 0.001) for i in range(200)])
    assert over.verdict() == "error rate 1.5% over the canary's last 200 requests is above the limit 1.0%"
    assert over.summary == {"requests": 200, "errors": 3, "error_rate": 0.015, "p99_ms": 1.0, "seen": 200}


@SETTINGS
@given(n=st.integers(min_value=1, max_value=400), data=st.data())
def test_an_error_rate_equal_to_the_limit_passes_and_just_over_it_aborts(n: int, data: st.DataObject) -> None:
    errors = data.draw(st.integers(min_value=0, max_value=n - 1))
    limits = Limits(max_error_rate=errors / n, min_requests=n, window=n)
    at = fed(limits, [(i >= errors, 0.0) for i in range(n)])
    assert at.verdict() is None
    over = fed(limits, [(i > errors, 0.0) for i in range(n)])  # one failure more
    reason = over.verdict()
    assert reason is not None and reason.startswith("error rate ") and f"the canary's last {n} requests" in reason
    shown, limit = reason.split("error rate ")[1].split("%")[0], reason.split("the limit ")[1].rstrip("%")
    assert shown != limit  # written with enough decimals to tell them apart


@SETTINGS
@given(ms=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300))
def test_a_p99_equal_to_the_limit_passes_and_just_over_it_aborts(ms: list[int]) -> None:
    outcomes = [(True, m / 1000) for m in ms]
    p99 = nearest_rank_p99([m / 1000 * 1000.0 for m in ms])
    at = fed(Limits(max_p99_ms=p99 if p99 > 0 else 1e-9, min_requests=len(ms)), outcomes)
    assert at.verdict() is None
    assert at.summary["p99_ms"] == p99
    if p99 > 0:
        over = fed(Limits(max_p99_ms=math.nextafter(p99, 0.0), min_requests=len(ms)), outcomes)
        reason = over.verdict()
        assert reason is not None
        assert reason.startswith("p99 latency ") and f"over the canary's last {len(ms)} requests is above the limit" \
            in reason


def test_the_p99_reason_reads_as_documented() -> None:
    watch = fed(Limits(max_p99_ms=50, min_requests=100, window=1000),
                [(True, 0.0612 if i < 3 else 0.01) for i in range(250)])
    assert watch.verdict() == "p99 latency 61.2 ms over the canary's last 250 requests is above the limit 50 ms"


@SETTINGS
@given(least=st.integers(min_value=1, max_value=50), extra=st.integers(min_value=0, max_value=50))
def test_nothing_is_judged_before_min_requests(least: int, extra: int) -> None:
    watch = CanaryWatch(Limits(max_error_rate=0.0, max_p99_ms=1.0, min_requests=least, window=least + extra))
    for _ in range(least - 1):
        watch.record(False, 10.0)
        assert watch.verdict() is None
    watch.record(False, 10.0)
    assert watch.verdict() is not None


def test_old_failures_age_out_of_the_window() -> None:
    watch = CanaryWatch(Limits(max_error_rate=0.05, min_requests=50, window=100))
    for _ in range(10):
        watch.record(False, 0.01)
    for _ in range(40):
        watch.record(True, 0.01)
    assert watch.verdict() == "error rate 20.0% over the canary's last 50 requests is above the limit 5.0%"
    for _ in range(55):  # the window now starts after the 5th failure: 5 in 100 is the limit
        watch.record(True, 0.01)
    assert watch.verdict() is None
    assert watch.summary["errors"] == 5
    for _ in range(5):
        watch.record(True, 0.01)
    assert watch.summary == {"requests": 100, "errors": 0, "error_rate": 0.0, "p99_ms": 10.0, "seen": 110}


@SETTINGS
@given(window=st.integers(min_value=1, max_value=60), data=st.data())
def test_the_window_is_always_the_last_requests(window: int, data: st.DataObject) -> None:
    least = data.draw(st.integers(min_value=1, max_value=window))
    rate = data.draw(st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]))
    outcomes = data.draw(st.lists(st.tuples(st.booleans(), st.floats(min_value=0, max_value=5)), max_size=200))
    watch = CanaryWatch(Limits(max_error_rate=rate, min_requests=least, window=window))
    for i, (ok, seconds) in enumerate(outcomes):
        watch.record(ok, seconds)
        last = outcomes[max(0, i + 1 - window):i + 1]
        errors = sum(not o for o, _ in last)
        assert (watch.requests, watch.summary["errors"]) == (len(last), errors)
        assert watch.summary["p99_ms"] == nearest_rank_p99([s for _, s in last]) * 1000.0
        judged = len(last) >= least and errors / len(last) > rate
        assert (watch.verdict() is not None) == judged


def test_a_slow_canary_is_caught_within_a_few_records_of_turning_slow() -> None:
    watch = CanaryWatch(Limits(max_p99_ms=50, min_requests=100, window=100))
    for _ in range(300):
        watch.record(True, 0.005)
        assert watch.verdict() is None
    verdicts = []
    for _ in range(2 + P99_EVERY):
        watch.record(True, 0.5)
        verdicts.append(watch.verdict())
    assert verdicts[-1] == "p99 latency 500.0 ms over the canary's last 100 requests is above the limit 50 ms"


def test_a_latency_that_is_not_a_number_counts_as_slow() -> None:
    watch = fed(Limits(max_p99_ms=50, min_requests=1, window=1), [(True, float("nan"))])
    assert watch.verdict() == "p99 latency inf ms over the canary's last 1 requests is above the limit 50 ms"


def test_an_empty_watch_summarises_to_zeros() -> None:
    assert CanaryWatch(Limits()).summary == {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_ms": 0.0, "seen": 0}


@pytest.mark.parametrize(("limits", "message"), [
    (Limits(window=0, min_requests=1), "window must be a whole number >= 1"),
    (Limits(window=10, min_requests=20), r"min_requests must be a whole number from 1 to window \(10\)"),
    (Limits(min_requests=0), "min_requests must be a whole number from 1"),
    (Limits(max_error_rate=1.0), "max_error_rate must be >= 0 and < 1"),
    (Limits(max_error_rate=float("nan")), "max_error_rate must be >= 0 and < 1"),
    (Limits(max_p99_ms=0.0), "max_p99_ms must be a number > 0"),
])
def test_limits_that_cannot_work_are_refused(limits: Limits, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CanaryWatch(limits)
