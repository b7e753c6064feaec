"""How fast can `shipml loadtest` send? Its open-loop engine against a floor server, with wrk for context.

The floor server is bare uvicorn (httptools, uvloop) with a raw ASGI app that answers a constant JSON body: the
cheapest HTTP server Python has, so what limits a step is the generator or that floor, never a model. The server
is pinned to core 0 (``taskset -c 0``) and every load generator to core 1 (``taskset -c 1``).

For each target rate (open loop, ``--seconds`` each) the table shows the achieved send rate, 2xx throughput,
p50/p99 latency (from each request's scheduled time) and the generator's CPU time per request (user + system
of its process, so ``1e6 / us_per_request`` is the rate one core could sustain if the server kept up). A step is
sustained when the send rate and the throughput are both >= 95% of the target with no error. Medians of
``--repeat`` runs: other jobs share this machine's two cores.

    .venv/bin/python bench/loadtest_bench.py                                   # 2k..40k, 5 s, 3 repeats (~5 min)
    .venv/bin/python bench/loadtest_bench.py --steps 2000,5000 --seconds 3 --repeat 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BODY = b'{"predictions":[1],"model":"floor","version":"1.0.0"}'
REQUEST_BODY = b'{"instances":[{"x0":0.1,"x1":0.2,"x2":0.3,"x3":0.4}]}'
SUSTAINED = 0.95


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with a constant JSON body (after reading the request body)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(floor_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                access_log=False, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_floor(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}"),
                                        timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the floor server did not start")


def wait_until_quiet(url: str, limit_s: float = 20.0) -> None:
    """Before a step: wait until the server answers a probe at once (it may still be draining the backlog of
    an overloaded step before)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/", data=b"{}"), timeout=1) as r:
                r.read()
            if time.monotonic() - started < 0.05:
                return
        except OSError:
            pass
        time.sleep(0.2)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(url: str, rate: float, seconds: float, connections: int, payload: Path,
             startup_cpu_s: float = 0.0) -> dict[str, float]:
    """One open-loop run of the shipml generator, in its own process on core 1."""
    before = children_cpu()
    done = subprocess.run(
        ["taskset", "-c", "1", sys.executable, "-m", "shipml.cli", "loadtest", url, "--path", "/",
         "--payload", str(payload), "--rate", str(rate), "--duration", f"{seconds}s", "--connections",
         str(connections), "--json", "-q"], capture_output=True, timeout=seconds + 120, check=False)
    cpu = children_cpu() - before
    if done.returncode not in (0, 1):
        raise SystemExit(f"loadtest failed: {done.stderr.decode()}")
    report = json.loads(done.stdout)
    lat = report["latency_ms"]
    return {"send_rate": report["send_rate"], "throughput": report["throughput"], "p50": lat["p50"] or 0.0,
            "p99": lat["p99"] or 0.0, "errors": report["errors"], "issued": report["issued"],
            # CPU of the process less that of starting up (imports, connecting), per request
            "cpu_s": cpu, "us_per_request": 1e6 * max(cpu - startup_cpu_s, 0.0) / max(report["issued"], 1)}


def run_wrk(url: str, seconds: float, connections: int) -> float:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    body = REQUEST_BODY.decode()
    script.write_text(f'wrk.method = "POST"\nwrk.body = \'{body}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    done = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s",
                           str(script), url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    match = re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout)
    if match is None:
        raise SystemExit(f"cannot read wrk's output: {done.stdout} {done.stderr}")
    return float(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="2000,4000,6000,8000,10000,15000,20000,30000,40000",
                        help="Target rates, comma-separated.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Duration of each step.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of every step (medians are shown).")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is needed to pin the server and the generator to different cores")
    if os.cpu_count() is None or (os.cpu_count() or 1) < 2:
        raise SystemExit("two cores are needed: one for the server, one for the generator")
    steps = [int(s) for s in args.steps.split(",")]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    payload = Path(tempfile.mkdtemp()) / "body.json"
    payload.write_bytes(REQUEST_BODY)
    server = start_floor(port)
    try:
        results: dict[int, list[dict[str, float]]] = {rate: [] for rate in steps}
        wrk: list[float] = []
        for r in range(args.repeat):
            startup = run_step(url, 1, 1.0, args.connections, payload)["cpu_s"]  # one request: start-up cost
            for rate in steps:
                wait_until_quiet(url)
                results[rate].append(run_step(url, rate, args.seconds, args.connections, payload, startup))
                print(f"repeat {r + 1} rate {rate}: {results[rate][-1]}", file=sys.stderr, flush=True)
            if shutil.which("wrk"):
                wait_until_quiet(url)
                wrk.append(run_wrk(url, args.seconds, args.connections))
                print(f"repeat {r + 1} wrk: {wrk[-1]:.0f}/s", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(30)
    report(results, wrk, args)


def report(results: dict[int, list[dict[str, float]]], wrk: list[float], args: argparse.Namespace) -> None:
    print(f"\nshipml loadtest against a floor server (uvicorn+httptools+uvloop, constant answer); "
          f"{args.seconds:g} s per step, {args.connections} connections, medians of {args.repeat}\n")
    print("| target/s | send rate/s | 2xx/s | p50 ms | p99 ms | errors | generator CPU us/request | sustained |")
    print("|---------:|------------:|------:|-------:|-------:|-------:|-------------------------:|:---------:|")
    best = 0
    for rate, runs in results.items():
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        sustained = sum(run["send_rate"] >= SUSTAINED * rate and run["throughput"] >= SUSTAINED * rate
                        and run["errors"] == 0 for run in runs) * 2 > len(runs)
        if sustained:
            best = max(best, rate)
        print(f"| {rate:,} | {m['send_rate']:,.0f} | {m['throughput']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | "
              f"{m['errors']:.0f} | {m['us_per_request']:.0f} | {'yes' if sustained else 'no'} |")
    print(f"\nhighest step sustained (in most runs): {best:,}/s")
    if wrk:
        print(f"wrk -t1 -c{args.connections} on the same server (closed loop, max): median "
              f"{statistics.median(wrk):,.0f}/s (runs: {', '.join(f'{w:,.0f}' for w in wrk)})")


if __name__ == "__main__":
    main()
