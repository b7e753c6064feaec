"""The report page as markup (the browser tests draw it): self-contained, plotly inlined once, every text from the
data escaped, the figures' JSON unable to end its <script> element."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from shipml.monitoring.report import Distribution, Report, Series
from shipml.monitoring.report_html import CSP, bin_labels, compact, ptext, render_html
from tests.unit.report_support import fetches, page_tags, sample_report

# what the renderer itself writes: anything else in a page is markup that came from the data
OWN_TAGS = {"html", "head", "meta", "title", "style", "script", "body", "h1", "h2", "h3", "small", "p", "div",
            "table", "thead", "tbody", "tr", "th", "td", "a", "b", "ul", "li"}
OWN_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "id", "href", "type", "data-plot",
                  "style"}


@pytest.fixture(scope="module")
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    js: str = get_plotlyjs()
    return js


def figures(page: str) -> list[dict[str, object]]:
    return [json.loads(block) for block in
            re.findall(r'<script type="application/json" data-plot="plot-\d+">(.*?)</script>', page, re.S)]


def test_plotly_is_inlined_once_and_nothing_is_fetched(plotly_js: str) -> None:
    page = render_html(sample_report(), plotly_js=plotly_js)
    assert page.count(plotly_js) == 1
    assert "</script" not in plotly_js.lower()  # why it can be inlined as it is
    assert fetches(page) == []
    tags, _ = page_tags(page)
    assert ("meta", {"http-equiv": "Content-Security-Policy", "content": CSP}) in tags
    assert CSP.startswith("default-src 'none'")
    plots = re.findall(r'<div class="plot" id="(plot-\d+)"', page)
    assert [f"plot-{i}" for i in range(len(plots))] == plots and len(figures(page)) == len(plots) >= 8


def test_the_page_without_plotly_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from shipml.errors import DependencyError

    monkeypatch.setitem(sys.modules, "plotly.offline", None)  # an import of it raises ImportError
    with pytest.raises(DependencyError, match=r"shipml\[report\]"):
        render_html(sample_report())


def test_features_come_worst_first_with_a_card_each(plotly_js: str) -> None:
    page = render_html(sample_report(features=("a", "b", "c", "d")), plotly_js="")
    _, text = page_tags(page)
    assert [text.index(f"{i}. {name}") for i, name in enumerate("abcd", 1)] == sorted(
        text.index(f"{i}. {name}") for i, name in enumerate("abcd", 1))
    assert "4 feature(s) shifted" not in text and "3 feature(s) shifted: a (PSI 1.5), b (PSI 0.75), c (PSI 0.5)" in text


def test_an_empty_report_renders() -> None:
    empty = Report(model="churn", ref="churn", task="classification", reference_version="1.0.0",
                   notes=("no prediction of this model was logged over the period",))
    page = render_html(empty, plotly_js="")
    _, text = page_tags(page)
    assert "No prediction was logged over the period." in text and figures(page) == []
    assert "no prediction of this model was logged" in text


def test_numeric_bins_get_short_labels() -> None:
    d = Distribution("numeric", ("a", "b", "c", "d", "null"), (0.0,) * 5, (0.0,) * 5, (1500.0, 62_100.0, 2.5e6))
    assert bin_labels(d) == ["< 1.5k", "1.5k – 62.1k", "62.1k – 2.5M", "> 2.5M", "null"]
    days = Distribution("numeric", ("a", "b", "c", "null"), (0.0,) * 4, (0.0,) * 4, (1.7e9, 1.8e9))
    assert bin_labels(days, "datetime") == ["< 2023-11-14", "2023-11-14 – 2027-01-15", "> 2027-01-15", "null"]
    categories = Distribution("categorical", ("x", "(null)"), (0.5, 0.5), (0.5, 0.5))
    assert bin_labels(categories) == ["x", "(null)"]
    assert [compact(v) for v in (0.000123, -7.0, 999.0, 1000.0, 1.23e13, math.nan)] == [
        "0.000123", "-7", "999", "1k", "12.3T", "nan"]


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="one reference and one current share per bin"):
        Distribution("categorical", ("a", "b"), (1.0,), (0.5, 0.5))
    with pytest.raises(ValueError, match=r"one value per time bucket \(2\): rows \(1\)"):
        Series(starts=(0.0, 60.0), width_s=60.0, rows=(1,), requests=(1, 1), labelled=(0, 0))
    with pytest.raises(ValueError, match="more than 0 seconds"):
        Series(width_s=0.0)


def test_plotly_text_has_no_markup_and_no_maths() -> None:
    assert ptext('<b>x</b> & "y" $z$') == '&lt;b&gt;x&lt;/b&gt; &amp; "y" &#36;z&#36;'


# -- names from the data, anything at all -------------------------------------------------------------------------
MARKUP = st.sampled_from(['<b data-injected="1">x</b>', "<script>alert(1)</script>", "</script><i id=x>",
                          '"><img src=x onerror=alert(1)>', "<!--", "]]>", "&amp;", "&lt;p&gt;", "$x$", "{{y}}",
                          "\u2028", "<a href='javascript:alert(1)'>l</a>", "<style>*{}</style>"])
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
NAME = st.builds(lambda a, m, b: f"{a}{m}{b}", TEXT, MARKUP, TEXT).filter(lambda s: s.strip() == s and s != "")


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking:
# an example is a whole page; the failing one is readable as found
@given(names=st.lists(NAME, min_size=1, max_size=4, unique=True),
       categories=st.lists(NAME, min_size=1, max_size=3, unique=True), model=NAME, version=NAME)
def test_names_are_text_never_markup(names: list[str], categories: list[str], model: str, version: str) -> None:
    page = render_html(sample_report(model=model, features=names, categories=categories, version=version),
                       plotly_js="")
    tags, text = page_tags(page)
    assert {tag for tag, _ in tags} <= OWN_TAGS
    assert {key for _, attrs in tags for key in attrs} <= OWN_ATTRIBUTES
    assert fetches(page) == []
    for name in (*names, model, version):
        assert name in text, name
    # the figures' JSON parses back to the same text, escaped for plotly (no raw "<" reaches a <script> element)
    blocks = re.findall(r'<script type="application/json" data-plot="plot-\d+">(.*?)</script>', page, re.S)
    assert all("<" not in block for block in blocks)
    texts = json.dumps([json.loads(block) for block in blocks], ensure_ascii=False)
    for category in categories:
        assert json.dumps(ptext(category), ensure_ascii=False)[1:-1] in texts, category
