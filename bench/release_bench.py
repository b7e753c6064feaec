"""Release routing benchmark (issue #13): is routing invisible, and what does a swap under full load cost?

    .venv/bin/python bench/release_bench.py                          # 3 rounds x 10 s per configuration
    .venv/bin/python bench/release_bench.py --rounds 1 --seconds 4    # a quick check

Model and load as in serve_bench.py (whose pieces this reuses): LightGBM, 200 trees, 28 float features, saved
twice (two versions with the same trees); the server runs alone pinned to core 0 (one worker, access log off),
wrk pinned to core 1 with 64 connections sends single-row requests, each with a random ``X-User-ID`` header
(the same script for every configuration, so the A/B key is extracted and hashed on every request).

1. Routing: single-row throughput of one endpoint ``lgbm@production`` (followed, as every release needs) served
   three ways, in the same run, rounds interleaved, medians over rounds:
   plain (no release state), a 10 % canary (the registry's canary of @production to the second version, limits
   that never trip), and a 50/50 A/B split keyed by ``header:X-User-ID``. The issue asks for both within 5 % of
   plain.
2. Swap under load: on one plain server, ``--rounds`` pairs of wrk runs at full load for ``--seconds``: one while
   nothing changes (steady), one while the alias moves between the two versions every ``--swap-every`` seconds.
   Reports the medians of both p99s,
   errors, the swaps the server counted (``shipml_model_swaps_total``) and the mean time of one batched predict
   call (``shipml_inference_latency_seconds``): the issue asks that a swap raise p99 by no more than one batch.

The server's compiled LightGBM form (``server.compile: auto``) is off by default here (``--compile auto`` turns
it on): each new version would otherwise be compiled in the background during the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
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
import serve_bench  # bench/ is on sys.path when this runs as a script: the serving benchmark's pieces
import yaml

from shipml.registry.registry import Registry

ROOT = serve_bench.ROOT
NAME = "lgbm"
CONFIGS = ("plain", "canary10", "ab50")
#: every configuration gets the same requests: one row, a random user id
KEYED_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
request = function()
  wrk.headers["X-User-ID"] = "user-" .. math.random(1, 1000000)
  return wrk.format()
end
"""


def setup(data: Path) -> tuple[str, str]:
    """serve_bench's data and model, a second version of the same model, @production on the first; the keyed
    wrk script in place of serve_bench's. Returns the two versions."""
    serve_bench.setup(data)
    import joblib
    import pandas as pd
    from sklearn.datasets import make_classification

    import shipml

    X, _ = make_classification(n_samples=100_000, n_features=28, random_state=0)
    model = joblib.load(data / "model.joblib")
    registry = Registry(data / "registry")
    first = registry.versions(NAME)[0].version
    second = shipml.save_model(model, NAME, sample=pd.DataFrame(X, columns=serve_bench.FEATURES),
                               registry=registry).version
    registry.set_alias(NAME, "production", first, reason="release bench")
    (data / "post.lua").write_text(KEYED_LUA)
    (data / "versions.json").write_text(json.dumps([first, second]))
    return first, second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint(config: str, versions: tuple[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": NAME, "models": [f"{NAME}@production"]}
    if config == "ab50":
        spec["ab"] = {"key": "header:X-User-ID", "weights": {"a": 50, "b": 50},
                      "variants": {"a": f"{NAME}:{versions[0]}", "b": f"{NAME}:{versions[1]}"}}
    return spec


def start(data: Path, config: str, versions: tuple[str, str], port: int, compile_mode: str) -> subprocess.Popen[bytes]:
    """The server for ``config`` once it gives the right prediction and says which variant answered."""
    spec = {"registry": str(data / "registry"), "endpoints": [endpoint(config, versions)],
            "server": {"host": "127.0.0.1", "port": port, "access_log": False, "compile": compile_mode}}
    path = data / f"spec-{config}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    log = data / f"server-{config}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "shipml.cli", "serve", "--spec",
                                 str(path)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    body = (data / "body1.json").read_bytes()
    expected = json.loads((data / "expected1.json").read_text())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{config} server exited with {proc.returncode} during start-up: "
                             f"{log.read_text(errors='replace')[-2000:]}")
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/predict", content=body,
                           headers={"content-type": "application/json"}, timeout=2)
            if r.status_code == 200:
                if r.json()["predictions"] != expected:
                    raise SystemExit(f"{config} gave wrong predictions: {r.text[:200]}")
                if "x-shipml-variant" not in r.headers:
                    serve_bench.stop(proc)
                    raise SystemExit("this shipml's server does not route releases yet (no x-shipml-variant header):"
                                     " the release benchmark needs issue #13's server part")
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    serve_bench.stop(proc)
    raise SystemExit(f"{config} server never answered")


