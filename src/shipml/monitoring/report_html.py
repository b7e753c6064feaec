"""One self-contained HTML page from a :class:`~shipml.monitoring.report.Report`: plotly draws the charts, its
JavaScript inlined once, each figure a JSON document the page hands to ``Plotly.newPlot``. No network: the page
loads nothing (its Content-Security-Policy allows no fetch at all), so it works offline and from an e-mail.

Every text that comes from data (model, version, feature and category names, alert fields) is escaped: HTML
escaping in the page, and in the figures too, because plotly reads a subset of HTML tags in trace names and tick
labels (``<b>``, ``<a href>``, ``<br>``) and decodes entities, so an escaped name is drawn as the text it is.
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from shipml._optional import import_optional
from shipml.monitoring.report import Distribution, FeatureReport, Report, Series

__all__ = ["MAX_FEATURE_PLOTS", "PSI_MAJOR", "PSI_MODERATE", "bin_labels", "compact", "render_html"]

#: PSI rule of thumb: below 0.1 the distribution is stable, 0.1-0.25 a moderate shift, above 0.25 a major one.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
#: Features drawn one by one (the worst first); the others are listed in the drift table only.
MAX_FEATURE_PLOTS = 40
#: Features drawn in the PSI-over-time chart (the worst first).
MAX_PSI_LINES = 8

REFERENCE_COLOR = "#8c9eb5"
CURRENT_COLOR = "#d9480f"
COLORS = ("#1c7ed6", "#d9480f", "#2b8a3e", "#7048e8", "#e8590c", "#0b7285", "#c2255c", "#5c940d", "#862e9c",
          "#495057")
# default-src 'none': the page fetches nothing; plotly needs inline scripts, styles and data: images
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
 padding:16px 24px;color:#212529;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #dee2e6}
h3{font-size:1em;margin:.2em 0}
.meta{color:#495057;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #dee2e6;border-radius:6px;padding:8px 12px;min-width:140px}
.card .v{font-size:1.35em;font-weight:600}.card .k{color:#495057;font-size:.85em}
.bad{color:#c92a2a}.warn{color:#e67700}.ok{color:#2b8a3e}
table{border-collapse:collapse;margin:6px 0;font-size:.92em}
td,th{border-bottom:1px solid #e9ecef;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f8f9fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
.feature{border:1px solid #dee2e6;border-radius:6px;padding:8px}
.plot{width:100%}
.card-figures{font-size:.85em}.headline{font-size:1.05em;margin:6px 0 2px}
.notes{color:#495057;font-size:.9em}
"""

# Each figure is a JSON <script> block; this draws them all, then marks the page (<html data-drawn="N">).
DRAW = """
Promise.all(Array.from(document.querySelectorAll('script[type="application/json"][data-plot]'), function (node) {
  var fig = JSON.parse(node.textContent);
  return Plotly.newPlot(node.getAttribute('data-plot'), fig.data, fig.layout,
                        {displaylogo: false, responsive: true});
})).then(function (plots) { document.documentElement.setAttribute('data-drawn', String(plots.length)); });
"""


def esc(value: object) -> str:
    """Text (of any origin) as HTML text or attribute value, and as plotly text (plotly decodes entities)."""
    return html.escape(str(value), quote=True)


