"""SLO parsing and verdicts, statistics, text/JSON/HTML reports, from hand-made samples."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import orjson
import pytest

from shipml.errors import SpecError
from shipml.loadtest import parse_duration, parse_slo, render_html
from shipml.loadtest.plan import ERR_CONNECT, ERR_TIMEOUT, Samples
from shipml.loadtest.report import LoadReport, RunInfo, build_report


def test_slo_terms_are_parsed_with_units() -> None:
    objectives = parse_slo("p50<20ms, p99<=0.05s,p99.9<200000us ,errors<0.1%,rps>900,max<1s,mean<5ms")
    assert [(o.metric, o.op, o.threshold, o.percentile) for o in objectives] == [
        ("p50", "<", 20.0, 50.0), ("p99", "<=", 50.0, 99.0), ("p99.9", "<", 200.0, 99.9),
        ("errors", "<", 0.1, None), ("rps", ">", 900.0, None), ("max", "<", 1000.0, None),
        ("mean", "<", 5.0, None)]
    assert [o.unit for o in objectives] == ["ms", "ms", "ms", "%", "/s", "ms", "ms"]
    assert parse_slo(None) == [] and parse_slo("  ") == []
    assert parse_slo("P99<50MS")[0].threshold == 50.0


@pytest.mark.parametrize(("text", "message"), [
    ("p99<50", "give a latency unit"),
    ("errors<0.1", "as a percentage"),
    ("errors<150%", "cannot exceed 100%"),
    ("rps>900ms", "plain number"),
    ("p0<5ms", "above 0 and at most 100"),
    ("p101<5ms", "above 0 and at most 100"),
    ("latency<5ms", "unknown metric 'latency'"),
    ("p99 50ms", "cannot read SLO term 'p99 50ms'"),
    ("p99<50ms,", "empty SLO term"),
    ("p99=<50ms", "cannot read SLO term"),
])
def test_bad_slo_terms_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_slo(text)


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("500ms") == 0.5 and parse_duration(2) == 2.0
    assert parse_duration("2m") == 120 and parse_duration("1h") == 3600 and parse_duration("1.5") == 1.5
    assert parse_duration("0", "grace", allow_zero=True) == 0.0
    for bad in ("", "ten seconds", "5 parsecs", "0", "-1s"):
        with pytest.raises(SpecError, match="duration"):
            parse_duration(bad)


def samples(latency_ms: list[float], status: list[int], rate: float = 10.0) -> Samples:
    n = len(status)
    scheduled = np.arange(n) / rate
    return Samples(scheduled=scheduled, sent=scheduled + 0.001, latency=np.array(latency_ms) / 1000.0,
                   status=np.array(status, dtype=np.int16), issued=n, elapsed_s=n / rate + 0.5, queued=0,
                   connections_opened=2)


def run_info(duration_s: float = 2.0, rate: float | None = 10.0) -> RunInfo:
    return RunInfo(url="http://127.0.0.1:9/", path="/models/m/predict", model="m", protocol="simple", rows=1,
                   duration_s=duration_s, connections=4, rate=rate, concurrency=None if rate else 2, payloads=3)


def test_statistics_count_timeouts_in_latency_but_not_connect_errors() -> None:
    latency = [float(v) for v in range(1, 18)] + [5000.0, 0.1, 12.0]  # 17 answers, a timeout, a refusal, a 503
    status = [200] * 17 + [ERR_TIMEOUT, ERR_CONNECT, 503]
    report = build_report(run_info(), samples(latency, status))
    assert report.issued == 20 and report.ok == 17 and report.answered == 18 and report.errors == 3
    assert report.error_rate == pytest.approx(15.0)
    assert report.statuses == {"200": 17, "503": 1, "timeout": 1, "connect": 1}
    measured = np.array([*latency[:18], 12.0])  # answers (any status) and the timeout, not the refusal
    assert report.latency.count == 19
    assert report.latency.p50 == pytest.approx(np.percentile(measured, 50))
    assert report.latency.p99 == pytest.approx(np.percentile(measured, 99))
    assert report.latency.max == 5000.0
    assert report.send_rate == pytest.approx(10.0)
    assert report.send_lag.p50 == pytest.approx(1.0) and report.send_lag.max == pytest.approx(1.0)
    assert [(s.t, s.requests, s.ok, s.errors) for s in report.timeline] == [(0, 10, 10, 0), (1, 10, 7, 3)]
    assert report.timeline[0].p50_ms == pytest.approx(5.5)


def test_verdict_and_exit_code_follow_the_checks() -> None:
    data = samples([2.0] * 19 + [80.0], [200] * 20)
    passing = build_report(run_info(), data, parse_slo("p50<5ms,errors<1%,rps>5"))
    assert passing.passed and passing.exit_code == 0
    assert [c.passed for c in passing.checks] == [True, True, True, True]  # + the send-rate check
    failing = build_report(run_info(), data, parse_slo("p99<50ms,max<=80ms"))
    assert [c.passed for c in failing.checks] == [False, True, True] and failing.exit_code == 1
    nothing = build_report(run_info(), samples([0.1, 0.1], [ERR_CONNECT, ERR_CONNECT]), parse_slo("p99<1s"))
    assert nothing.checks[0].measured is None and nothing.checks[0].note == "nothing measured"
    assert not nothing.passed


def test_a_run_that_did_not_offer_its_rate_fails() -> None:
    data = samples([1.0] * 20, [200] * 20)
    data.sent[10:] = 2.5  # half were sent after the run's 2 s
    report = build_report(run_info(), data)
    check = report.checks[-1]
    assert not check.passed and check.measured == pytest.approx(5.0)
    assert "could not keep up (send lag p99 " in check.note and report.exit_code == 1
    assert report.send_lag.max == pytest.approx(1500.0)  # request 10: due at 1.0 s, sent at 2.5 s
    closed = build_report(run_info(rate=None), data)  # closed loop has no target rate
    assert closed.checks == [] and closed.passed


def test_text_and_json_reports() -> None:
    report = build_report(run_info(), samples([1.0, 2.0, 3.0, 4.0], [200, 200, 503, 200]),
                          parse_slo("p99<10ms,errors<1%"))
    text = report.summary()
    for fragment in ("http://127.0.0.1:9/models/m/predict", "open loop at 10 req/s", "4 issued",
                     "200: 3  503: 1", "errors      1 (25%)", "p99<10ms", "verdict     FAIL"):
        assert fragment in text, fragment
    data = orjson.loads(orjson.dumps(report.to_dict()))
    assert data["ok"] == 3 and data["statuses"] == {"200": 3, "503": 1} and data["passed"] is False
    assert data["latency_ms"]["max"] == 4.0 and data["run"]["rate"] == 10.0
    assert len(data["timeline"]) == 1 and data["checks"][0]["name"] == "p99<10ms"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def html_report(status: list[int]) -> tuple[LoadReport, str]:
    n = len(status)
    latency = [1.0 + (i % 10) for i in range(n)]
    report = build_report(run_info(duration_s=n / 10), samples(latency, status), parse_slo("p99<50ms"))
    return report, render_html(report)


def test_html_report_is_self_contained_with_an_svg_plot() -> None:
    status = [200] * 25 + [503] * 3 + [200] * 2
    _, page = html_report(status)
    parser = _Tags()
    parser.feed(page)
    assert "svg" in parser.tags and "script" not in parser.tags and "link" not in parser.tags
    assert "http" not in page.replace("http://127.0.0.1:9", "").replace("http://www.w3.org/2000/svg", "")
    svg = ET.fromstring(page[page.index("<svg"): page.index("</svg>") + 6])
    ns = "{http://www.w3.org/2000/svg}"
    lines = svg.findall(f"{ns}polyline")
    assert len(lines) == 2  # p50 and p99
    assert all(len(line.attrib["points"].split()) == 3 for line in lines)  # one point per second
    bars = [r for r in svg.findall(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(bars) == 1 and "3 errors" in (bars[0].find(f"{ns}title").text or "")  # type: ignore[union-attr]
    assert "PASS" in page and "p99&lt;50ms" in page


def test_html_escapes_what_it_shows() -> None:
    report, _ = html_report([200] * 5)
    report.run = RunInfo(url="http://127.0.0.1:9/<script>", path="/x", model="m", protocol="simple", rows=1,
                         duration_s=1, connections=1, rate=10)
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    empty = build_report(run_info(), samples([], []))
    assert "No requests were made" in render_html(empty)
