"""The Open Inference Protocol v2 routes of a real server (on each HTTP backend), driven by the real tritonclient,
and the API description (/openapi.json, /docs, /models/{name})."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import shipml
from tests.e2e.conftest import mixed_data, numeric_data
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("v2")
    s = start(served_registry, directory, http=request.param, limits={"max_rows": 50}, stdout=directory / "access.log",
              endpoints=[{"name": "clf", "models": ["clf:1.1.0", "clf:1.0.0"]},
                         {"name": "churn", "models": ["churn"]}])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def tensors(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_string_dtype(column):
            array, datatype = np.array([v.encode() for v in column], dtype=object), "BYTES"
        elif column.dtype == bool:
            array, datatype = column.to_numpy(), "BOOL"
        elif column.dtype.kind == "i":
            array, datatype = column.to_numpy(dtype=np.int64), "INT64"
        else:
            array, datatype = column.to_numpy(dtype=np.float64), "FP64"
        t = triton.InferInput(name, [len(frame)], datatype)
        t.set_data_from_numpy(array, binary_data=binary)
        inputs.append(t)
    return inputs


def outputs(binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput("predict", binary_data=binary),
            triton.InferRequestedOutput("predict_proba", binary_data=binary)]


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("clf") and client.is_model_ready("clf", "1.0.0")
    assert not client.is_model_ready("clf", "9.9.9")
    meta = client.get_server_metadata()
    assert meta["name"] == "shipml" and "binary_tensor_data" in meta["extensions"]
    clf = client.get_model_metadata("clf")
    assert clf["versions"] == ["1.1.0", "1.0.0"] and clf["platform"] == "lightgbm"
    assert [i["name"] for i in clf["inputs"]] == [f"x{i}" for i in range(6)]
    assert [o["name"] for o in clf["outputs"]] == ["predict", "predict_proba"]
    assert client.get_model_metadata("clf", "1.0.0")["versions"] == ["1.0.0"]
    churn = client.get_model_metadata("churn")
    assert {i["name"]: i["datatype"] for i in churn["inputs"]} == {
        "tenure": "INT64", "charges": "FP64", "plan": "BYTES", "paperless": "BOOL"}
    assert churn["outputs"][0]["datatype"] == "BYTES"
    index = client.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("churn", "1.0.0", "READY"), ("clf", "1.0.0", "READY"), ("clf", "1.1.0", "READY")]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, False), (False, True), (True, True)])
def test_infer_equals_in_process(client: triton.InferenceServerClient, served_registry: Path,
                                 binary_in: bool, binary_out: bool) -> None:
    rows = numeric_data().head(25)
    for version in ("1.1.0", "1.0.0"):
        model = shipml.load_model(f"clf:{version}", registry=served_registry)
        result = client.infer("clf", tensors(rows, binary_in), model_version=version, outputs=outputs(binary_out),
                              request_id=f"req-{version}")
        assert result.get_response()["id"] == f"req-{version}"
        assert result.get_response()["model_version"] == version
        np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(rows), rtol=1e-12)
    churn_rows = mixed_data().head(30)
    churn = shipml.load_model("churn", registry=served_registry)
    result = client.infer("churn", tensors(churn_rows, binary_in), outputs=outputs(binary_out))
    labels = result.as_numpy("predict")
    assert [v.decode() if isinstance(v, bytes) else v for v in labels] == churn.predict(churn_rows).tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"), churn.predict_proba(churn_rows), rtol=1e-12)


def test_matrix_input_and_default_outputs(client: triton.InferenceServerClient, served_registry: Path) -> None:
    rows = numeric_data().head(10)
    matrix = triton.InferInput("input-0", [10, 6], "FP32")
    matrix.set_data_from_numpy(rows.to_numpy(dtype=np.float32), binary_data=True)
    result = client.infer("clf", [matrix])  # no outputs named: both, as binary (tritonclient's default)
    model = shipml.load_model("clf:1.1.0", registry=served_registry)
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows.astype(np.float32)))
    assert result.as_numpy("predict_proba").shape == (10, 2)


def status_of(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status())


def test_errors_have_the_protocol_shape(client: triton.InferenceServerClient, server: Server) -> None:
    rows = mixed_data().head(3)
    assert status_of(lambda: client.infer("nope", tensors(rows, False))) == "404"
    assert status_of(lambda: client.infer("clf", tensors(numeric_data().head(2), False), model_version="9.9.9")
                     ) == "404"
    unseen = rows.assign(plan=["basic", "gold", "pro"])
    with pytest.raises(InferenceServerException) as info:
        client.infer("churn", tensors(unseen, True))
    assert info.value.status() == "422" and "gold" in info.value.message() and "row 1" in info.value.message()
    assert status_of(lambda: client.infer("churn", tensors(rows.drop(columns="plan"), False))) == "422"
    assert status_of(lambda: client.infer("clf", tensors(numeric_data().head(51), True))) == "413"
    wrong_type = triton.InferInput("plan", [3], "FP32")
    wrong_type.set_data_from_numpy(np.zeros(3, dtype=np.float32))
    others = [t for t in tensors(rows, False) if t.name() != "plan"]
    assert status_of(lambda: client.infer("churn", [*others, wrong_type])) == "400"
    bad_json = httpx.post(server.url + "/v2/models/clf/infer", content=b"{nope",
                          headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and set(bad_json.json()) >= {"error"}
    bad_header = httpx.post(server.url + "/v2/models/clf/infer", content=b"{}",
                            headers={"inference-header-content-length": "x"})
    assert bad_header.status_code == 400
    assert httpx.get(server.url + "/v2/models/clf/infer").status_code == 405
    assert httpx.post(server.url + "/v2/models/clf/infer", content=b"\x80\x04",
                      headers={"content-type": "application/python-pickle"}).status_code == 415


def test_openapi_describes_each_model_from_its_signature(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/models/clf/predict", "/models/churn/predict", "/v1/models/churn:predict",
                 "/v2/models/churn/infer", "/models/churn/versions/{version}/predict", "/healthz", "/readyz"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    record = schemas["churn_record"]
    assert record["required"] == ["tenure", "charges", "plan", "paperless"]
    assert record["properties"]["plan"]["enum"] == ["basic", "plus", "pro"]
    assert record["properties"]["tenure"]["type"] == "integer"
    assert record["properties"]["paperless"]["type"] == "boolean"
    example = doc["paths"]["/models/churn/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    for row in example["instances"]:
        jsonschema.validate(row, record)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example["instances"][0], "plan": "gold"}, record)
    answer = httpx.post(server.url + "/models/churn/predict", json=example)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(example["instances"])
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text and docs.headers["content-type"].startswith(
        "text/html")


def test_model_description_gives_a_valid_example(server: Server) -> None:
    info = httpx.get(server.url + "/models/churn").json()
    assert info["ready"] and info["versions"] == ["1.0.0"]
    assert [c["name"] for c in info["inputs"]] == ["tenure", "charges", "plan", "paperless"]
    assert info["outputs"]["classes"] == ["leaves", "stays"]
    answer = httpx.post(server.url + "/models/churn/predict", json=info["example"])
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(info["example"]["instances"]) == 1
    assert httpx.get(server.url + "/models/nope").status_code == 404


def test_access_log_has_one_json_line_per_request_and_skips_probes(server: Server) -> None:
    body = {"instances": numeric_data().head(3).to_dict("records")}
    answer = httpx.post(server.url + "/models/clf/predict", json=body, headers={"x-request-id": "trace-42"})
    assert answer.headers["x-request-id"] == "trace-42" and answer.json()["request_id"] == "trace-42"
    httpx.get(server.url + "/healthz")
    log_file = Path(server.proc.args[-1]).parent / "access.log"  # type: ignore[index]
    lines = []
    for _ in range(50):  # the log line is written after the response
        lines = [orjson.loads(line) for line in log_file.read_bytes().splitlines()]
        if any(entry["request_id"] == "trace-42" for entry in lines):
            break
        time.sleep(0.05)
    entry = next(e for e in lines if e["request_id"] == "trace-42")
    assert entry["method"] == "POST" and entry["path"] == "/models/clf/predict" and entry["status"] == 200
    assert entry["model"] == "clf" and entry["version"] == "1.1.0" and entry["rows"] == 3 and entry["ms"] > 0
    assert not any(e["path"] in ("/healthz", "/readyz") for e in lines)
