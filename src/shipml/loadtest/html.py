"""A load-test report as one self-contained HTML page: the summary, the checks, and an inline SVG plot of
latency over time (p50 and p99 of the requests scheduled in each second) with errors per second as bars.
No script and no external resource, so the file can be attached to a ticket or archived as it is."""

from __future__ import annotations

import math
from html import escape

from shipml.loadtest.report import LoadReport, Second

WIDTH, HEIGHT = 860, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 56, 16, 40
P50_COLOUR, P99_COLOUR, ERROR_COLOUR = "#1f77b4", "#d62728", "#bbbbbb"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 960px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 3px 12px 3px 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
svg text { font-size: 11px; fill: #444; }
"""


def render_html(report: LoadReport) -> str:
    """The whole page."""
    verdict = '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    run = report.run
    title = f"Load test of {run.url.rstrip('/')}{run.path}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}: {verdict}</h1>",
        "<h2>Latency over time</h2>",
        latency_svg(report.timeline),
        "<h2>Checks</h2>",
        _checks_table(report),
        "<h2>Summary</h2>",
        f"<pre>{escape(report.summary())}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _checks_table(report: LoadReport) -> str:
    if not report.checks:
        return "<p>No objectives were given (pass --slo).</p>"
    rows = ["<table><tr><th>objective</th><th>measured</th><th>result</th><th></th></tr>"]
    for check in report.checks:
        measured = "n/a" if check.measured is None else f"{check.measured:,.4g}{check.unit}"
        result = '<span class="pass">pass</span>' if check.passed else '<span class="fail">FAIL</span>'
        rows.append(f"<tr><td>{escape(check.name)}</td><td class=\"num\">{escape(measured)}</td>"
                    f"<td>{result}</td><td>{escape(check.note)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _nice_ceiling(value: float) -> float:
    """A round number at or above ``value`` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def latency_svg(timeline: list[Second]) -> str:
    """p50 and p99 lines (left axis, ms) and error bars (right axis, count) per second, as inline SVG."""
    if not timeline:
        return "<p>No requests were made.</p>"
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    seconds = len(timeline)
    highest = max((s.p99_ms or 0.0 for s in timeline), default=0.0)
    y_max = _nice_ceiling(highest * 1.05)
    e_max = max(4.0, _nice_ceiling(max(s.errors for s in timeline)))  # whole-number ticks

    def x(t: float) -> float:
        return LEFT + plot_w * (t + 0.5) / seconds

    def y(ms: float) -> float:
        return TOP + plot_h * (1 - ms / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="latency over time">',
           f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    bar_w = max(plot_w / seconds * 0.6, 1.0)
    for s in timeline:
        if s.errors:
            h = plot_h * s.errors / e_max
            out.append(f'<rect x="{x(s.t) - bar_w / 2:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                       f'height="{h:.1f}" fill="{ERROR_COLOUR}"><title>{s.t}s: {s.errors} errors</title></rect>')
    for k in range(5):  # horizontal grid and both axes' labels
        frac = k / 4
        gy = TOP + plot_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{LEFT + plot_w}" y2="{gy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">{_label(y_max * frac)}</text>')
        out.append(f'<text x="{LEFT + plot_w + 6}" y="{gy + 4:.1f}">{_label(e_max * frac)}</text>')
    step = max(1, math.ceil(seconds / 10))
    for t in range(0, seconds, step):
        out.append(f'<text x="{x(t):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{t}s</text>')
    for name, colour in (("p50_ms", P50_COLOUR), ("p99_ms", P99_COLOUR)):
        points = [(x(s.t), y(v)) for s in timeline if (v := getattr(s, name)) is not None]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in points)
    legend_y = HEIGHT - 8
    out.append(f'<text x="{LEFT}" y="{legend_y}">latency ms (left):</text>')
    out.append(f'<text x="{LEFT + 112}" y="{legend_y}" style="fill:{P50_COLOUR}">━ p50</text>')
    out.append(f'<text x="{LEFT + 162}" y="{legend_y}" style="fill:{P99_COLOUR}">━ p99</text>')
    out.append(f'<text x="{LEFT + 222}" y="{legend_y}">▮ errors per second (right), by the second each'
               ' request was due</text>')
    out.append("</svg>")
    return "\n".join(out)


def _label(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value:,.0f}"
