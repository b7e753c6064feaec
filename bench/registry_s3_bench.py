"""Loading a model from an S3 registry (moto on 127.0.0.1) against the same model in a local registry.

For each case, a fresh process loads ``m@production`` (a tiny scikit-learn model) and reports, measured inside
it around ``shipml.load_model``: seconds, and the S3 requests it made by operation (counted with botocore's
event hooks). Cases: local registry; S3 with an empty cache (downloads the version); S3 with the cache filled
(must make no request beyond the model's small metadata). Prints a table of medians over ``--repeat`` runs.

Then the cold start of ``shipml serve m@production``: seconds from starting the process to its first 200 on
/readyz, from the local registry and from S3 with an empty and with a filled cache.

    PYTHONPATH=src .venv/bin/python bench/registry_s3_bench.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import collections, json, sys, time
import botocore.session
calls = collections.Counter()
_orig = botocore.session.Session.create_client
def create_client(self, *args, **kwargs):
    client = _orig(self, *args, **kwargs)
    client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.update([model.name]))
    return client
botocore.session.Session.create_client = create_client
import shipml
started = time.perf_counter()
model = shipml.load_model("m@production", registry=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - started, "requests": dict(calls), "version": model.version}))
"""


def run(registry: str, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, registry], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def serve_start(registry: str, env: dict[str, str]) -> float:
    """Seconds from starting ``shipml serve`` to its first ready answer."""
    import httpx
    from tests.s3_support import free_port

    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "shipml.cli", "--registry", registry, "serve", "m@production",
                             "--port", str(port), "--no-access-log"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise RuntimeError("the server never became ready")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from tests.s3_support import moto_server
    from tests.unit.registry_support import build_tiny_registry

    import shipml

    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp) / "moto.log") as server:
        env = {**os.environ, **server.env(), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        os.environ.update(server.env())
        os.environ["SHIPML_CACHE"] = f"{tmp}/build-cache"
        local = Path(tmp) / "local"
        build_tiny_registry(local)
        uri = f"s3://{server.new_bucket()}/bench"
        build_tiny_registry(shipml.Registry(uri))
        rows: dict[str, list[dict[str, object]]] = {"local registry": [], "s3, cold cache": [],
                                                    "s3, warm cache": []}
        for i in range(args.repeat):
            cache = f"{tmp}/cache-{i}"
            rows["local registry"].append(run(str(local), {**env, "SHIPML_CACHE": cache}))
            rows["s3, cold cache"].append(run(uri, {**env, "SHIPML_CACHE": cache}))
            rows["s3, warm cache"].append(run(uri, {**env, "SHIPML_CACHE": cache}))
        print(f"{'case':<16} {'median s':>9}  requests per load (median run)")
        for case, found in rows.items():
            seconds = statistics.median(float(r["seconds"]) for r in found)  # type: ignore[arg-type]
            requests = found[len(found) // 2]["requests"]
            print(f"{case:<16} {seconds:>9.3f}  {requests}")
        starts: dict[str, list[float]] = {"local registry": [], "s3, cold cache": [], "s3, warm cache": []}
        for i in range(args.repeat):
            cache = f"{tmp}/serve-cache-{i}"
            starts["local registry"].append(serve_start(str(local), {**env, "SHIPML_CACHE": cache}))
            starts["s3, cold cache"].append(serve_start(uri, {**env, "SHIPML_CACHE": cache}))
            starts["s3, warm cache"].append(serve_start(uri, {**env, "SHIPML_CACHE": cache}))
        print(f"\n{'shipml serve':<16} {'median s':>9}  (start to first ready answer; all runs)")
        for case, found in starts.items():
            print(f"{case:<16} {statistics.median(found):>9.3f}  {' '.join(f'{x:.2f}' for x in found)}")


if __name__ == "__main__":
    main()
