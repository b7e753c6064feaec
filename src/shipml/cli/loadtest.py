"""``shipml loadtest`` (open-loop load and SLO verdict) and ``shipml locustfile`` (a Locust test to run yourself).

Exit codes of ``loadtest``: 0 every check passed, 1 a check failed (an SLO, or the target rate was not
offered), 2 the test could not run (bad options, unreachable server, unknown model).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.errors import ShipmlError

if TYPE_CHECKING:
    from shipml.loadtest import Progress

PROTOCOL = click.Choice(["simple", "v1", "v2"])


class _ProgressLine:
    """One line on stderr every interval: rewritten in place on a terminal, appended otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, p: Progress) -> None:
        p99 = "-" if p.p99_ms is None else f"{p.p99_ms:.1f} ms"
        line = (f"{p.elapsed_s:6.1f}s  sent {p.sent:,}  done {p.done:,}  {p.rate:,.0f}/s  p99(1s) {p99}"
                f"  errors {p.errors:,}")
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


@click.command("loadtest")
@click.argument("url")
@click.option("--model", metavar="NAME", help="Model (endpoint) on the server; default: the only one served.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="R",
              help="Open loop: R requests/s whatever the answers (default 100).")
@click.option("--concurrency", type=click.IntRange(min=1), metavar="C",
              help="Closed loop instead: C requests in flight, back to back (saturation tests).")
@click.option("--duration", default="30s", show_default=True, help="How long to send: 30s, 500ms, 2m.")
@click.option("--slo", metavar="TERMS", help='Objectives, e.g. "p99<50ms,errors<0.1%,rps>900".')
@click.option("--protocol", type=PROTOCOL, default="simple", show_default=True,
              help="simple: /models/NAME/predict; v1: /v1/models/NAME:predict; v2: /v2/models/NAME/infer.")
@click.option("--rows", type=click.IntRange(min=1), default=1, show_default=True, help="Rows per request.")
@click.option("--connections", type=click.IntRange(min=1), default=64, show_default=True,
              help="Keep-alive connections in open loop (a request waiting for one still counts its wait).")
@click.option("--ref", metavar="REF", help="Read the signature and golden sample of REF from the registry (--registry)"
              " instead of asking the server (GET /models/NAME).")
@click.option("--payload", type=click.Path(dir_okay=False), help="Send this JSON file as every request's body.")
@click.option("--path", "route", metavar="PATH", help="Post to PATH instead of the protocol's model route.")
@click.option("--token", envvar="SHIPML_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Send 'Authorization: Bearer TOKEN' (never printed).")
@click.option("--timeout", default="10s", show_default=True, help="A request unanswered this long is a timeout.")
@click.option("--grace", default="2s", show_default=True,
              help="After the duration, wait this long for answers in flight before counting them as timeouts.")
@click.option("--max-requests", type=click.IntRange(min=1), help="Stop after this many requests.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated bodies.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write an HTML report here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@click.pass_obj
def loadtest_command(ctx: Context, url: str, model: str | None, rate: float | None, concurrency: int | None,
                     duration: str, slo: str | None, protocol: str, rows: int, connections: int, ref: str | None,
                     payload: str | None, route: str | None, token: str | None, timeout: str, grace: str,
                     max_requests: int | None, seed: int, html_path: str | None, quiet: bool) -> None:
    """Load URL (a shipml server's base URL) at a constant arrival rate and check SLOs.

    Open loop: request i is due at start + i/R and its latency counts from then, so a slow server cannot
    hide behind a slow client (the scheduler ticks every millisecond, so on a sub-millisecond endpoint
    latencies read up to ~1 ms high: see "send lag"). Bodies come from the model's signature and golden
    sample. Exit code 0: all checks passed; 1: a check failed; 2: the test could not run.
    """
    from shipml.loadtest import render_html, run_loadtest

    if rate is not None and concurrency is not None:
        raise click.UsageError("give --rate or --concurrency, not both")
    progress = None if quiet else _ProgressLine()
    try:
        report = run_loadtest(
            url, model=model, rate=rate, concurrency=concurrency, duration=duration, slo=slo,
            protocol=protocol,  # type: ignore[arg-type]
            rows=rows, ref=ref, registry=ctx.registry_uri, payload=payload, path=route,
            token=token or None, connections=connections, timeout=timeout, grace=grace,
            max_requests=max_requests, seed=seed, progress=progress)
    except ShipmlError as exc:
        if progress is not None:
            progress.close()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if progress is not None:
        progress.close()
    if html_path:
        try:
            Path(html_path).write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            click.echo(f"error: cannot write the HTML report to {html_path}: {exc.strerror}", err=True)
            sys.exit(2)
    if ctx.as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.summary())
    if html_path:
        click.echo(f"html report: {html_path}", err=True)
    sys.exit(report.exit_code)


@click.command("locustfile")
@click.argument("ref")
@click.option("--protocol", type=PROTOCOL, default="simple", show_default=True, help="Route and body format.")
@click.option("--rows", type=click.IntRange(min=1), default=1, show_default=True, help="Rows per request.")
@click.option("--model", "served_as", metavar="NAME", help="Endpoint name on the server (default: the model's).")
@click.option("--payloads", type=click.IntRange(min=1, max=10_000), default=16, show_default=True,
              help="Distinct example bodies embedded in the file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.pass_obj
@handle_errors
def locustfile_command(ctx: Context, ref: str, protocol: str, rows: int, served_as: str | None, payloads: int,
                       output: str | None) -> None:
    """Print a Locust test (FastHttpUser) for model REF: shipml locustfile churn > locustfile.py

    The file embeds example bodies drawn from the model's signature and golden sample and checks that every
    answer carries predictions. Run it with: locust -f locustfile.py --host http://127.0.0.1:8000
    """
    from shipml.deploy.locustfile import render_locustfile

    source = render_locustfile(ref, ctx.registry_uri,
                               protocol=protocol,  # type: ignore[arg-type]
                               rows=rows, served_as=served_as, payloads=payloads)
    if output:
        Path(output).write_text(source, encoding="utf-8")
    if ctx.as_json:  # the file itself is the output: with --json it comes inside a small JSON object
        emit_json({"model": ref, "protocol": protocol, "rows": rows, "payloads": payloads, "output": output,
                   "source": None if output else source})
    elif not output:
        click.echo(source, nl=False)


def register(group: click.Group) -> None:
    group.add_command(loadtest_command)
    group.add_command(locustfile_command)
