"""/metrics of a real server (on each HTTP backend) counts every request - every route, 404s, 405s and requests
refused by auth - under a bounded set of labels: a path no route serves is counted as ``not_found``, never under
its own text, so random paths cannot grow the number of series."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from shipml.server.auth import TokenStore
from tests.e2e.conftest import numeric_data
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

ROW = numeric_data().iloc[0].to_dict()
SIMPLE = {"instances": [ROW]}
V1 = {"instances": [list(ROW.values())]}
V2 = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]}
CLF = ("clf", "1.1.0")
NONE = ("", "")

# (method, path, body, route label, model and version labels, status)
CALLS: list[tuple[str, str, Any, str, tuple[str, str], int]] = [
    ("GET", "/healthz", None, "/healthz", NONE, 200),
    ("GET", "/readyz", None, "/readyz", NONE, 200),
    ("GET", "/models", None, "/models", NONE, 200),
    ("GET", "/openapi.json", None, "/openapi.json", NONE, 200),
    ("GET", "/docs", None, "/docs", NONE, 200),
    ("GET", "/docs/assets/swagger-ui.css", None, "/docs/assets", NONE, 200),
    ("GET", "/docs/assets/no-such-file.js", None, "/docs/assets", NONE, 404),
    ("GET", "/models/clf", None, "model_info", CLF, 200),
    ("GET", "/models/ghost", None, "model_info", NONE, 404),
    ("POST", "/models/clf/predict", SIMPLE, "predict", CLF, 200),
    ("POST", "/models/clf/versions/1.1.0/predict", SIMPLE, "predict", CLF, 200),
    ("POST", "/predict", SIMPLE, "predict", CLF, 200),
    ("POST", "/v1/models/clf:predict", V1, "v1_predict", CLF, 200),
    ("GET", "/v1/models/clf", None, "v1_status", CLF, 200),
    ("GET", "/v2", None, "/v2", NONE, 200),
    ("GET", "/v2/health/live", None, "/v2/health/live", NONE, 200),
    ("GET", "/v2/health/ready", None, "/v2/health/ready", NONE, 200),
    ("POST", "/v2/repository/index", {}, "/v2/repository/index", NONE, 200),
    ("GET", "/v2/models/clf", None, "v2_model_metadata", CLF, 200),
    ("GET", "/v2/models/clf/versions/1.1.0", None, "v2_model_metadata", CLF, 200),
    ("GET", "/v2/models/clf/versions/9.9.9", None, "v2_model_metadata", NONE, 404),
    ("GET", "/v2/models/clf/ready", None, "v2_model_ready", CLF, 200),
    ("GET", "/v2/models/clf/versions/1.1.0/ready", None, "v2_model_ready", CLF, 200),
    ("POST", "/v2/models/clf/infer", V2, "v2_infer", CLF, 200),
    ("GET", "/no/such/route", None, "not_found", NONE, 404),
    ("DELETE", "/models", None, "method_not_allowed", NONE, 405),
    ("GET", "/models/clf/predict", None, "method_not_allowed", NONE, 405),
]


def series(server: Server) -> Counter[tuple[str, str, str, str]]:
    """shipml_requests_total by (route, model, version, code), summed over variants."""
    text = httpx.get(server.url + "/metrics").text
    out: Counter[tuple[str, str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shipml_requests_total":
                labels = sample.labels
                out[(labels["route"], labels["model"], labels["version"], labels["code"])] += int(sample.value)
    return out


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("metrics"), http=request.param,
              endpoints=[{"name": "clf", "models": ["clf:1.1.0"]}])
    yield s
    assert s.stop() == 0


def test_every_route_is_counted(server: Server) -> None:
    before = series(server)
    expected: Counter[tuple[str, str, str, str]] = Counter({("/metrics", "", "", "200"): 1})  # `before` itself
    with httpx.Client(base_url=server.url) as client:
        for method, path, body, route, (model, version), status in CALLS:
            answer = client.request(method, path, json=body)
            assert answer.status_code == status, (method, path, answer.text)
            expected[(route, model, version, str(status))] += 1
    after = series(server)
    assert after - before == expected


def test_latency_is_observed_for_model_routes(server: Server) -> None:
    httpx.get(server.url + "/v2/models/clf")
    text = httpx.get(server.url + "/metrics").text
    assert ('shipml_request_latency_seconds_count{model="clf",route="v2_model_metadata",variant="",version="1.1.0"}'
            in text)


PATH_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="?#%/.")
SEGMENT = st.one_of(st.sampled_from(["models", "v1", "v2", "clf", "clf:predict", "versions", "1.1.0", "infer",
                                     "ready", "predict", "health", "docs", "assets", "metrics", "ghost", ""]),
                    st.text(PATH_CHARS, min_size=1, max_size=12))
METHOD = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
ROUTE_LABELS = {c[3] for c in CALLS} | {"/metrics"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(METHOD, st.lists(SEGMENT, min_size=1, max_size=6)), min_size=1, max_size=8))
def test_random_paths_keep_the_labels_bounded(server: Server, calls: list[tuple[str, list[str]]]) -> None:
    with httpx.Client(base_url=server.url) as client:
        for method, segments in calls:
            path = "/" + "/".join(segments)
            client.request(method, httpx.URL(server.url).copy_with(path=path), content=b"{}")
    for route, model, version, code in series(server):
        assert route in ROUTE_LABELS, route
        assert (model, version) in (CLF, NONE)
        assert 100 <= int(code) <= 599


def test_unknown_paths_add_no_series(server: Server) -> None:
    """Once one unknown path per method was counted, a hundred other random ones add no series: each is counted
    once more under the same labels."""
    rng_paths = st.lists(st.text(PATH_CHARS, min_size=1, max_size=20), min_size=1, max_size=4)
    methods = ["GET", "POST", "PUT", "DELETE"]
    sent = Counter[str]()
    with httpx.Client(base_url=server.url) as client:
        for method in methods:
            client.request(method, "/zz-unknown")
        before = series(server)

        @settings(max_examples=100, deadline=None)
        @given(method=st.sampled_from(methods), segments=rng_paths)
        def hit(method: str, segments: list[str]) -> None:
            answer = client.request(method, httpx.URL(server.url).copy_with(path="/zz-" + "/".join(segments)))
            sent[str(answer.status_code)] += 1

        hit()
    after = series(server)
    assert set(after) == set(before), sorted(set(after) - set(before))
    assert sent.keys() == {"404"}
    assert after - before == Counter({("not_found", "", "", "404"): sent["404"], ("/metrics", "", "", "200"): 1})


@pytest.fixture(scope="module")
def auth_server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    directory = tmp_path_factory.mktemp("metrics-auth")
    store = TokenStore(directory / "tokens.json")
    token, _ = store.create("predict", model="churn")
    s = start(served_registry, directory, endpoints=[{"name": "clf", "models": ["clf:1.1.0"]}],
              auth={"enabled": True, "tokens_file": str(store.path)})
    yield s, token
    assert s.stop() == 0


def test_refused_requests_are_counted(auth_server: tuple[Server, str]) -> None:
    server, churn_token = auth_server
    before = series(server)
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/models/clf").status_code == 401
        assert client.post("/models/clf/predict", json=SIMPLE,
                           headers={"authorization": f"Bearer {churn_token}"}).status_code == 403
        assert client.get("/admin/secret-path").status_code == 401
    after = series(server)
    assert after - before == Counter({("/metrics", "", "", "200"): 1, ("model_info", "", "", "401"): 1,
                                      ("predict", "", "", "403"): 1, ("not_found", "", "", "401"): 1})
