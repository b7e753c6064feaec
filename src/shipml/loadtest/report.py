"""What a load test measured: throughput, latency percentiles, errors by kind, a per-second timeline, and the
verdict against the SLO. Text for people, a dict for machines (``--json``); the HTML page is in ``html.py``.

Which requests count where:

- latency percentiles cover every request that got an HTTP answer (any status) and every timeout (at the time
  it was given up on), so a server cannot improve its p99 by not answering; requests that failed to connect or
  were reset count as errors only;
- an error is any request without a 2xx answer; the error rate is over the requests issued;
- throughput is 2xx answers per second, from the start to the last answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipml.loadtest.plan import ERR_TIMEOUT, ERROR_KINDS, Samples
from shipml.loadtest.slo import Check, Objective

#: An open-loop run fails when it sent less than this share of the target rate.
MIN_SEND_SHARE = 0.9
#: Percentiles every report shows.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class RunInfo:
    """How the run was set up (what the report repeats back)."""

    url: str
    path: str
    model: str | None
    protocol: str
    rows: int
    duration_s: float
    connections: int
    rate: float | None = None
    concurrency: int | None = None
    payloads: int = 1


@dataclass(frozen=True)
class Latency:
    """Latency in milliseconds over the measured requests (None when there were none)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None


@dataclass(frozen=True)
class Lag:
    """How late requests went on the wire after they were due, in milliseconds (part of their latency): the
    scheduler's 1 ms tick, a busy client, or a wait for a free connection."""

    p50: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class Second:
    """Requests scheduled within one second of the run."""

    t: int
    requests: int
    ok: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class LoadReport:
    run: RunInfo
    issued: int
    sent: int
    answered: int  # got an HTTP answer (any status)
    ok: int  # 2xx
    elapsed_s: float
    send_rate: float  # requests put on the wire per second within the run's duration
    throughput: float  # 2xx answers per second
    latency: Latency
    statuses: dict[str, int]  # "200", "503", "timeout", "connect", ...
    queued: int  # requests that waited for a free connection
    connections_opened: int
    send_lag: Lag  # from due to on the wire
    timeline: list[Second]
    checks: list[Check] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.issued - self.ok

    @property
    def error_rate(self) -> float:
        """Errors as a percentage of the requests issued."""
        return 100.0 * self.errors / self.issued if self.issued else 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and self.issued > 0

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 otherwise."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": asdict(self.run), "issued": self.issued, "sent": self.sent, "answered": self.answered,
            "ok": self.ok, "errors": self.errors, "error_rate_percent": self.error_rate,
            "elapsed_s": self.elapsed_s, "send_rate": self.send_rate, "throughput": self.throughput,
            "latency_ms": asdict(self.latency), "statuses": dict(self.statuses), "queued": self.queued,
            "connections_opened": self.connections_opened, "send_lag_ms": asdict(self.send_lag),
            "timeline": [asdict(s) for s in self.timeline],
            "checks": [c.to_dict() for c in self.checks], "passed": self.passed,
        }

    def summary(self) -> str:
        """The report as aligned text."""
        run = self.run
        if run.rate is not None:
            mode = f"open loop at {run.rate:,.0f} req/s over up to {run.connections} connections"
        else:
            mode = f"closed loop, {run.concurrency} concurrent requests"
        lat = self.latency
        statuses = "  ".join(f"{k}: {v:,}" for k, v in self.statuses.items()) or "none"
        lines = [
            f"target      {run.url.rstrip('/')}{run.path}  ({run.protocol}, {run.rows} row(s)/request,"
            f" {run.payloads} distinct bodies)",
            f"load        {mode} for {run.duration_s:g} s",
            f"requests    {self.issued:,} issued, {self.sent:,} sent ({self.send_rate:,.1f}/s),"
            f" {self.answered:,} answered in {self.elapsed_s:.1f} s",
            f"throughput  {self.throughput:,.1f} ok/s",
            "latency     " + "  ".join(f"{name} {_ms(value)}" for name, value in (
                ("p50", lat.p50), ("p90", lat.p90), ("p99", lat.p99), ("p99.9", lat.p999), ("max", lat.max),
                ("mean", lat.mean))),
            f"send lag    p50 {_ms(self.send_lag.p50)}  p99 {_ms(self.send_lag.p99)}  max {_ms(self.send_lag.max)}"
            "  (due to on the wire; counted in latency)",
            f"statuses    {statuses}",
            f"errors      {self.errors:,} ({self.error_rate:.3g}%)",
        ]
        if self.queued:
            lines.append(f"queued      {self.queued:,} requests waited for a free connection (their wait counts"
                         " in their latency)")
        if self.checks:
            width = max(len(c.name) for c in self.checks)
            for k, check in enumerate(self.checks):
                head = "checks      " if k == 0 else " " * 12
                measured = "n/a" if check.measured is None else f"{check.measured:,.4g}{check.unit}"
                note = f"  ({check.note})" if check.note else ""
                lines.append(f"{head}{check.name.ljust(width)}  {measured:>12}  "
                             f"{'pass' if check.passed else 'FAIL'}{note}")
        lines.append(f"verdict     {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def build_report(run: RunInfo, samples: Samples, objectives: list[Objective] | None = None) -> LoadReport:
    """Turn per-request samples into a report, checked against ``objectives``."""
    n = samples.issued
    status = samples.status[:n]
    latency_ms = samples.latency[:n] * 1000.0
    scheduled = samples.scheduled[:n]
    sent_at = samples.sent[:n]
    measured = (status > 0) | (status == ERR_TIMEOUT)
    ok_mask = (status >= 200) & (status < 300)
    values = latency_ms[measured]
    latency = Latency(
        count=len(values), mean=float(values.mean()) if len(values) else None,
        p50=_percentile(values, 50), p90=_percentile(values, 90), p99=_percentile(values, 99),
        p999=_percentile(values, 99.9), max=float(values.max()) if len(values) else None)
    ok = int(ok_mask.sum())
    last_answer = float(np.nanmax(scheduled + samples.latency[:n])) if n else 0.0
    throughput = ok / last_answer if last_answer > 0 else 0.0
    on_time = int(np.count_nonzero(sent_at <= run.duration_s))
    lag_ms = (sent_at - scheduled)[~np.isnan(sent_at)] * 1000.0
    send_lag = Lag(_percentile(lag_ms, 50), _percentile(lag_ms, 99), float(lag_ms.max()) if len(lag_ms) else None)
    report = LoadReport(
        run=run, issued=n, sent=int(np.count_nonzero(~np.isnan(sent_at))), answered=int((status > 0).sum()),
        ok=ok, elapsed_s=samples.elapsed_s, send_rate=on_time / run.duration_s, throughput=throughput,
        latency=latency, statuses=_statuses(status), queued=samples.queued,
        connections_opened=samples.connections_opened, send_lag=send_lag,
        timeline=_timeline(scheduled, latency_ms, status, measured),
    )
    report.checks = [check_objective(report, o, latency_ms[measured]) for o in objectives or []]
    if run.rate is not None:
        report.checks.append(_send_rate_check(report, run.rate))
    return report


def _statuses(status: np.ndarray) -> dict[str, int]:
    codes, counts = np.unique(status, return_counts=True)
    out: dict[str, int] = {}
    for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
        if code > 0:
            out[str(code)] = count
        elif code in ERROR_KINDS:
            out[ERROR_KINDS[code]] = count
        else:
            out["unanswered"] = out.get("unanswered", 0) + count
    return out


def _timeline(scheduled: np.ndarray, latency_ms: np.ndarray, status: np.ndarray,
              measured: np.ndarray) -> list[Second]:
    if not len(scheduled):
        return []
    seconds = np.floor(scheduled).astype(np.int64)
    out = []
    for t in range(int(seconds.max()) + 1):
        in_second = seconds == t
        values = latency_ms[in_second & measured]
        ok = int(np.count_nonzero(in_second & (status >= 200) & (status < 300)))
        total = int(np.count_nonzero(in_second))
        out.append(Second(t, total, ok, total - ok, _percentile(values, 50), _percentile(values, 99)))
    return out


def check_objective(report: LoadReport, objective: Objective, latency_ms: np.ndarray) -> Check:
    """Measure what ``objective`` is about and say whether it holds."""
    value: float | None
    if objective.percentile is not None:
        value = _percentile(latency_ms, objective.percentile)
    elif objective.metric == "mean":
        value = report.latency.mean
    elif objective.metric == "max":
        value = report.latency.max
    elif objective.metric == "errors":
        value = report.error_rate if report.issued else None
    else:
        value = report.throughput
    note = "" if value is not None else "nothing measured"
    return Check(objective.text, value, objective.unit, objective.holds(value), note)


def _send_rate_check(report: LoadReport, rate: float) -> Check:
    """Did the run offer the load it was asked to? If not, its latencies describe another test."""
    wanted = min(rate, report.issued / report.run.duration_s)  # max_requests may cap the plan
    passed = report.send_rate >= MIN_SEND_SHARE * wanted or math.isclose(report.send_rate, wanted)
    note = ""
    if not passed:
        if report.queued > 0.05 * max(report.issued, 1):
            note = (f"all {report.run.connections} connections were busy: the server answered too slowly to take"
                    f" {rate:,.0f} req/s over them (raise --connections to offer more concurrency)")
        else:
            note = (f"the load generator could not keep up (send lag p99 {_ms(report.send_lag.p99)}): it measured"
                    " its own limit, not the server's")
    return Check(f"send rate >= {MIN_SEND_SHARE:.0%} of {wanted:,.0f}/s", report.send_rate, "/s", passed, note)
