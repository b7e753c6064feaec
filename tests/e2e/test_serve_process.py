"""A real `shipml serve` process on 127.0.0.1, driven over HTTP, on each HTTP backend (uvicorn, granian)."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import shipml
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(400, 6)), columns=[f"x{i}" for i in range(6)])


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("registry")
    y = (data["x0"] + data["x1"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(data, y)
    shipml.save_model(model, "clf", sample=data, registry=root)
    return root


@pytest.fixture
def server(registry_dir: Path, tmp_path: Path, http_backend: str) -> Iterator[Server]:
    s = start(registry_dir, tmp_path, http=http_backend, limits={"max_body_bytes": 200_000, "max_rows": 500})
    yield s
    s.stop()


def test_routes_and_predictions_match_in_process(server: Server, registry_dir: Path, data: pd.DataFrame) -> None:
    model = shipml.load_model("clf", registry=registry_dir)
    rows = data.head(20)
    expected = model.predict(rows).tolist()
    r = httpx.post(server.url + "/predict", json={"instances": rows.to_dict("records")},
                   headers={"x-request-id": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    body = r.json()
    assert body["predictions"] == expected and body["model"] == "clf" and body["version"] == "1.0.0"
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9)
    columnar = httpx.post(server.url + "/models/clf/predict", json={"inputs": rows.to_dict("list")}).json()
    assert columnar["predictions"] == expected
    v1 = httpx.post(server.url + "/v1/models/clf:predict", json={"instances": rows.to_numpy().tolist()}).json()
    assert v1 == {"predictions": expected}
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/models").json()["models"][0]["versions"] == ["1.0.0"]
    assert httpx.get(server.url + "/v1/models/clf").json() == {"name": "clf", "ready": True}
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("shipml_requests_total", "shipml_request_latency_seconds", "shipml_inference_latency_seconds",
                 "shipml_batch_size_rows", "shipml_rows_predicted_total", "shipml_queue_depth"):
        assert name in metrics, name
    assert 'model="clf",route="predict",variant="stable",version="1.0.0"' in metrics


def test_concurrent_requests_are_batched_and_equal_unbatched(server: Server, registry_dir: Path,
                                                             data: pd.DataFrame) -> None:
    model = shipml.load_model("clf", registry=registry_dir)
    expected = model.predict(data).tolist()
    records = data.to_dict("records")
    with httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=32)) as client, \
            concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: client.post("/predict", json={"instances": [records[i]]}),
                                range(len(records))))
    assert [a.json()["predictions"][0] for a in answers] == expected
    metrics = httpx.get(server.url + "/metrics").text
    batches = next(line for line in metrics.splitlines() if line.startswith("shipml_batch_size_rows_count"))
    assert float(batches.split()[-1]) < len(records)  # some requests shared a predict call


def test_bad_request_fails_alone_in_its_batch(server: Server, data: pd.DataFrame) -> None:
    good = {"instances": data.head(1).to_dict("records")}
    bad = {"instances": [{**data.iloc[0].to_dict(), "x3": "oops"}]}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: httpx.post(server.url + "/predict", json=bad if i % 4 == 0 else good),
                                range(64)))
    for i, a in enumerate(answers):
        if i % 4 == 0:
            assert a.status_code == 422
            assert a.json()["problems"] == [{"row": 0, "column": "x3", "rule": "type",
                                             "message": "expected float, got 'oops'", "severity": "error"}]
        else:
            assert a.status_code == 200


def test_limits_and_errors_never_leak(server: Server, data: pd.DataFrame, registry_dir: Path) -> None:
    big = httpx.post(server.url + "/predict", content=b"{" + b" " * 250_000 + b"}",
                     headers={"content-type": "application/json"})
    assert big.status_code == 413
    rows = httpx.post(server.url + "/predict", json={"instances": data.head(1).to_dict("records") * 501})
    assert rows.status_code == 413 and "501 rows" in rows.json()["error"]
    pickled = httpx.post(server.url + "/predict", content=b"\x80\x04", headers={"content-type": "application/x-pickle"})
    assert pickled.status_code == 415
    assert httpx.post(server.url + "/predict", content=b"{nope", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert httpx.post(server.url + "/models/nope/predict", json={"instances": []}).status_code == 404
    wrong_method = httpx.get(server.url + "/predict")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    missing = httpx.post(server.url + "/predict", json={"instances": [{"x0": 1.0}]})
    assert missing.status_code == 422 and {p["rule"] for p in missing.json()["problems"]} == {"missing_column"}
    for r in (big, rows, pickled, missing):
        text = r.text
        assert str(registry_dir) not in text and "Traceback" not in text


def test_a_port_in_use_is_refused(server: Server, registry_dir: Path, http_backend: str) -> None:
    """Even by a second granian server, whose socket would share the port (SO_REUSEPORT) were it let bind."""
    second = subprocess.run([sys.executable, "-m", "shipml.cli", "--registry", str(registry_dir), "serve", "clf",
                             "--port", str(server.port), "--http", http_backend],
                            check=False, capture_output=True, timeout=60)
    assert second.returncode != 0 and b"in use" in second.stderr.lower(), second.stderr
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_sigterm_under_load_loses_no_admitted_request(registry_dir: Path, tmp_path: Path, data: pd.DataFrame,
                                                     http_backend: str) -> None:
    server = start(registry_dir, tmp_path, http=http_backend)
    payload = {"instances": data.head(5).to_dict("records")}
    stop_at = time.monotonic() + 30

    def client_loop(_: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while time.monotonic() < stop_at and len(codes) < 2000:
                try:
                    codes.append(client.post("/predict", json=payload).status_code)
                except httpx.TransportError:  # refused after the listener closed: never admitted
                    break
        return codes

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop, i) for i in range(8)]
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert httpx.get(server.url + "/readyz").status_code == 503  # draining: not ready, still serving
        codes = [c for f in futures for c in f.result(timeout=60)]
    server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0
    assert len(codes) > 50 and set(codes) == {200}
