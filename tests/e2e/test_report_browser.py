"""The monitoring report in headless Chromium: every plot is drawn, nothing is fetched (every request that is
not file: or data: is refused and recorded), no console error, and names from the data are shown as text, never
run as markup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shipml.monitoring.report_html import render_html
from tests.e2e.browser import Opened, browser, open_page
from tests.unit.report_support import sample_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


def plot_divs(page: str) -> list[str]:
    return re.findall(r'<div class="plot[^"]*" id="(plot-\d+)"></div>', page)


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
    assert "income: PSI 1.5" in opened.svg_text


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
