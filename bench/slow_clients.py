"""Slow clients (slowloris) against ``shipml serve``: while N connections send their request headers, or their
body, one byte per second, does a fresh client still get its prediction, how fast, and what happens to memory?

    .venv/bin/python bench/slow_clients.py                             # 2,500 slow connections, both backends
    .venv/bin/python bench/slow_clients.py --http granian --slow 2048 --hold 40
    .venv/bin/python bench/slow_clients.py --limit header_timeout_s=2 --limit max_connections=1000

Model: LightGBM binary classifier (50 trees, 15 leaves, 28 float features, make_classification 20k rows), one
worker, access log off, compile off. Phases, per backend, each a fresh server:

1. before (``--settle`` s): the fresh client alone; RSS before = the median of the phase's samples.
2. hold (``--hold`` s): ``--slow`` connections opened (at most 200 connects in flight), half sending their
   headers a byte a second without end (``--mode headers`` / ``body``: all of one kind), the other half a
   complete header block with ``Content-Length: 100000`` and then the body a byte a second. A connection the
   server closes (or answers, 408) is counted and opened again, so that N stay open as an attacker keeps them.
3. after (``--settle`` s): the slow connections are closed; RSS after = the last sample.

The fresh client runs in this process (the slow connections in a child process, so that their event loop does not
delay it): every 0.25 s a new connection, a single-row ``POST /predict`` (timeout 10 s) and, every other time,
``GET /healthz``. RSS of the server process from /proc every 0.5 s. Everything goes to 127.0.0.1 only, and every
loop is bounded by the phase times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [f"f{i}" for i in range(28)]
BODY_LENGTH = 100_000


def setup(data: Path) -> None:
    import lightgbm as lgb
    import pandas as pd
    from sklearn.datasets import make_classification

    import shipml

    X, y = make_classification(n_samples=20_000, n_features=28, random_state=0)
    frame = pd.DataFrame(X, columns=FEATURES)
    model = lgb.LGBMClassifier(n_estimators=50, num_leaves=15, random_state=0, verbose=-1).fit(frame, y)
    shipml.save_model(model, "lgbm", sample=frame, registry=data / "registry")
    (data / "body1.json").write_text(json.dumps({"instances": frame.head(1).to_dict("records")}))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def start_server(data: Path, http: str, port: int, limits: dict[str, Any], server: dict[str, Any],
                 src: Path = ROOT / "src") -> subprocess.Popen[bytes]:
    spec = {"registry": str(data / "registry"), "endpoints": [{"name": "lgbm", "models": ["lgbm"]}],
            "server": {"host": "127.0.0.1", "port": port, "http": http, "access_log": False, "compile": "off",
                       **server}}
    if limits:
        spec["limits"] = limits
    path = data / f"spec-{port}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "shipml.cli", "serve", "--spec", str(path)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=(data / f"server-{port}.log").open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{http} server exited with {proc.returncode} during start-up: "
                             f"{(data / f'server-{port}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{http} server never became ready")


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return float("nan")
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


# -- the slow connections (a child process) --------------------------------------------------------------------
HEADER_START = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
BODY_HEAD = HEADER_START + b"Content-Length: %d\r\n\r\n" % BODY_LENGTH


class SlowStats:
    def __init__(self) -> None:
        self.open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.answered: dict[str, int] = {}
        self.connect_errors = 0


async def slow_connection(port: int, kind: str, stop_at: float, stats: SlowStats, connects: asyncio.Semaphore) -> None:
    while time.monotonic() < stop_at:
        try:
            async with connects:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (TimeoutError, OSError):
            stats.connect_errors += 1
            await asyncio.sleep(1)
            continue
        stats.open += 1
        stats.opened += 1
        try:
            writer.write(HEADER_START if kind == "headers" else BODY_HEAD)
            sent = 0
            while time.monotonic() < stop_at:
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:  # a second passed: the next byte
                    writer.write(b"x" if kind == "headers" else b" ")
                    sent += 1
                    if kind == "headers" and sent % 20 == 0:
                        writer.write(b": y\r\n")  # an endless list of valid headers
                    continue
                stats.closed_by_server += 1
                if data:
                    status = data.split(b" ", 2)[1].decode("latin-1", "replace") if b" " in data else "?"
                    stats.answered[status] = stats.answered.get(status, 0) + 1
                break
        except (ConnectionError, OSError):
            stats.closed_by_server += 1
        finally:
            stats.open -= 1
            writer.close()


async def slow_main(port: int, count: int, mode: str, hold_s: float, out: Any) -> None:
    stats = SlowStats()
    stop_at = time.monotonic() + hold_s
    connects = asyncio.Semaphore(200)
    kinds = [("headers" if (mode == "headers" or (mode == "mix" and i % 2 == 0)) else "body") for i in range(count)]
    tasks = [asyncio.create_task(slow_connection(port, kind, stop_at, stats, connects)) for kind in kinds]
    samples = []
    while time.monotonic() < stop_at:
        await asyncio.sleep(1)
        samples.append(stats.open)
    await asyncio.wait(tasks, timeout=15)
    out.put({"open_samples": samples, "opened": stats.opened, "closed_by_server": stats.closed_by_server,
             "answered": stats.answered, "connect_errors": stats.connect_errors})


def slow_process(port: int, count: int, mode: str, hold_s: float, out: Any) -> None:
    raise_fd_limit()
    asyncio.run(slow_main(port, count, mode, hold_s, out))


# -- the fresh client and the RSS sampler (this process) ---------------------------------------------------------
class Probe(threading.Thread):
    def __init__(self, port: int, body: bytes, pid: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}"
        self.body = body
        self.pid = pid
        self.phase = "before"
        self.stop = threading.Event()
        self.results: list[tuple[str, str, float | None, int | None]] = []  # phase, route, seconds, status
        self.rss: list[tuple[str, float, float]] = []  # phase, time, MB

    def run(self) -> None:
        turn = 0
        next_rss = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_rss:
                self.rss.append((self.phase, now, rss_mb(self.pid)))
                next_rss = now + 0.5
            route = "healthz" if turn % 2 else "predict"
            turn += 1
            started = time.monotonic()
            try:
                with httpx.Client(timeout=10) as client:  # a new connection each time: a fresh client
                    if route == "predict":
                        r = client.post(self.url + "/predict", content=self.body,
                                        headers={"content-type": "application/json"})
                    else:
                        r = client.get(self.url + "/healthz")
                self.results.append((self.phase, route, time.monotonic() - started, r.status_code))
            except httpx.HTTPError:
                self.results.append((self.phase, route, None, None))
            self.stop.wait(max(0.0, 0.25 - (time.monotonic() - started)))


def latency(results: list[tuple[str, str, float | None, int | None]], phase: str, route: str) -> dict[str, Any]:
    rows = [r for r in results if r[0] == phase and r[1] == route]
    ok = [r[2] for r in rows if r[2] is not None and r[3] == 200]
    return {"count": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
            "p50_ms": statistics.median(ok) * 1000 if ok else None, "max_ms": max(ok) * 1000 if ok else None}


def run_backend(data: Path, http: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = start_server(data, http, port, args.limits, args.server, args.src)
    probe = Probe(port, (data / "body1.json").read_bytes(), proc.pid)
    probe.start()
    try:
        time.sleep(args.settle)
        probe.phase = "hold"
        queue: Any = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=slow_process, args=(port, args.slow, args.mode, args.hold, queue))
        child.start()
        slow = queue.get(timeout=args.hold + 60)
        child.join(30)
        probe.phase = "after"
        time.sleep(args.settle)
    finally:
        probe.stop.set()
        probe.join(15)
        alive = proc.poll() is None
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rss = probe.rss
    before = [mb for phase, _, mb in rss if phase == "before"]
    during = [mb for phase, _, mb in rss if phase == "hold"]
    after = [mb for phase, _, mb in rss if phase == "after"]
    samples = slow["open_samples"]
    steady = samples[len(samples) // 3:] or samples
    return {
        "http": http, "alive": alive, "slow": slow, "open_min": min(steady) if steady else 0,
        "open_median": statistics.median(steady) if steady else 0,
        "rss_before_mb": statistics.median(before) if before else None, "rss_peak_mb": max(during, default=None),
        "rss_after_mb": after[-1] if after else None,
        "latency": {phase: {route: latency(probe.results, phase, route) for route in ("predict", "healthz")}
                    for phase in ("before", "hold", "after")},
    }


def fmt(value: float | None, pattern: str = "{:.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.slow} slow connections ({args.mode}), held {args.hold:.0f} s; limits {args.limits or 'default'}")
    print("\n| backend | slow open (median / min) | server closed | fresh predict p50 / max ms (ok/total) "
          "| healthz p50 / max ms (ok/total) | RSS before / peak / after MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        p, h = r["latency"]["hold"]["predict"], r["latency"]["hold"]["healthz"]
        answered = ", ".join(f"{k}: {v}" for k, v in sorted(r["slow"]["answered"].items()))
        print(f"| {r['http']} | {r['open_median']:.0f} / {r['open_min']:.0f} | {r['slow']['closed_by_server']}"
              f"{f' ({answered})' if answered else ''} | {fmt(p['p50_ms'], '{:.1f}')} / {fmt(p['max_ms'], '{:.1f}')}"
              f" ({p['ok']}/{p['count']}) | {fmt(h['p50_ms'], '{:.1f}')} / {fmt(h['max_ms'], '{:.1f}')}"
              f" ({h['ok']}/{h['count']}) | {fmt(r['rss_before_mb'])} / {fmt(r['rss_peak_mb'])} / "
              f"{fmt(r['rss_after_mb'])} |")
        a = r["latency"]["after"]["predict"]
        print(f"|   after | | | {fmt(a['p50_ms'], '{:.1f}')} / {fmt(a['max_ms'], '{:.1f}')} ({a['ok']}/{a['count']}) "
              f"| | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", choices=["granian", "uvicorn", "both"], default="both")
    parser.add_argument("--slow", type=int, default=2500, help="slow connections kept open")
    parser.add_argument("--mode", choices=["mix", "headers", "body"], default="mix")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds the slow connections are kept open")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before and after")
    parser.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                        help="a limits setting of the spec (repeatable)")
    parser.add_argument("--server", dest="server_opts", action="append", default=[], metavar="KEY=VALUE",
                        help="a server setting of the spec (repeatable)")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the shipml source tree to serve (another checkout's, to compare)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.limits = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.limit)}
    args.server = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.server_opts)}
    if args.slow > 5000 or args.hold > 600:
        raise SystemExit("--slow is at most 5000 and --hold at most 600 s")
    limit = raise_fd_limit()
    if limit < args.slow + 200:
        raise SystemExit(f"the open-files limit is {limit}: too low for {args.slow} connections")
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="shipml-slow-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "body1.json").exists():
        setup(data)
    backends = ["granian", "uvicorn"] if args.http == "both" else [args.http]
    try:
        results = []
        for http in backends:
            print(f"{http}: {args.slow} slow connections for {args.hold:.0f} s ...", flush=True)
            results.append(run_backend(data, http, args))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
