"""One malformed request never fails the others in its batch (issue #12, item 1), through a real `shipml serve`
process on each HTTP backend: concurrent valid requests and requests with malformed cells share batches (the
batcher waits up to 20 ms for requests whose bodies are being read); the valid ones get 200 and the very
predictions of the model in-process, the malformed ones their own 4xx - never a 500."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.package.loaded import LoadedModel
from tests.e2e.server_process import Server, start
from tests.json_strategies import Case, cases, problem_cells, readable

pytestmark = pytest.mark.slow

CLF = [f"x{i}" for i in range(6)]
CHURN = ["tenure", "charges", "plan", "paperless"]
#: Malformed cells of the issue: lists, empty and one-element lists, objects, nested objects, huge integers,
#: strings, booleans, a null.
BAD_CELLS: list[Any] = [[1, 2], [], [1], {}, {"a": {"b": [1]}}, [[1, 2], [3, 4]], 10**30, 10**400, "abc", True,
                        None]


def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    """POST ``body`` as JSON the way Python's json writes it (NaN and huge integers included)."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def wrap(route: str, case: Case) -> dict[str, Any]:
    return {"inputs": case.body()} if case.form == "columnar" else {"instances": case.body()}


def batches(server: Server, model: str, series: str = "count") -> float:
    """How many batches the server has run for ``model`` (all versions); ``series="bucket"``: how many of them
    held a single row."""
    text = httpx.get(server.url + "/metrics").text
    prefix = "shipml_batch_size_rows_bucket{" if series == "bucket" else "shipml_batch_size_rows_count{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and f'model="{model}"' in line
               and (series != "bucket" or 'le="1.0"' in line))


# -- the reproduction: 40 valid requests and malformed ones, every route and form ----------------------

@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def clf_server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("isolation"), http=request.param,
              endpoints=[{"name": "clf", "models": ["clf:1.0.0"]}], batching={"max_latency_ms": 20})
    yield s
    assert s.stop() == 0


ROUTES = [("/predict", "records"), ("/predict", "columnar"), ("/predict", "rows"),
          ("/models/clf/predict", "records"), ("/models/clf/predict", "columnar"), ("/models/clf/predict", "rows"),
          ("/models/clf/versions/1.0.0/predict", "records"), ("/models/clf/versions/1.0.0/predict", "columnar"),
          ("/v1/models/clf:predict", "records"), ("/v1/models/clf:predict", "rows")]


@pytest.mark.parametrize(("path", "form"), ROUTES)
def test_forty_valid_requests_with_malformed_ones(clf_server: Server, served_registry: Path, path: str,
                                                  form: str) -> None:
    model = shipml.load_model("clf:1.0.0", registry=served_registry)
    rng = np.random.default_rng(7)
    valid = [Case([dict(zip(CLF, map(float, rng.normal(size=6)), strict=True))], form, CLF) for _ in range(40)]
    bad = [Case([{**valid[i].rows[0], f"x{i % 6}": value}], form, CLF, {(0, f"x{i % 6}"): value})
           for i, value in enumerate(BAD_CELLS)]
    sent = [*valid[:20], *bad, *valid[20:]]
    before = batches(clf_server, "clf")
    with httpx.Client(base_url=clf_server.url, timeout=30, limits=httpx.Limits(max_connections=64)) as client, \
            concurrent.futures.ThreadPoolExecutor(len(sent)) as pool:
        answers = list(pool.map(lambda c: post(client, path, wrap(path, c)), sent))
    assert batches(clf_server, "clf") - before < len(valid)  # fewer batches than valid requests: they were merged
    for case, answer in zip(sent, answers, strict=True):
        assert answer.status_code < 500, answer.text
        if case.clean:
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == model.predict(pd.DataFrame(case.rows)).tolist()
        elif case.nonscalar_cells() or isinstance(next(iter(case.injected.values())), str):
            assert answer.status_code == 422, answer.text
            column = next(iter(case.injected))[1]
            assert (0, column) in problem_cells(answer.json()["problems"], "type"), answer.text


