"""`shipml ray` on a real two-node Ray cluster on loopback: deploy, predict through Serve's HTTP proxy under a
route prefix, scale to two replicas (one on each node) with Ray's own `serve run` on the generated config, see a
model that cannot load refused, shut down and leave no Ray process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from tests.e2e.conftest import mixed_data
from tests.ray_cluster import free_port, two_node_cluster

pytestmark = pytest.mark.slow

HEAD_IP, NODE_IP = "127.0.0.32", "127.0.0.33"
PREFIX = "/ml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head on 127.0.0.32 and a second node on 127.0.0.33, one CPU each; afterwards, no process of theirs."""
    yield from two_node_cluster(HEAD_IP, NODE_IP, (f"--dashboard-host={HEAD_IP}",
                                                   f"--ray-client-server-port={free_port(HEAD_IP)}"))


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``churn``: an sklearn pipeline over an integer, a float, a category and a bool; string classes."""
    root = tmp_path_factory.mktemp("ray-registry")
    frame = mixed_data(300, seed=0)
    labels = np.where((frame["tenure"] < 20) & (frame["plan"] == "basic"), "leaves", "stays")
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["tenure", "charges"]),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "paperless"])]),
        LogisticRegression(max_iter=500))
    shipml.save_model(pipeline.fit(frame, labels), "churn", sample=frame, registry=root)
    return root


def write_spec(path: Path, registry: Path, port: int, replicas: int, model: str = "churn") -> Path:
    spec = {"registry": str(registry), "endpoints": [{"name": "churn", "models": [model]}],
            "server": {"host": HEAD_IP, "port": port, "graceful_timeout_s": 5},
            "ray": {"num_replicas": replicas, "num_cpus": 1}}
    path.write_text(yaml.safe_dump(spec))
    return path


def run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, check=False)
    assert result.returncode == 0, f"{' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def driver(address: str, body: str, timeout: float = 120) -> Any:
    """Run ``body`` in a Ray driver process connected to the cluster; what it prints (JSON) is the answer."""
    code = "import json, time\nimport ray\nfrom ray import serve\n" \
           f"ray.init(address={address!r}, log_to_driver=False, logging_level='ERROR')\n" + textwrap.dedent(body)
    result = run([sys.executable, "-c", code], timeout=timeout)
    return json.loads(result.stdout.strip().splitlines()[-1])


REPLICAS = """
    from ray.serve._private.api import _get_global_client  # node of each replica: not in serve.status()
    deadline = time.monotonic() + 90
    while True:
        app = serve.status().applications.get("churn-app")
        states = dict(app.deployments["shipml"].replica_states) if app else {}
        if (app and app.status == "RUNNING" and states.get("RUNNING") == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    details = _get_global_client().get_serve_details()
    replicas = details["applications"]["churn-app"]["deployments"]["shipml"]["replicas"]
    print(json.dumps({"status": str(app.status.value) if app else None,
                      "states": {str(getattr(k, "value", k)): v for k, v in states.items()},
                      "nodes": sorted(r["node_ip"] for r in replicas if r["state"] == "RUNNING")}))
"""

DELETE_BAD = """
    serve.delete("bad")
    print(json.dumps({"applications": sorted(serve.status().applications)}))
"""

SHUTDOWN = """
    serve.shutdown()
    print(json.dumps({"applications": len(serve.status().applications)}))
"""


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise AssertionError(f"{url}/readyz never answered 200: {last}")


def check_predictions(url: str, registry: Path) -> None:
    model = shipml.load_model("churn", registry=registry)
    rows = mixed_data(25, seed=7)
    expected = model.predict(rows).tolist()
    r = httpx.post(url + "/predict", json={"instances": rows.to_dict("records")}, headers={"x-request-id": "r-1"},
                   timeout=10)
    assert r.headers.get_list("x-request-id") == ["r-1"]  # the proxy's copy only
    body = r.json()
    assert body["request_id"] == "r-1" and body["predictions"] == expected
    assert (body["model"], body["version"]) == ("churn", "1.0.0")
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9)
    columnar = httpx.post(url + "/models/churn/predict", json={"inputs": rows.to_dict("list")}, timeout=10)
    assert columnar.status_code == 200 and columnar.json()["predictions"] == expected
    v1 = httpx.post(url + "/v1/models/churn:predict", json={"instances": rows.to_dict("records")}, timeout=10)
    assert v1.json() == {"predictions": expected}
    bad = httpx.post(url + "/predict", json={"instances": [{**rows.iloc[0].to_dict(), "plan": 3}]}, timeout=10)
    assert bad.status_code == 422 and "plan" in bad.text


def test_deploy_predict_scale_and_shut_down(ray_cluster: str, registry_dir: Path, tmp_path: Path) -> None:
    http_port = free_port(HEAD_IP)
    url = f"http://{HEAD_IP}:{http_port}{PREFIX}"
    common = ["--route-prefix", PREFIX, "--name", "churn-app", "--proxy-location", "HeadOnly"]
    shipml_cli = [sys.executable, "-m", "shipml.cli", "ray"]
    try:
        one = write_spec(tmp_path / "one.yaml", registry_dir, http_port, replicas=1)
        run([*shipml_cli, str(one), "-o", str(tmp_path / "one"), *common, "--deploy", "--address", ray_cluster,
             "--timeout", "120"])
        wait_ready(url)
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        assert httpx.get(url + "/models").json()["models"][0]["versions"] == ["1.0.0"]
        check_predictions(url, registry_dir)
        metrics = httpx.get(url + "/metrics").text
        assert 'model="churn",route="predict",variant="stable",version="1.0.0"' in metrics
        assert httpx.get(f"http://{HEAD_IP}:{http_port}/predict").status_code == 404  # only under the prefix

        # A model that cannot load: its replica never starts and --deploy says why (--no-check: only the replicas
        # find out). The replica takes the CPU left free; the failed application is deleted to free it again.
        bad = write_spec(tmp_path / "bad.yaml", registry_dir, http_port, replicas=1, model="churn@production")
        failed = subprocess.run([*shipml_cli, str(bad), "-o", str(tmp_path / "bad"), "--no-check", "--name", "bad",
                                 "--route-prefix", "/bad", "--proxy-location", "HeadOnly", "--deploy", "--address",
                                 ray_cluster, "--timeout", "120"], capture_output=True, text=True, timeout=180,
                                env=ENV, check=False)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert "error: Ray Serve application bad failed to deploy" in failed.stderr
        assert "models failed to load: model churn@production: no such alias in the registry" in failed.stderr
        assert httpx.get(url + "/readyz").status_code == 200  # the running application is untouched
        assert driver(ray_cluster, DELETE_BAD) == {"applications": ["churn-app"]}

        # Scale with Ray's own tooling on the generated config: two replicas, one CPU each, one CPU per node.
        two = write_spec(tmp_path / "two.yaml", registry_dir, http_port, replicas=2)
        run([*shipml_cli, str(two), "-o", str(tmp_path / "two"), *common])
        run([str(BIN / "serve"), "run", str(tmp_path / "two" / "serve.yaml"), "--non-blocking",
             "--address", ray_cluster])
        status = driver(ray_cluster, REPLICAS)
        assert status["status"] == "RUNNING" and status["states"] == {"RUNNING": 2}, status
        assert status["nodes"] == [HEAD_IP, NODE_IP]
        wait_ready(url)
        for _ in range(6):  # requests spread over both replicas; every one answers the same
            check_predictions(url, registry_dir)
    finally:
        assert driver(ray_cluster, SHUTDOWN) == {"applications": 0}
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)
