"""A model that raises inside predict (issue #12, item 7), through a real server on each HTTP backend: a
scikit-learn pipeline whose OneHotEncoder(handle_unknown="error") raises on a category it never saw, served with
`input_policy: {unseen_category: warn}` so that such a row reaches it. The client gets "internal error" and its
request id, nothing else; the operator's log (the server's stderr) gets the model, the request id, the
exception's type and message and its traceback. Requests sent with it are answered as if it were not there."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

PLANS = ["basic", "plus", "pro"]


@pytest.fixture(scope="module")
def strict_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"x": rng.normal(size=200), "plan": rng.choice(PLANS, 200)})
    y = ((X["x"] > 0) ^ (X["plan"] == "pro")).astype(int)
    model = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["x"]),
                                                  ("cat", OneHotEncoder(handle_unknown="error"), ["plan"])])),
                      ("clf", LogisticRegression(max_iter=200))]).fit(X, y)
    root = tmp_path_factory.mktemp("strict-registry")
    shipml.save_model(model, "strict", sample=X, registry=root)
    return root


@pytest.fixture(params=["granian", "uvicorn"])
def server(strict_registry: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(strict_registry, tmp_path, http=request.param, endpoints=[{"name": "strict", "models": ["strict"]}],
              input_policy={"unseen_category": "warn"}, batching={"max_latency_ms": 20})
    yield s
    s.stop()


def test_the_log_says_what_the_model_raised_and_the_client_learns_nothing(server: Server,
                                                                         strict_registry: Path) -> None:
    model = shipml.load_model("strict", registry=strict_registry)
    valid = [[{"x": 0.1 * i - 1, "plan": PLANS[i % 3]}] for i in range(20)]
    culprit = [{"x": 0.5, "plan": "platinum"}]
    sent = [*valid[:10], culprit, *valid[10:]]
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            concurrent.futures.ThreadPoolExecutor(len(sent)) as pool:
        answers = list(pool.map(
            lambda rows: client.post("/models/strict/predict", json={"instances": rows},
                                     headers={"x-request-id": f"req-{rows[0]['plan']}-{rows[0]['x']:.1f}"}),
            sent))
    failed = answers[10]
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error", "request_id": "req-platinum-0.5"}
    for rows, answer in zip([*valid[:10], *valid[10:]], [*answers[:10], *answers[11:]], strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == model.predict(pd.DataFrame(rows)).tolist()
    server.proc.terminate()
    _, stderr = server.proc.communicate(timeout=30)
    log = stderr.decode()
    lines = [line for line in log.splitlines() if "req-platinum-0.5" in line]
    assert lines, log
    assert "strict:1.0.0 failed to predict: ValueError: Found unknown categories ['platinum']" in lines[0], log
    assert "Traceback (most recent call last)" in log and "sklearn" in log, log
    assert "The above exception was the direct cause" in log, log