def ptext(value: object) -> str:
    """Text for a plotly figure: escaped (plotly decodes entities) and with no "$" (a "$...$" text is maths to
    plotly, which would want MathJax)."""
    # only plotly's own entities: it decodes &amp; &lt; &gt; and numeric ones, not &quot;
    return html.escape(str(value), quote=False).replace("$", "&#36;")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def when(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _axis_time(seconds: Iterable[float]) -> list[str]:
    """Bucket starts as plotly date strings (UTC; plotly takes no offset in a date string)."""
    return [datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d %H:%M:%S") for s in seconds]


def psi_class(psi: float) -> str:
    if not math.isfinite(psi):
        return ""
    return "bad" if psi > PSI_MAJOR else "warn" if psi > PSI_MODERATE else "ok"


def psi_word(psi: float) -> str:
    if not math.isfinite(psi):
        return "not measured"
    return "major shift" if psi > PSI_MAJOR else "moderate shift" if psi > PSI_MODERATE else "stable"


class _Figures:
    """The page's figures: each an id and the JSON plotly draws (escaped for a <script> element)."""

    def __init__(self) -> None:
        self.go = import_optional("plotly.graph_objects", "report", "plotly")
        self.blocks: list[str] = []

    def add(self, figure: Any, *, height: int) -> str:
        figure.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 40}, paper_bgcolor="white",
                             plot_bgcolor="#f8f9fa", font={"size": 12})
        if figure.layout.legend.y is None:  # below the plot, unless the figure placed it
            figure.update_layout(legend={"orientation": "h", "y": -0.15, "yanchor": "top"})
        figure.update_xaxes(automargin=True)
        spec = figure.to_plotly_json()
        spec["layout"].pop("template", None)
        data = orjson.dumps(spec, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        # JSON in a <script> element: "<" never appears raw, so no "</script>" or "<!--" can end or bend it
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        plot_id = f"plot-{len(self.blocks)}"
        self.blocks.append(f'<script type="application/json" data-plot="{plot_id}">{data}</script>')
        return f'<div class="plot" id="{plot_id}" style="height:{height}px"></div>'


def render_html(report: Report, *, plotly_js: str | None = None) -> str:
    """The page. ``plotly_js`` is the plotly.js source to inline (default: the one the plotly package ships)."""
    figures = _Figures()
    if plotly_js is None:
        plotly_js = import_optional("plotly.offline", "report", "plotly").get_plotlyjs()
    versions = ", ".join(report.versions) or report.reference_version
    body = [
        f"<h1>{esc(report.model)} <small>({esc(versions)})</small></h1>",
        f'<p class="meta">{esc(report.ref)}: {when(report.first_time)} to {when(report.last_time)} · period '
        f"{when(report.since) if report.since is not None else 'all'} to "
        f"{when(report.until) if report.until is not None else 'now'} · generated {when(report.generated_at)}</p>",
        _summary(report),
        _changes(report),
        _alerts(report),
        "<h2>Drift over time</h2>" + _psi_over_time(figures, report) if report.series.psi else "",
        "<h2>Predictions</h2>" + _predictions(figures, report),
        "<h2>Performance over time</h2>" + _performance(figures, report),
        "<h2>Traffic</h2>" + _traffic(figures, report.series),
        _features(figures, report),
        _notes(report),
    ]
    title = f"shipml monitor: {esc(report.model)}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title><style>{CSS}</style>",
        # plotly.js holds no "</script" (checked by the tests): inlined as it is
        f"<script>{plotly_js}</script></head><body>",
        *[part for part in body if part],
        *figures.blocks,
        f"<script>{DRAW}</script>",
        f"<p class=\"notes\">generated by shipml at {when(time.time())}</p></body></html>",
    ])


# -- summary ----------------------------------------------------------------------------------------------------
def _card(value: str, key: str, css: str = "") -> str:
    return f'<div class="card"><div class="v {css}">{value}</div><div class="k">{key}</div></div>'


def _summary(report: Report) -> str:
    cards = [_card(f"{report.rows:,}", f"rows ({report.requests:,} requests)"),
             _card(esc(", ".join(report.versions) or "–"), "model version(s)"),
             _card(f"{report.labelled_rows:,}", "rows with feedback")]
    for metric in _shown_metrics(report.realised, report.estimated):
        realised = report.realised.get(metric, math.nan)
        estimated = report.estimated.get(f"estimated_{metric}", math.nan)
        cards.append(_card(f"{fmt(realised)} <small>/ est. {fmt(estimated)}</small>",
                           f"{esc(metric)}: realised / estimated"))
    worst = report.worst(1)
    if worst:
        cards.append(_card(f"{esc(worst[0].name)}: {fmt(worst[0].psi)}", "worst drift (PSI)",
                           psi_class(worst[0].psi)))
    if report.prediction is not None:
        cards.append(_card(fmt(report.prediction.psi), "prediction drift (PSI)", psi_class(report.prediction.psi)))
    fired = report.fired()
    cards.append(_card(str(len(fired)), "alerts fired", "bad" if fired else "ok"))
    return ('<h2>Summary</h2><div id="summary">' + _headline(report) + '<div class="cards">' + "".join(cards)
            + "</div></div>")


