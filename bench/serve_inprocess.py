"""shipml's own cost per request, without HTTP: the RSGI app (``ShipmlRSGI``, what granian calls) driven
directly by concurrent callers on uvloop, with the body of ``bench/serve_bench.py`` (run that once first to
make the data directory).

    taskset -c 0 .venv/bin/python bench/serve_inprocess.py --data-dir /tmp/sb --rows 1 --requests 40000
    taskset -c 0 .venv/bin/python bench/serve_inprocess.py --data-dir /tmp/sb --rows 100 --requests 2000

What it measures is everything the server does per request except the HTTP server's work: routing, body checks,
JSON parsing, records -> matrix, batching, the model, the response. Compare with the HTTP floor of
``serve_bench.py`` to see how much of a request's time is shipml's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import ClassVar

import uvloop

from shipml.server.app import ShipmlApp
from shipml.server.rsgi import ShipmlRSGI
from shipml.spec import DeploymentSpec


async def run(data: Path, rows: int, requests: int, callers: int) -> tuple[float, set[int]]:
    body = (data / f"body{rows}.json").read_bytes()
    spec = DeploymentSpec.model_validate({
        "registry": str(data / "registry"), "server": {"access_log": False},
        "endpoints": [{"name": "lgbm", "models": ["lgbm"]}]})
    app = ShipmlApp(spec)
    await app.load_models()
    runner = app.endpoints["lgbm"].runner()
    deadline = time.monotonic() + 120  # as the server runs it: compiled, once the background compile is in
    while runner.compile_status in ("pending", "compiling") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"model: compile status {runner.compile_status!r}")
    rsgi = ShipmlRSGI(app)
    statuses: list[int] = []

    class Scope:
        proto, method, path = "http", "POST", "/predict"
        headers: ClassVar[dict[str, str]] = {"content-type": "application/json", "content-length": str(len(body))}

    class Protocol:  # the body came with the headers: granian has it whole
        async def __call__(self) -> bytes:
            return body

        def __aiter__(self) -> Protocol:
            return self

        async def __anext__(self) -> bytes:
            return body

        def response_bytes(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            statuses.append(status)

    scope, protocol = Scope(), Protocol()

    async def caller(n: int) -> None:
        for _ in range(n):
            await rsgi.__rsgi__(scope, protocol)  # type: ignore[arg-type]

    started = time.perf_counter()
    await asyncio.gather(*(caller(requests // callers) for _ in range(callers)))
    elapsed = time.perf_counter() - started
    labels = {"model": "lgbm", "version": app.endpoints["lgbm"].runner().model.version}
    batches = app.metrics.registry.get_sample_value("shipml_batch_size_rows_count", labels) or 0
    rows_predicted = app.metrics.registry.get_sample_value("shipml_batch_size_rows_sum", labels) or 0
    print(f"{batches:.0f} batches, {rows_predicted / max(batches, 1):.1f} rows per batch on average")
    await app.shutdown()
    return len(statuses) / elapsed, set(statuses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sb"))
    parser.add_argument("--rows", type=int, choices=(1, 100), default=1)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=64)
    args = parser.parse_args()
    rate, statuses = uvloop.run(run(args.data_dir, args.rows, args.requests, args.callers))
    print(f"{args.rows} row(s): {rate:,.0f} req/s, {1e6 / rate:.1f} µs per request, statuses {sorted(statuses)}")


if __name__ == "__main__":
    main()