def variants_seen(port: int, data: Path, n: int = 200) -> dict[str, int]:
    """Which variants answer (a check that the configuration routes as meant)."""
    body = (data / "body1.json").read_bytes()
    seen: dict[str, int] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for i in range(n):
            r = client.post("/predict", content=body, headers={"content-type": "application/json",
                                                                "x-user-id": f"check-{i}"})
            variant = f"{r.headers.get('x-shipml-variant')}:{r.headers.get('x-shipml-version')}"
            seen[variant] = seen.get(variant, 0) + 1
    return seen


def metric_sum(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def mean_batch_ms(port: int) -> float:
    total = metric_sum(port, "shipml_inference_latency_seconds_sum")
    count = metric_sum(port, "shipml_inference_latency_seconds_count")
    return 1000 * total / count if count else float("nan")


def routing_round(data: Path, versions: tuple[str, str], seconds: float, compile_mode: str,
                  r: int) -> dict[str, dict[str, float]]:
    from shipml.registry.releases import CanaryLimits

    registry = Registry(data / "registry")
    out: dict[str, dict[str, float]] = {}
    for config in CONFIGS:
        if config == "canary10":
            registry.start_canary(NAME, versions[1], weight=10, reason="release bench",
                                  limits=CanaryLimits(max_error_rate=0.99, min_requests=1_000_000, window=1_000_000))
        try:
            port = free_port()
            proc = start(data, config, versions, port, compile_mode)
            try:
                seen = variants_seen(port, data)
                serve_bench.wrk(data, port, 1, min(3.0, seconds))  # warm-up
                result = serve_bench.wrk(data, port, 1, seconds)
                out[config] = result
                print(f"round {r + 1} {config:9} {result['rps']:9.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']:.0f}  variants {seen}", flush=True)
            finally:
                serve_bench.stop(proc)
        finally:
            if config == "canary10" and registry.release_state(NAME).running("production") is not None:
                registry.end_canary(NAME, outcome="aborted", reason="release bench round over")
    return out


def move_alias(registry: Registry, versions: tuple[str, str], every: float, done: threading.Event,
               moves: list[str]) -> None:
    """Move @production to the other version every ``every`` seconds until ``done``."""
    while not done.wait(every):
        target = versions[1] if registry.aliases(NAME)["production"] == versions[0] else versions[0]
        registry.set_alias(NAME, "production", target, reason="release bench swap")
        moves.append(target)


def swap_run(data: Path, versions: tuple[str, str], seconds: float, swap_every: float, rounds: int,
             compile_mode: str) -> dict[str, Any]:
    """On one plain server, ``rounds`` pairs of wrk runs (steady, then while the alias moves); medians."""
    registry = Registry(data / "registry")
    port = free_port()
    proc = start(data, "plain", versions, port, compile_mode)
    pairs: list[dict[str, Any]] = []
    try:
        serve_bench.wrk(data, port, 1, min(3.0, seconds))  # warm-up
        for r in range(rounds):
            steady = serve_bench.wrk(data, port, 1, seconds)
            swaps_before = metric_sum(port, "shipml_model_swaps_total", outcome="done")
            done = threading.Event()
            moves: list[str] = []
            thread = threading.Thread(target=move_alias, args=(registry, versions, swap_every, done, moves),
                                      daemon=True)
            thread.start()
            try:
                swapping = serve_bench.wrk(data, port, 1, seconds)
            finally:
                done.set()
                thread.join(30)
            time.sleep(2)  # the last move is followed before the next steady run
            pair = {"steady": steady, "swapping": swapping, "alias_moves": len(moves),
                    "swaps_done": metric_sum(port, "shipml_model_swaps_total", outcome="done") - swaps_before}
            pairs.append(pair)
            print(f"swap round {r + 1}: p99 steady {steady['p99_ms']:.2f} ms, swapping {swapping['p99_ms']:.2f} ms, "
                  f"errors {steady['errors']:.0f} / {swapping['errors']:.0f}, {len(moves)} moves, "
                  f"{pair['swaps_done']:.0f} swaps", flush=True)
        batch_ms = mean_batch_ms(port)
        failed = metric_sum(port, "shipml_model_swaps_total", outcome="failed")
    finally:
        serve_bench.stop(proc)
        registry.set_alias(NAME, "production", versions[0], reason="release bench over")

    def median(kind: str, key: str) -> float:
        return float(statistics.median(p[kind][key] for p in pairs))

    return {"pairs": pairs, "steady_p99_ms": median("steady", "p99_ms"),
            "swapping_p99_ms": median("swapping", "p99_ms"),
            "steady_rps": median("steady", "rps"), "swapping_rps": median("swapping", "rps"),
            "errors": sum(p["steady"]["errors"] + p["swapping"]["errors"] for p in pairs),
            "alias_moves": sum(p["alias_moves"] for p in pairs), "swaps_done": sum(p["swaps_done"] for p in pairs),
            "swaps_failed": failed, "mean_batch_ms": batch_ms}


def report(rounds: list[dict[str, dict[str, float]]], swap: dict[str, Any]) -> None:
    medians = {c: {m: statistics.median(r[c][m] for r in rounds) for m in rounds[0][c]} for c in CONFIGS}
    plain = medians["plain"]["rps"]
    print("\n| configuration | req/s (median) | vs plain | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|---:|")
    for c in CONFIGS:
        m = medians[c]
        print(f"| {c} | {m['rps']:,.0f} | {m['rps'] / plain:.1%} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
              f"| {m['errors']:.0f} |")
    steady, swapping = swap["steady_p99_ms"], swap["swapping_p99_ms"]
    print(f"\nswap under full load (medians of {len(swap['pairs'])} pairs): p99 steady {steady:.2f} ms,"
          f" while swapping {swapping:.2f} ms ({swapping - steady:+.2f} ms;"
          f" one batched predict call takes {swap['mean_batch_ms']:.2f} ms on average); req/s"
          f" {swap['steady_rps']:,.0f} -> {swap['swapping_rps']:,.0f}; errors {swap['errors']:.0f};"
          f" {swap['alias_moves']} alias moves, {swap['swaps_done']:.0f} swaps done, {swap['swaps_failed']:.0f} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--swap-every", type=float, default=2.0, help="seconds between alias moves")
    parser.add_argument("--compile", dest="compile_mode", choices=["off", "auto"], default="off")
    parser.add_argument("--data-dir", type=Path, help="keep the generated data here (reused by later runs)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if not hasattr(Registry, "start_canary"):
        raise SystemExit("this shipml has no release state in its registry (Registry.start_canary): the release"
                         " benchmark needs issue #13's registry and server parts")
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="shipml-release-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        if (data / "versions.json").exists():
            first, second = json.loads((data / "versions.json").read_text())
        else:
            first, second = setup(data)
        versions = (first, second)
        rounds = [routing_round(data, versions, args.seconds, args.compile_mode, r) for r in range(args.rounds)]
        swap = swap_run(data, versions, args.seconds, args.swap_every, args.rounds, args.compile_mode)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)
    report(rounds, swap)
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "swap": swap}, indent=1))


if __name__ == "__main__":
    main()
