"""NaN, Infinity and -Infinity in JSON request bodies (issue #12, item 8), through a real server on each HTTP
backend: the real tritonclient in JSON mode (binary_data=False) and plain Python-json clients send them as
literals; NaN is a missing value (fine for a nullable column, a "null" problem otherwise), an infinity a float
that the range checks see. The model: LightGBM on three floats, the last one with missing values in training."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

import shipml
from shipml.package.loaded import LoadedModel
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

NAMES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def nan_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=NAMES)
    X.loc[::6, "x2"] = np.nan
    y = (X["x0"] + X["x2"].fillna(1.0) > 0).astype(int)
    root = tmp_path_factory.mktemp("nan-registry")
    shipml.save_model(lgb.LGBMClassifier(n_estimators=10, num_leaves=5, verbose=-1).fit(X, y), "gaps", sample=X,
                      registry=root)
    return root


@pytest.fixture(scope="module")
def model(nan_registry: Path) -> LoadedModel:
    loaded = shipml.load_model("gaps", registry=nan_registry)
    kinds = {c.name: c.nullable for c in loaded.signature.inputs}
    assert kinds == {"x0": False, "x1": False, "x2": True}
    return loaded


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def server(nan_registry: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(nan_registry, tmp_path_factory.mktemp("nan"), http=request.param,
              endpoints=[{"name": "gaps", "models": ["gaps"]}])
    yield s
    assert s.stop() == 0


def json_tensors(rows: np.ndarray) -> list[triton.InferInput]:
    inputs = []
    for j, name in enumerate(NAMES):
        t = triton.InferInput(name, [len(rows)], "FP64")
        t.set_data_from_numpy(np.ascontiguousarray(rows[:, j]), binary_data=False)
        inputs.append(t)
    return inputs


def test_tritonclient_json_mode_sends_nan_as_a_missing_value(server: Server, model: LoadedModel) -> None:
    rows = np.array([[0.1, -0.3, np.nan], [1.2, 0.4, 0.5], [-0.5, np.inf, np.nan], [0.0, -np.inf, -1.0]])
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        result = client.infer("gaps", json_tensors(rows),
                              outputs=[triton.InferRequestedOutput("predict", binary_data=False)])
    finally:
        client.close()
    frame = pd.DataFrame(rows, columns=NAMES)
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(frame))


def test_tritonclient_json_mode_nan_where_no_value_may_be_missing(server: Server) -> None:
    rows = np.array([[np.nan, 0.1, 0.2], [0.3, 0.4, 0.5]])
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("gaps", json_tensors(rows))
    finally:
        client.close()
    message = str(caught.value)
    assert "row 0, column 'x0': null is not allowed" in message
    assert "binary" not in message.lower() and "Inference-Header-Content-Length" not in message


@pytest.mark.parametrize("path", ["/models/gaps/predict", "/v1/models/gaps:predict", "/predict"])
def test_python_json_clients_send_nan_and_infinities(server: Server, model: LoadedModel, path: str) -> None:
    records = [{"x0": 0.2, "x1": math.inf, "x2": math.nan}, {"x0": -1.0, "x1": 0.3, "x2": 0.7}]
    body = json.dumps({"instances": records})
    assert "NaN" in body and "Infinity" in body
    answer = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == model.predict(pd.DataFrame(records)).tolist()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.fixed_dictionaries({name: st.one_of(st.floats(-2, 2), st.floats()) for name in NAMES}),
                     min_size=1, max_size=4),
       form=st.sampled_from(["records", "columnar"]))
def test_any_floats_in_either_form_are_read_as_python_wrote_them(http: httpx.Client, model: LoadedModel,
                                                                 rows: list[dict[str, float]], form: str) -> None:
    """The server's answer equals the model's in-process verdict on the same floats (NaN as missing)."""
    body: dict[str, Any] = ({"instances": rows} if form == "records"
                            else {"inputs": {n: [r[n] for r in rows] for n in NAMES}})
    answer = http.post("/models/gaps/predict", content=json.dumps(body),
                       headers={"content-type": "application/json"})
    frame = pd.DataFrame(rows, columns=NAMES)
    report = model.validate(frame)
    if report.ok:
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == model.predict(frame).tolist()
        shown = {(p["row"], p["column"], p["rule"]) for p in answer.json().get("warnings", [])}
        assert shown == {(p.row, p.column, p.rule) for p in report.warnings}
    else:
        assert answer.status_code == 422, answer.text
        shown = {(p["row"], p["column"], p["rule"]) for p in answer.json()["problems"]}
        assert shown == {(p.row, p.column, p.rule) for p in report.errors}