def _headline(report: Report) -> str:
    """One sentence a person reads first: what drifted, how the predictions and performance moved, alerts."""
    if not report.rows:
        return '<p class="headline">No prediction was logged over the period.</p>'
    parts = []
    shifted = [f for f in report.features if f.psi > PSI_MODERATE]
    if shifted:
        named = ", ".join(f'<b class="{psi_class(f.psi)}">{esc(f.name)}</b> (PSI {fmt(f.psi)})' for f in shifted[:3])
        more = f" and {len(shifted) - 3} more" if len(shifted) > 3 else ""
        parts.append(f"{len(shifted)} feature(s) shifted: {named}{more}")
    elif report.features:
        parts.append("no input feature shifted (every PSI at most 0.1)")
    if report.prediction is not None and math.isfinite(report.prediction.psi):
        parts.append(f"predictions {psi_word(report.prediction.psi)} (PSI {fmt(report.prediction.psi)})")
    for metric in _shown_metrics(report.realised, report.estimated)[:1]:
        parts.append(f"{esc(metric)} {fmt(report.realised.get(metric, math.nan))} realised vs "
                     f"{fmt(report.estimated.get(f'estimated_{metric}', math.nan))} estimated")
    fired = report.fired()
    parts.append(f"{len(fired)} alert(s) fired" if fired else "no alert fired")
    return '<p class="headline">' + "; ".join(parts) + ".</p>"


def _shown_metrics(realised: Mapping[str, float], estimated: Mapping[str, float]) -> list[str]:
    """The headline metrics: accuracy and roc_auc for a classifier, mae and rmse for a regressor."""
    names = [m for m in ("accuracy", "roc_auc", "mae", "rmse") if m in realised or f"estimated_{m}" in estimated]
    return names or sorted(realised)[:2]


