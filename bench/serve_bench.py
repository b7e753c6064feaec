"""Online serving benchmark: ``shipml serve`` (its defaults, and with ``--http granian``) against the plain tutorial
FastAPI app and the HTTP floors (a bare ASGI app parsing the body with orjson and returning a constant, under
uvicorn + httptools + uvloop and under granian), on the same LightGBM model, in one run. shipml is compared with
the faster floor on this machine. Each measured run also reads the server's context switches and CPU time (every
thread, from /proc) and divides them by the requests served.

    .venv/bin/python bench/serve_bench.py                      # 3 rounds x 10 s per server and body size
    .venv/bin/python bench/serve_bench.py --rounds 1 --seconds 5   # a quick check

Model: LightGBM binary classifier, 200 trees, 31 leaves, 28 float features (make_classification, 100k rows,
random_state=0). Each server runs alone, pinned to core 0 (``taskset -c 0``, one worker, access logs off); wrk
runs pinned to core 1 with 64 connections, on single-row and 100-row requests (``{"instances": [records]}``).
Rounds interleave the servers so that drift in the machine's load spreads over all of them; figures are medians
over rounds. Also measured for shipml: cold start (process start to the first correct prediction, median of 5)
and RSS after the benchmark load. shipml is measured once its model has switched to the compiled form
(``shipml[compiled]``; the first start compiles it into the user's cache, in the background, which the
benchmark waits for and reports).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FEATURES = [f"f{i}" for i in range(28)]
#: The servers measured, in each round's order.
KINDS = ("shipml", "shipml-granian", "tutorial", "floor", "floor-granian")
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def setup(data: Path) -> None:
    import joblib
    import lightgbm as lgb
    import pandas as pd
    from sklearn.datasets import make_classification

    import shipml

    X, y = make_classification(n_samples=100_000, n_features=28, random_state=0)
    frame = pd.DataFrame(X, columns=FEATURES)
    model = lgb.LGBMClassifier(n_estimators=200, num_leaves=31, random_state=0, verbose=-1).fit(frame, y)
    joblib.dump(model, data / "model.joblib")
    shipml.save_model(model, "lgbm", sample=frame, registry=data / "registry")
    rows = frame.sample(1000, random_state=1)  # requests from the data's own distribution: inside its ranges
    for n in (1, 100):
        part = rows.head(n)
        (data / f"body{n}.json").write_text(json.dumps({"instances": part.to_dict("records")}))
        (data / f"expected{n}.json").write_text(json.dumps(model.predict(part).tolist()))
    (data / "post.lua").write_text(LUA)


def server_command(kind: str, data: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind.startswith("shipml"):  # shipml: its defaults (uvicorn); shipml-granian: the other HTTP server
        http = ["--http", "granian"] if kind == "shipml-granian" else []
        return [PY, "-m", "shipml.cli", "--registry", str(data / "registry"), "serve", "lgbm",
                "--port", str(port), "--no-access-log", *http], env
    if kind == "tutorial":
        env["MODEL_PATH"] = str(data / "model.joblib")
        return [PY, "-m", "uvicorn", "bench.baselines.tutorial_app:app", "--port", str(port),
                "--no-access-log", "--log-level", "warning"], env
    if kind == "floor-granian":  # the same bare app under granian (ASGI, one worker, one runtime thread)
        return [PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--http", "1", "--no-ws",
                "--log-level", "warning", "bench.baselines.floor_app:app"], env
    return [PY, "-m", "uvicorn", "bench.baselines.floor_app:app", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--lifespan", "off", "--log-level", "warning"], env


def start(kind: str, data: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """The server process, and seconds from spawn to its first correct answer."""
    command, env = server_command(kind, data, port)
    started = time.monotonic()
    proc = subprocess.Popen(["taskset", "-c", "0", *command], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = (data / "body1.json").read_bytes()
    expected = json.loads((data / "expected1.json").read_text())
    deadline = started + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited with {proc.returncode} during start-up")
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/predict", content=body,
                           headers={"content-type": "application/json"}, timeout=2)
            if r.status_code == 200:
                if not kind.startswith("floor") and r.json()["predictions"] != expected:
                    raise SystemExit(f"{kind} gave wrong predictions: {r.text[:200]}")
                return proc, time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.005)
    proc.kill()
    raise SystemExit(f"{kind} never answered")


def wait_compiled(port: int, timeout_s: float = 900) -> tuple[str, float]:
    """shipml's compile status once its background compile of the model is over, and the seconds waited: the
    first start compiles (into the user's cache of compiled models), later ones load the cached library."""
    started = time.monotonic()
    while True:
        status = httpx.get(f"http://127.0.0.1:{port}/models/lgbm", timeout=5).json()["runtime"]["compile_status"]
        if status not in ("pending", "compiling") or time.monotonic() - started > timeout_s:
            return status, time.monotonic() - started
        time.sleep(0.2)


def wrk(data: Path, port: int, rows: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{round(seconds)}s", "--latency", "-s", str(data / "post.lua"),
         f"http://127.0.0.1:{port}/predict"],
        env={**os.environ, "BODY_FILE": str(data / f"body{rows}.json")}, capture_output=True, text=True,
        check=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result = {"rps": rps, "errors": 0.0}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if non2xx:
        result["errors"] += float(non2xx.group(1))
    if errors:
        result["errors"] += sum(int(n) for n in re.findall(r"\d+", errors.group(0)))
    return result


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian's command line serves from a child process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    return found


def process_counters(pid: int) -> tuple[int, float]:
    """(context switches, voluntary and involuntary, CPU seconds) of every thread of process ``pid`` and its
    descendants so far."""
    switches, user, system = process_times(pid)
    return switches, user + system


def process_times(pid: int) -> tuple[int, float, float]:
    """(context switches, user CPU seconds, system CPU seconds) of every thread of process ``pid`` and its
    descendants so far. System time is mostly the kernel's TCP work, whose share moves between processes."""
    switches, utime, stime = 0, 0, 0
    tasks = [task for process in process_tree(pid) for task in Path(f"/proc/{process}/task").iterdir()]
    for task in tasks:
        try:
            status = (task / "status").read_text()
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        switches += sum(int(n) for n in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", status, re.M))
        fields = stat.rpartition(")")[2].split()
        utime += int(fields[11])
        stime += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return switches, utime / tick, stime / tick


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(data: Path, rounds: int, seconds: float) -> dict[str, Any]:
    kinds = KINDS
    samples: dict[str, dict[int, list[dict[str, float]]]] = {k: {1: [], 100: []} for k in kinds}
    rss: list[float] = []
    compiled: list[tuple[str, float]] = []
    port = 18400
    for r in range(rounds):
        for kind in kinds:
            port += 1
            proc, _ = start(kind, data, port)
            try:
                if kind.startswith("shipml"):
                    status, waited = wait_compiled(port)
                    compiled.append((status, waited))
                    print(f"round {r + 1} shipml compile status {status!r} after {waited:.1f} s", flush=True)
                for rows in (1, 100):
                    wrk(data, port, rows, min(3.0, seconds))  # warm-up
                    before = process_counters(proc.pid)
                    result = wrk(data, port, rows, seconds)
                    after = process_counters(proc.pid)
                    served = result["rps"] * round(seconds)
                    result["ctx_per_request"] = (after[0] - before[0]) / served
                    result["cpu_us_per_request"] = (after[1] - before[1]) / served * 1e6
                    samples[kind][rows].append(result)
                    print(f"round {r + 1} {kind:8} {rows:3} rows: {result['rps']:9.0f} req/s  p50 "
                          f"{result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  errors {result['errors']:.0f}"
                          f"  ctx/req {result['ctx_per_request']:.3f}  cpu/req {result['cpu_us_per_request']:.1f} us",
                          flush=True)
                if kind == "shipml":
                    rss.append(rss_mb(proc.pid))
            finally:
                stop(proc)
    cold = []
    for _ in range(5):
        port += 1
        proc, seconds_to_answer = start("shipml", data, port)
        cold.append(seconds_to_answer)
        stop(proc)
    medians = {k: {rows: {m: statistics.median(s[m] for s in runs) for m in runs[0]}
                   for rows, runs in by_rows.items()} for k, by_rows in samples.items()}
    return {"medians": medians, "cold_start_s": statistics.median(cold), "cold_starts": cold,
            "rss_mb": statistics.median(rss), "compiled": compiled, "samples": samples}


def report(result: dict[str, Any]) -> None:
    m = result["medians"]
    print("\n| server | rows/request | req/s | p50 ms | p99 ms | context switches / request | CPU µs / request |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        for rows in (1, 100):
            s = m[kind][rows]
            print(f"| {kind} | {rows} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |"
                  f" {s['ctx_per_request']:.3f} | {s['cpu_us_per_request']:.1f} |")
    ship1, tut1 = m["shipml"][1], m["tutorial"][1]
    best1 = max(("floor", "floor-granian"), key=lambda k: m[k][1]["rps"])  # the faster floor on this machine
    best100 = max(("floor", "floor-granian"), key=lambda k: m[k][100]["rps"])
    floor1, floor100 = m[best1][1], m[best100][100]
    print(f"\nsingle row: shipml = {ship1['rps'] / floor1['rps']:.1%} of the faster floor ({best1}, "
          f"{floor1['rps']:,.0f} req/s), {ship1['rps'] / tut1['rps']:.1f}x the tutorial; shipml p99 "
          f"{ship1['p99_ms']:.2f} ms vs tutorial p50 {tut1['p50_ms']:.2f} ms")
    print(f"100 rows: shipml = {m['shipml'][100]['rps'] / m['tutorial'][100]['rps']:.1f}x the tutorial, "
          f"{m['shipml'][100]['rps'] / floor100['rps']:.1%} of the faster floor ({best100}, "
          f"{floor100['rps']:,.0f} req/s; {m['shipml'][100]['rps'] * 100:,.0f} rows/s)")
    print(f"cold start {result['cold_start_s']:.2f} s (runs: {', '.join(f'{c:.2f}' for c in result['cold_starts'])}); "
          f"RSS {result['rss_mb']:.0f} MB")
    print("compiled model: " + ", ".join(f"{status} after {waited:.1f} s" for status, waited in result["compiled"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="shipml-serve-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "post.lua").exists():
        setup(data)
    try:
        result = run(data, args.rounds, args.seconds)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
