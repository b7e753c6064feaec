"""``shipml serve``: the REST microservice."""

from __future__ import annotations

from typing import Any

import click
import orjson

from shipml.cli._common import Context, emit_json, handle_errors


@click.command("serve")
@click.argument("refs", nargs=-1)
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Deployment spec (shipml.yaml).")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8000).")
@click.option("--workers", type=int, help="Worker processes (default 1).")
@click.option("--http", type=click.Choice(["uvicorn", "granian"]),
              help="HTTP server (default uvicorn: uvloop + httptools with shipml's own request cycle; or granian).")
@click.option("--max-batch-size", type=int, help="Rows merged into one predict call at most.")
@click.option("--max-latency-ms", type=float,
              help="Longest a batch waits for requests whose bodies are still arriving.")
@click.option("--no-access-log", is_flag=True, help="Do not log one JSON line per request.")
@click.option("--no-follow", is_flag=True,
              help="Serve what each alias names at start; by default a moved alias (or a canary of it) is loaded,"
                   " checked and switched to while serving.")
@click.option("--log", "log_dir", type=click.Path(file_okay=False),
              help="Watch the served models: log every prediction to DIR (Parquet), compute drift and live"
                   " performance (monitoring.* in the spec sets the rest).")
@click.option("--check", is_flag=True, help="Validate the spec and print it, without serving.")
@click.pass_obj
@handle_errors
def serve_command(ctx: Context, refs: tuple[str, ...], spec_path: str | None, host: str | None,
                  port: int | None, workers: int | None, http: str | None, max_batch_size: int | None,
                  max_latency_ms: float | None, no_access_log: bool, no_follow: bool, log_dir: str | None,
                  check: bool) -> None:
    """Serve models over HTTP: REFS (name, name:1.2.0, name@alias) or a --spec file.

    Simple JSON at POST /predict and /models/NAME/predict, KServe v1 at /v1/models/NAME:predict,
    health at /healthz and /readyz, Prometheus metrics at /metrics.

    A server follows the aliases it serves (name@alias): when `shipml alias`, `shipml promote` or
    `shipml rollback` moves one, the new version is loaded, golden-checked and switched to without dropping a
    request, and a canary (`shipml canary start`) gets its share of requests. --no-follow pins them.

    --log DIR turns monitoring on: every prediction is logged to DIR, drift against the training profile is at
    /models/NAME/drift, ground truth goes to POST /models/NAME/feedback and live accuracy is at
    /models/NAME/performance; the figures are in /metrics too.

    With --json, --check prints the spec as JSON, and a serving process starts its stdout (where the access log
    writes one JSON object per request) with one JSON line naming the endpoints and the URL.
    """
    from shipml.server.runner import serve
    from shipml.spec import load_spec, parse_spec, spec_for_refs

    if spec_path and refs:
        raise click.UsageError("give REFS or --spec, not both")
    if not spec_path and not refs:
        raise click.UsageError("give at least one model REF, or --spec FILE")
    spec = load_spec(spec_path) if spec_path else spec_for_refs(list(refs))
    data: dict[str, Any] = spec.model_dump(mode="json")
    server = data["server"]
    for key, value in (("host", host), ("port", port), ("workers", workers), ("http", http)):
        if value is not None:
            server[key] = value
    if no_access_log:
        server["access_log"] = False
    if no_follow:
        for endpoint in data["endpoints"]:
            endpoint["follow"] = False
    if max_batch_size is not None:
        data["batching"]["max_batch_size"] = max_batch_size
    if max_latency_ms is not None:
        data["batching"]["max_latency_ms"] = max_latency_ms
    if log_dir is not None:
        from shipml._paths import absolute

        data["monitoring"]["enabled"] = True
        data["monitoring"]["log"]["dir"] = str(absolute(log_dir))
    if ctx.registry_uri and not data.get("registry"):
        data["registry"] = ctx.registry_uri
    spec = parse_spec(data, spec_path or "command line")
    if check:
        if ctx.as_json:
            emit_json(spec.model_dump(mode="json", exclude_none=True))
        else:
            click.echo(spec.to_yaml(), nl=False)
        return
    url = f"http://{spec.server.host}:{spec.server.port}"
    if ctx.as_json:
        click.echo(orjson.dumps({"event": "serving", "endpoints": [e.name for e in spec.endpoints], "url": url,
                                 "workers": spec.server.workers, "http": spec.server.http}).decode())
    else:
        click.echo(f"shipml serving {', '.join(e.name for e in spec.endpoints)} on {url}"
                   f" ({spec.server.workers} worker(s), {spec.server.http})", err=True)
    serve(spec)


def register(group: click.Group) -> None:
    group.add_command(serve_command)