def _changes(report: Report) -> str:
    """The drift table: every feature, worst first, with its figures."""
    if not report.features:
        return ""
    columns = ("psi", "ks", "chi2", "cramers_v", "null_share", "out_of_range_share", "unseen_share")
    rows = []
    for rank, f in enumerate(report.features, 1):
        link = f'<a href="#feature-{rank}">{esc(f.name)}</a>' if rank <= MAX_FEATURE_PLOTS else esc(f.name)
        cells = "".join(f'<td class="n">{fmt(f.figures.get(c, math.nan))}</td>' for c in columns)
        rows.append(f'<tr><td class="n">{rank}</td><td class="name">{link}</td><td>{esc(f.kind)}</td>'
                    f'<td class="{psi_class(f.psi)}">{psi_word(f.psi)}</td>{cells}</tr>')
    head = "".join(f"<th>{c}</th>" for c in ("#", "feature", "kind", "verdict", *columns))
    return (f"<h2>What changed: drift, worst first</h2><p class=\"meta\">{report.drift_rows:,} rows of version "
            f"{esc(report.reference_version)} against its training profile. PSI above {PSI_MODERATE} is a moderate "
            f"shift, above {PSI_MAJOR} a major one.</p>"
            f'<table id="drift"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _alerts(report: Report) -> str:
    if not report.alerts:
        return '<h2>Alerts</h2><p id="alerts">No alert fired over the period.</p>'
    keys = ("at", "state", "alert", "severity", "feature", "label", "metric", "value", "condition", "endpoint",
            "version")
    rows = []
    for event in report.alerts:
        cells = []
        for key in keys:
            value = event.get(key)
            if key == "at" and isinstance(value, int | float):
                text = when(float(value))
            elif isinstance(value, float):
                text = fmt(value)
            else:
                text = "" if value is None else esc(value)
            css = ' class="bad"' if key == "state" and value == "firing" else ""
            cells.append(f"<td{css}>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{k}</th>" for k in keys)
    return (f'<h2>Alerts</h2><table id="alerts"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    return '<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in report.notes) + "</ul>"


# -- charts -----------------------------------------------------------------------------------------------------
def _time_layout(figure: Any, title: str, y_title: str, width_s: float) -> None:
    figure.update_layout(title={"text": f"{title} <span style='font-size:11px'>(UTC, {_duration(width_s)} "
                                        f"buckets)</span>"}, hovermode="x unified", bargap=0.05)
    figure.update_xaxes(type="date")
    figure.update_yaxes(title={"text": y_title})


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _empty(what: str) -> str:
    return f'<p class="notes">{what}</p>'


def _psi_over_time(figures: _Figures, report: Report) -> str:
    go = figures.go
    s = report.series
    x = _axis_time(s.starts)
    figure = go.Figure()
    shown = [f.name for f in report.features if f.name in s.psi][:MAX_PSI_LINES]
    for i, name in enumerate(shown):
        figure.add_trace(go.Scatter(x=x, y=list(s.psi[name]), name=ptext(name), mode="lines+markers",
                                    line={"color": COLORS[i % len(COLORS)]}))
    figure.add_hline(y=PSI_MAJOR, line={"dash": "dot", "color": "#c92a2a"})
    window = f", each over the trailing {s.psi_window_rows}+ rows" if s.psi_window_rows else ""
    _time_layout(figure, f"PSI over time (the {len(shown)} worst features{window})", "PSI", s.width_s)
    return figures.add(figure, height=360)


def _distribution_figure(figures: _Figures, d: Distribution, title: str | None = None, dtype: str = "") -> Any:
    """Reference vs current shares side by side on the same bins (legend on top: tick labels may be long)."""
    go = figures.go
    labels = [ptext(label) for label in bin_labels(d, dtype)]
    figure = go.Figure([
        go.Bar(x=labels, y=list(d.reference), name="reference (training)", marker={"color": REFERENCE_COLOR}),
        go.Bar(x=labels, y=list(d.current), name="current (served)", marker={"color": CURRENT_COLOR})])
    figure.update_layout(barmode="group", bargap=0.15,
                         legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"})
    if title is not None:
        figure.update_layout(title={"text": title, "x": 0.01, "y": 0.98, "yanchor": "top"})
    figure.update_xaxes(type="category", tickangle=-35 if len(labels) > 6 else 0)
    figure.update_yaxes(title={"text": "share of rows"}, tickformat=".0%")
    return figure


def bin_labels(d: Distribution, dtype: str = "") -> list[str]:
    """Short tick labels: a numeric distribution's bins from its edges (``< a``, ``a – b``, ``> b``, null) with
    compact numbers (dates for a datetime feature); any other distribution's labels as they are."""
    edges = d.edges
    if d.kind != "numeric" or len(edges) < 2 or len(d.labels) != len(edges) + 2:
        return list(d.labels)
    span = edges[-1] - edges[0]

    def short(value: float) -> str:
        if dtype == "datetime":
            stamp = datetime.fromtimestamp(value, UTC)
            return stamp.strftime("%Y-%m-%d" if span >= 5 * 86400 else "%m-%d %H:%M")
        return compact(value)

    inner = [f"{short(a)} – {short(b)}" for a, b in itertools.pairwise(edges)]
    return [f"< {short(edges[0])}", *inner, f"> {short(edges[-1])}", d.labels[-1]]


def compact(value: float) -> str:
    """A number in at most ~6 characters: 3 significant digits, k/M/G/T for thousands and up."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if size >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _predictions(figures: _Figures, report: Report) -> str:
    go = figures.go
    s = report.series
    parts = []
    if report.prediction is not None:
        p = report.prediction
        title = f"prediction distribution: PSI {fmt(p.psi)} ({psi_word(p.psi)})"
        parts.append(figures.add(_distribution_figure(figures, p.distribution, title), height=340))
    if s.prediction and s.starts:
        x = _axis_time(s.starts)
        figure = go.Figure()
        if report.task == "classification":
            for i, (label, shares) in enumerate(s.prediction.items()):
                figure.add_trace(go.Bar(x=x, y=list(shares), name=ptext(label),
                                        marker={"color": COLORS[i % len(COLORS)]}))
            figure.update_layout(barmode="stack")
            _time_layout(figure, "predicted classes per time bucket", "share of rows", s.width_s)
            figure.update_yaxes(tickformat=".0%", range=[0, 1])
        else:
            for i, (key, values) in enumerate(s.prediction.items()):
                figure.add_trace(go.Scatter(x=x, y=list(values), name=ptext(key), mode="lines+markers",
                                            line={"color": COLORS[i % len(COLORS)], "dash": "solid"
                                                  if key == "mean" else "dot"}))
            _time_layout(figure, "prediction per time bucket", "prediction", s.width_s)
        parts.append(figures.add(figure, height=320))
    if not parts:
        return _empty("No prediction was logged over the period.")
    return '<div class="grid">' + "".join(parts) + "</div>"


def _performance(figures: _Figures, report: Report) -> str:
    go = figures.go
    s = report.series
    if not s.starts or not (s.realised or s.estimated):
        return _empty("No performance to show: no feedback was joined and the model gives no probabilities.")
    x = _axis_time(s.starts)
    figure = go.Figure()
    names = [m for m in ("accuracy", "roc_auc", "mae", "rmse")
             if m in s.realised or f"estimated_{m}" in s.estimated]
    for i, metric in enumerate(names):
        color = COLORS[i % len(COLORS)]
        if metric in s.realised:
            figure.add_trace(go.Scatter(x=x, y=list(s.realised[metric]), name=f"{metric} (realised)",
                                        mode="lines+markers", line={"color": color}))
        estimated = f"estimated_{metric}"
        if estimated in s.estimated:
            figure.add_trace(go.Scatter(x=x, y=list(s.estimated[estimated]), name=f"{metric} (estimated)",
                                        mode="lines", line={"color": color, "dash": "dash"}))
    figure.add_trace(go.Bar(x=x, y=list(s.labelled), name="rows with feedback", yaxis="y2",
                            marker={"color": "#dee2e6"}, opacity=0.6))
    window = (f"; each point over the trailing buckets holding {s.performance_window_rows}+ labelled rows"
              if s.performance_window_rows else "")
    _time_layout(figure, f"realised (solid, from feedback) and estimated (dashed, from the model's probabilities)"
                         f"{window}", "metric", s.width_s)
    figure.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": {"text": "rows with feedback"},
                                 "showgrid": False, "rangemode": "tozero"})
    return figures.add(figure, height=380)


def _traffic(figures: _Figures, s: Series) -> str:
    go = figures.go
    if not s.starts:
        return _empty("No request was logged over the period.")
    x = _axis_time(s.starts)
    volume = go.Figure()
    for i, (version, rows) in enumerate(s.rows_by_version.items()):
        volume.add_trace(go.Bar(x=x, y=list(rows), name=f"rows of {ptext(version)}",
                                marker={"color": COLORS[i % len(COLORS)]}))
    volume.add_trace(go.Scatter(x=x, y=list(s.requests), name="requests", mode="lines+markers",
                                line={"color": "#212529"}))
    volume.update_layout(barmode="stack")
    _time_layout(volume, "volume per time bucket", "count", s.width_s)
    latency = go.Figure()
    for i, (key, values) in enumerate(s.latency_ms.items()):
        latency.add_trace(go.Scatter(x=x, y=list(values), name=ptext(key), mode="lines+markers",
                                     line={"color": COLORS[i % len(COLORS)]}))
    _time_layout(latency, "request latency percentiles (receive to prediction)", "milliseconds", s.width_s)
    return ('<div class="grid">' + figures.add(volume, height=320)
            + figures.add(latency, height=320) + "</div>")


def _features(figures: _Figures, report: Report) -> str:
    if not report.features:
        return ""
    parts = []
    for rank, f in enumerate(report.features[:MAX_FEATURE_PLOTS], 1):
        plot = figures.add(_distribution_figure(figures, f.distribution, dtype=f.dtype), height=300)
        parts.append(f'<div class="feature" id="feature-{rank}"><h3>{rank}. {esc(f.name)} '
                     f'<small class="{psi_class(f.psi)}">PSI {fmt(f.psi)}: {psi_word(f.psi)}</small></h3>'
                     f"{_figure_table(f)}{plot}</div>")
    more = len(report.features) - MAX_FEATURE_PLOTS
    tail = _empty(f"{more} more feature(s) drift less: see the table above.") if more > 0 else ""
    return ("<h2>Features: reference vs current, worst first</h2>"
            f'<div class="grid" id="features">{"".join(parts)}</div>{tail}')


#: The figures a feature's card shows, by kind (the drift table above has them all).
CARD_FIGURES = {"numeric": ("ks", "null_share", "out_of_range_share"),
                "categorical": ("chi2", "cramers_v", "unseen_share", "null_share")}


def _figure_table(f: FeatureReport) -> str:
    shown = [(k, f.figures.get(k, math.nan)) for k in CARD_FIGURES.get(f.kind, ())]
    cells = "".join(f"<th>{esc(k)}</th>" for k, _ in shown)
    values = "".join(f'<td class="n">{fmt(v)}</td>' for _, v in shown)
    return (f'<table class="card-figures"><tr>{cells}<th>rows</th></tr><tr>{values}'
            f'<td class="n">{f.rows:,}</td></tr></table>')

