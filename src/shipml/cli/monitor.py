"""`shipml monitor`: what changed for a served model, from its prediction log: a summary on the terminal, the
same data as JSON, and one self-contained HTML page."""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.monitoring.report import Report
from shipml.monitoring.report_collect import monitor
from shipml.monitoring.report_html import fmt, psi_word, render_html, when
from shipml.monitoring.spec import parse_duration


def register(group: click.Group) -> None:
    group.add_command(monitor_command)


def _since(text: str) -> float | None:
    if text.strip().lower() == "all":
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (or 'all')", param_hint="--since") from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than 0 (or 'all')", param_hint="--since")
    return seconds


def write_atomic(path: Path, text: str) -> int:
    """``text`` as ``path`` (UTF-8), written beside it under a temporary name and renamed: a reader never sees a
    half page, and an existing page is replaced only by a whole new one. Returns the size in bytes."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return len(data)


def size_text(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def summary_text(report: Report, top: int = 10) -> str:
    lines = [f"{report.ref}: {report.rows:,} rows, {report.requests:,} requests, "
             f"{when(report.first_time)} to {when(report.last_time)}; version(s) "
             f"{', '.join(report.versions) or '-'}"]
    if report.features:
        lines += [f"drift against {report.model}:{report.reference_version}'s training profile "
                  f"({report.drift_rows:,} rows), worst first:",
                  table(["feature", "kind", "psi", "verdict", "ks", "chi2", "null_share", "out_of_range_share"],
                        [(f.name, f.kind, fmt(f.psi), psi_word(f.psi), fmt(f.figures.get("ks", math.nan)),
                          fmt(f.figures.get("chi2", math.nan)), fmt(f.figures.get("null_share", math.nan)),
                          fmt(f.figures.get("out_of_range_share", math.nan))) for f in report.worst(top)])]
    if report.prediction is not None:
        lines.append(f"prediction drift: psi {fmt(report.prediction.psi)} ({psi_word(report.prediction.psi)})")
    metrics = sorted(set(report.realised) | {k.removeprefix("estimated_") for k in report.estimated})
    if metrics:
        lines.append(f"performance ({report.labelled_rows:,} labelled rows), realised / estimated:")
        lines.append(table(["metric", "realised", "estimated"],
                           [(m, fmt(report.realised.get(m, math.nan)),
                             fmt(report.estimated.get(f"estimated_{m}", math.nan))) for m in metrics]))
    fired = report.fired()
    lines.append(f"alerts fired: {len(fired)}" + "".join(
        f"\n  {e.get('at')} {e.get('alert')} {e.get('feature') or e.get('label') or ''} "
        f"{e.get('metric')}={e.get('value')}" for e in fired[-10:]))
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


@click.command("monitor")
@click.argument("ref", metavar="NAME[@ALIAS|:VERSION]")
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The prediction log directory (serve --log DIR, predict --log DIR).")
@click.option("--since", "since", default="24h", show_default=True, metavar="DURATION",
              help="How far back: 90m, 24h, 7d ... or 'all'.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the report as one self-contained HTML page (works offline).")
@click.option("--buckets", type=click.IntRange(2, 500), default=48, show_default=True,
              help="At most this many time buckets in the charts.")
@click.pass_obj
@handle_errors
def monitor_command(ctx: Context, ref: str, log_dir: str, since: str, output: Path | None, buckets: int) -> None:
    """What changed for a served model over the last --since: drift of every input feature against the
    training profile (worst first), the predictions, realised and estimated performance, latency, volume and
    the alerts that fired. Prints a summary (or --json); -o FILE also writes the HTML page."""
    window = _since(since)
    now = time.time()
    report = monitor(ctx.registry(), ref, log_dir, since=None if window is None else now - window, until=None,
                     now=now, max_buckets=buckets)
    page: dict[str, Any] | None = None
    if output is not None:
        page = {"path": str(output), "bytes": write_atomic(output, render_html(report))}
    if ctx.as_json:
        emit_json({**report.to_dict(), "html": page})
        return
    click.echo(summary_text(report))
    if page is not None:
        click.echo(f"wrote {output} ({size_text(page['bytes'])})")