def test_v2_json_tensors_with_malformed_data(clf_server: Server, served_registry: Path) -> None:
    """v2 tensors are decoded per request: malformed data is that request's 400 (a null in a column that takes
    none: its 422, from the batch's checks), the others are answered."""
    model = shipml.load_model("clf:1.0.0", registry=served_registry)
    rng = np.random.default_rng(8)
    rows = [rng.normal(size=6).tolist() for _ in range(40)]

    def body(values: list[Any]) -> dict[str, Any]:
        return {"inputs": [{"name": n, "datatype": "FP64", "shape": [1], "data": [v]} for n, v in
                           zip(CLF, values, strict=True)]}

    malformed = [body([[1, 2], *rows[0][1:]]), body([{}, *rows[0][1:]]), body(["x", *rows[0][1:]]),
                 body([None, *rows[0][1:]]), body([10**400, *rows[0][1:]]),
                 {"inputs": [{"name": "x0", "datatype": "FP64", "shape": [2], "data": [1, [2, 3]]}]}]
    sent = [body(r) for r in rows[:20]] + malformed + [body(r) for r in rows[20:]]
    with httpx.Client(base_url=clf_server.url, timeout=30, limits=httpx.Limits(max_connections=64)) as client, \
            concurrent.futures.ThreadPoolExecutor(len(sent)) as pool:
        answers = list(pool.map(lambda b: post(client, "/v2/models/clf/infer", b), sent))
    expected = model.predict(pd.DataFrame(rows, columns=CLF)).tolist()
    ok = [a for i, a in enumerate(answers) if not 20 <= i < 20 + len(malformed)]
    assert [a.status_code for a in ok] == [200] * 40
    assert [a.json()["outputs"][0]["data"][0] for a in ok] == expected
    assert [a.status_code for a in answers[20:20 + len(malformed)]] == [400, 400, 400, 422, 400, 400]


# -- the property, through the server --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def two_models_server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory,
                      request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("isolation-fuzz"), http=request.param,
              endpoints=[{"name": "clf", "models": ["clf:1.0.0"]}, {"name": "churn", "models": ["churn"]}],
              batching={"max_latency_ms": 20})
    yield s
    assert s.stop() == 0


def clf_row() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: st.floats(-2.5, 2.5) for name in CLF})


def churn_row() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"tenure": st.integers(0, 71), "charges": st.floats(20, 130),
                                  "plan": st.sampled_from(["basic", "plus", "pro"]), "paperless": st.booleans()})


ROUTE_OF = {"clf": ["/models/clf/predict", "/models/clf/versions/1.0.0/predict", "/v1/models/clf:predict"],
            "churn": ["/models/churn/predict", "/v1/models/churn:predict"]}


@st.composite
def sent_request(draw: st.DrawFn) -> tuple[str, str, Case]:
    model = draw(st.sampled_from(["clf", "churn"]))
    path = draw(st.sampled_from(ROUTE_OF[model]))
    forms = ("records", "rows") if path.startswith("/v1/") else ("records", "columnar", "rows")
    row, names = (clf_row, CLF) if model == "clf" else (churn_row, CHURN)
    return model, path, draw(cases(row, names, forms=forms, max_rows=1))


def test_random_malformed_cells_never_change_a_valid_answer(two_models_server: Server,
                                                            served_registry: Path) -> None:
    """Random mixes of single-row requests to two models (LightGBM on floats; a scikit-learn pipeline on an
    int, a float, a category and a bool), valid or with random JSON values in random cells, sent at once."""
    models: dict[str, LoadedModel] = {"clf": shipml.load_model("clf:1.0.0", registry=served_registry),
                                      "churn": shipml.load_model("churn", registry=served_registry)}
    def merged() -> float:  # batches of more than one row: of several (single-row) requests
        return sum(batches(two_models_server, m) - batches(two_models_server, m, "bucket") for m in models)

    before = merged()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sent=st.lists(sent_request(), min_size=4, max_size=16))
    def prop(sent: list[tuple[str, str, Case]]) -> None:
        with httpx.Client(base_url=two_models_server.url, timeout=30) as client, \
                concurrent.futures.ThreadPoolExecutor(len(sent)) as pool:
            answers = list(pool.map(lambda s: post(client, s[1], wrap(s[1], s[2])), sent))
        for (model, path, case), answer in zip(sent, answers, strict=True):
            assert answer.status_code < 500, (path, case, answer.text)
            if not all(map(readable, case.injected.values())):
                assert answer.status_code == 400 and "not valid JSON" in answer.text, (path, case, answer.text)
                continue
            if case.clean:
                assert answer.status_code == 200, (path, case, answer.text)
                expected = models[model].predict(pd.DataFrame(case.rows)).tolist()
                assert answer.json()["predictions"] == expected, (path, case)
            for cell in case.nonscalar_cells():
                assert answer.status_code == 422, (path, case, answer.text)
                assert cell in problem_cells(answer.json()["problems"], "type"), (path, case, answer.text)

    prop()
    assert merged() > before  # requests really shared batches
