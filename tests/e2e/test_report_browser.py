"""The monitoring report in headless Chromium: every plot is drawn, nothing is fetched (every request that is
not file: or data: is refused and recorded), no console error, and names from the data are shown as text, never
run as markup."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shipml.monitoring.alerts import AlertEvent
from shipml.monitoring.report import ALERTS_FILE
from shipml.monitoring.report_html import render_html
from tests.e2e.browser import Opened, browser, open_page
from tests.unit import drift_models
from tests.unit.report_support import WrittenLog, fetches, sample_report, write_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


def plot_divs(page: str) -> list[str]:
    return re.findall(r'<div class="plot" id="(plot-\d+)" style="height:\d+px"></div>', page)


def check_drawn(opened: Opened, page: str) -> None:
    """Every plot div of the page holds plotly's SVG and at least one trace; nothing else went wrong."""
    expected = plot_divs(page)
    assert expected and opened.drawn == len(expected)
    assert [p["id"] for p in opened.plots] == expected
    undrawn = [p["id"] for p in opened.plots if p["svgs"] == 0 or p["traces"] == 0]
    assert not undrawn, f"plots not drawn: {undrawn}"
    assert opened.errors == []
    assert opened.refused == []
    assert opened.dialogs == []


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_plot_is_drawn_offline(chromium: Any, tmp_path: Path, task: str) -> None:
    report = sample_report(task=task, features=("income", "age", "plan"))
    page = render_html(report)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    opened = open_page(chromium, path)
    check_drawn(opened, page)
    # the features' plots come worst first, each titled with its name and PSI
    assert opened.text.index("1. income") < opened.text.index("2. age") < opened.text.index("3. plan")
    assert "1. income PSI 1.5: major shift" in opened.text


def test_a_page_that_would_fetch_is_caught(chromium: Any, tmp_path: Path) -> None:
    """The check above can fail: a page that asks for a remote script has the request refused and recorded."""
    page = render_html(sample_report()).replace(
        "</body>", '<img src="http://127.0.0.1:9/x.png"><script src="https://cdn.example/x.js"></script></body>')
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    opened = open_page(chromium, path)
    # the page's own Content-Security-Policy blocks both before any request leaves: Chromium reports each
    assert opened.refused or any("Content Security Policy" in e for e in opened.errors)


PAYLOADS = ['<b data-injected="1">bold</b>', '<img src=x data-injected onerror="alert(1)">',
            "<script>alert(1)</script>", '"><svg data-injected onload=alert(1)>',
            '<a href="javascript:alert(1)" data-injected>link</a>', "$x^2$", "&amp;", "a &lt; b",
            "</script><i data-injected>i</i>", "<br>", "{{x}} %{y}"]
plain = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="\x7f"),
                max_size=6)
name = st.builds(lambda a, p, b: f"{a}{p}{b}", plain, st.sampled_from(PAYLOADS), plain)


# no shrinking: each example is a page load; a failure is readable as found
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(name, min_size=2, max_size=3, unique=True), categories=st.lists(name, min_size=1,
       max_size=3, unique=True), model=name)
def test_names_from_the_data_are_text(chromium: Any, tmp_path: Path, names: list[str], categories: list[str],
                                      model: str) -> None:
    report = sample_report(model=model, features=names, categories=categories)
    page = render_html(report)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    opened = open_page(chromium, path)
    check_drawn(opened, page)
    assert opened.injected == 0
    for text in (*names, *categories, model):
        assert text in opened.text or text in opened.svg_text, text
    for text in names:
        assert text in opened.text  # the drift table and the features' headings
    for text in categories:
        assert text in opened.svg_text  # the categorical feature's tick labels


# -- shipml monitor, end to end -----------------------------------------------------------------------------------
HOUR = 3600.0


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WrittenLog]:
    """A real classifier (registry ROOT/registry) and 12 hours of its predictions in ROOT/log: rows of the training
    distribution, then ``income`` shifted; feedback for half the rows; an alert event that fired."""
    root = tmp_path_factory.mktemp("monitor")
    model = drift_models.classifier(root)
    start = math.floor(time.time() / HOUR) * HOUR - 13 * HOUR
    written = write_log(model, root / "log", start=start)
    event = AlertEvent("input-drift", "firing", "warning", "churn", "churn", model.version, "income", None, "psi",
                       4.2, "psi > 0.2", start + 7 * HOUR, start + 7.1 * HOUR)
    (root / "log" / "churn" / ALERTS_FILE).write_bytes(orjson.dumps(event.to_dict()) + b"\n")
    return root, written


def shipml(*args: str, registry: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipml.cli", *args, "--registry", str(registry)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_shipml_monitor_writes_a_page_that_shows_the_shift_first(chromium: Any, logged: tuple[Path, WrittenLog]
                                                                 ) -> None:
    root, written = logged
    out = root / "report.html"
    done = shipml("monitor", "churn", "--log", str(root / "log"), "-o", str(out), "--json",
                  registry=root / "registry")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["features"][0]["name"] == "income" and data["features"][0]["figures"]["psi"] > 0.25
    assert data["rows"] == len(written.frame) and data["labelled_rows"] == len(written.labels)
    assert [a["feature"] for a in data["alerts"]] == ["income"]
    assert data["html"] == {"path": str(out), "bytes": out.stat().st_size}
    page = out.read_text(encoding="utf-8")
    assert page.count("<script") == len(plot_divs(page)) + 2  # plotly once, one JSON block per plot, the drawing
    assert fetches(page) == []
    opened = open_page(chromium, out)
    check_drawn(opened, page)
    # the ten-second view: the summary names the worst feature, the drift table and the feature plots start with it
    assert "income: " in opened.summary and "alerts fired" in opened.summary
    assert opened.drift_rows[0] == "income"
    assert opened.text.index("1. income") < opened.text.index("2. ")
    # text mode: the summary table and the page's size
    text = shipml("monitor", "churn", "--log", str(root / "log"), "-o", str(root / "again.html"),
                  registry=root / "registry")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.startswith("income ") for line in lines)
    size = (root / "again.html").stat().st_size
    assert lines[-1] == f"wrote {root / 'again.html'} ({size / 1e6:.1f} MB)"


def test_shipml_monitor_since_and_errors(logged: tuple[Path, WrittenLog]) -> None:
    root, written = logged
    recent = shipml("monitor", "churn", "--log", str(root / "log"), "--since", "3h", "--json",
                    registry=root / "registry")
    assert recent.returncode == 0, recent.stderr
    data = json.loads(recent.stdout)
    assert 0 < data["rows"] < len(written.frame) and data["html"] is None
    assert data["first_time"] >= time.time() - 3 * HOUR - 60
    bad = shipml("monitor", "churn", "--log", str(root / "log"), "--since", "yesterday", registry=root / "registry")
    assert bad.returncode == 2 and "--since" in bad.stderr
    missing = shipml("monitor", "churn", "--log", str(root / "nowhere"), registry=root / "registry")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no prediction log at")
    unknown = shipml("monitor", "churn:7.0.0", "--log", str(root / "log"), registry=root / "registry")
    assert unknown.returncode == 1 and "no version 7.0.0" in unknown.stderr
