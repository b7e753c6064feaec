"""No response of a real server ever holds a filesystem path of the server, whatever failed.

The registry lives in a directory whose name is unique to this test; real servers (on each HTTP backend) serve
endpoints in every failure state a model can be in - no such model, alias or version, a corrupted artefact, a
broken manifest, a golden check that fails, a runtime that raises while loading (with a path in its message), a
package directory that is not there - and with auth on, with a token file that is missing or broken. Every route,
then hypothesis-chosen methods, paths and bodies, are sent to each; no body or header may hold the registry's
path or the unique parts of its name. What clients see is a public message per failure; the log has it all.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from tests.e2e.conftest import numeric_data
from tests.e2e.server_process import Server, free_port
from tests.unit.registry_support import reseal

pytestmark = pytest.mark.slow

DRIFT_VARIABLE = "SHIPML_EXPOSURE_TEST_DRIFT"
MODULE_SOURCE = f'''
import os
from pathlib import Path

import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel


class Drifty(PythonModel):
    """Predicts x0, shifted when {DRIFT_VARIABLE} is set: its golden check fails in a server that has it."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X["x0"].to_numpy(dtype=float) + float(os.environ.get("{DRIFT_VARIABLE}", "0"))


class Fragile(PythonModel):
    """Fails to load where {DRIFT_VARIABLE} is set, with its own path in the message (as frameworks do)."""

    def load(self, artifacts: Path) -> None:
        if os.environ.get("{DRIFT_VARIABLE}"):
            open(artifacts / "weights.bin", "rb").close()

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X["x0"].to_numpy(dtype=float)
'''

ROW = numeric_data(1, 3).iloc[0].to_dict()
SIMPLE = {"instances": [ROW]}
V1 = {"instances": [list(ROW.values())]}
V2 = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]}


@dataclass
class Registry:
    root: Path
    secrets: list[str]  # what must never appear in a response
    endpoints: list[dict[str, Any]]


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    unique = uuid.uuid4().hex
    root = tmp_path_factory.mktemp(f"registry-{unique}")
    X = numeric_data(200, 3)
    y = (X["x0"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=3, verbose=-1).fit(X, y)
    for name in ("good", "corrupt", "broken"):
        shipml.save_model(model, name, sample=X, registry=root)
    artefact = next(p for p in (root / "models/corrupt/versions/1.0.0/model").rglob("*") if p.is_file())
    artefact.write_bytes(artefact.read_bytes() + b"\n")
    (root / "models/broken/versions/1.0.0/shipml.json").write_bytes(b'{"manifest_version": 1, "name": ')
    # resealed past the ledger: the unreadable manifest itself is the fault the server must report
    reseal(shipml.Registry(root), "broken", "1.0.0")
    code = tmp_path_factory.mktemp("exposure_code")
    (code / "exposure_models.py").write_text(MODULE_SOURCE)
    spec = importlib.util.spec_from_file_location("exposure_models", code / "exposure_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["exposure_models"] = module
    spec.loader.exec_module(module)
    shipml.save_model(module.Drifty(), "drifty", sample=X, trusted=True, registry=root)
    shipml.save_model(module.Fragile(), "fragile", sample=X, trusted=True, registry=root)
    endpoints = [
        {"name": "good", "models": ["good"]},
        {"name": "ghost", "models": ["ghost"]},
        {"name": "noalias", "models": ["good@production"]},
        {"name": "noversion", "models": ["good:9.9.9"]},
        {"name": "corrupt", "models": ["corrupt"]},
        {"name": "broken", "models": ["broken"]},
        {"name": "drifty", "models": ["drifty"]},
        {"name": "fragile", "models": ["fragile"]},
        {"name": "elsewhere", "models": [str(root / f"package-{unique}")]},
        {"name": "mixed", "models": ["good", "ghost"]},
    ]
    base = str(tmp_path_factory.getbasetemp())
    return Registry(root, [str(root), root.name, unique, base], endpoints)


def start_unready(registry: Registry, directory: Path, http: str | None = None, **sections: Any) -> Server:
    """A server that does not wait for readiness (it never comes): it waits until every model is loaded or
    failed. Its stderr (the operator's log) goes to ``directory/server.log``."""
    port = free_port()
    spec: dict[str, Any] = {"registry": str(registry.root), "endpoints": registry.endpoints,
                            "server": {"host": "127.0.0.1", "port": port, "drain_delay_s": 0.2,
                                       "graceful_timeout_s": 10, **({"http": http} if http else {})},
                            **sections}
    path = directory / f"spec-{port}.yaml"
    path.write_text(yaml.safe_dump(spec))
    log = (directory / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "shipml.cli", "serve", "--spec", str(path)],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, DRIFT_VARIABLE: "1"})
    log.close()
    server = Server(proc, port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (directory / "server.log").read_text()
        try:
            if httpx.get(server.url + "/readyz", timeout=1).json()["status"] != "loading":
                return server
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError("the server never finished loading")


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
    server.proc.wait(timeout=30)


def every_route(names: list[str]) -> list[tuple[str, str, Any]]:
    calls: list[tuple[str, str, Any]] = [
        ("GET", p, None) for p in ("/healthz", "/readyz", "/models", "/openapi.json", "/docs", "/metrics", "/v2",
                                   "/v2/health/live", "/v2/health/ready", "/nowhere", "/docs/assets/nothing.js")]
    calls += [("POST", "/predict", SIMPLE), ("POST", "/v2/repository/index", {})]
    for name in names:
        calls += [
            ("GET", f"/models/{name}", None), ("POST", f"/models/{name}/predict", SIMPLE),
            ("POST", f"/models/{name}/versions/1.0.0/predict", SIMPLE), ("POST", f"/v1/models/{name}:predict", V1),
            ("GET", f"/v1/models/{name}", None), ("GET", f"/v2/models/{name}", None),
            ("GET", f"/v2/models/{name}/ready", None), ("GET", f"/v2/models/{name}/versions/1.0.0", None),
            ("POST", f"/v2/models/{name}/infer", V2), ("POST", f"/v2/models/{name}/versions/9.0.0/infer", V2),
            ("DELETE", f"/models/{name}", None),
        ]
    return calls


def assert_private(answer: httpx.Response, secrets: list[str]) -> None:
    """Neither the body nor any header holds a secret (as text, or base64-encoded)."""
    seen = [answer.content.decode("latin-1")]
    seen += [f"{k}: {v}" for k, v in answer.headers.multi_items()]
    encoded = [base64.b64encode(s.encode()).decode() for s in secrets]
    for text in seen:
        for secret in secrets + encoded:
            assert secret not in text, (answer.request.method, answer.request.url, text[:500])
        assert "Traceback" not in text


PATH_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="?#%")
WORDS = ["models", "v1", "v2", "versions", "1.0.0", "9.9.9", "infer", "ready", "predict", ":predict", "health",
         "docs", "assets", "metrics", "openapi.json", "repository", "index", "..", ""]
BODIES = st.one_of(st.none(), st.just(SIMPLE), st.just(V1), st.just(V2), st.binary(max_size=64),
                   st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3))


def random_calls(names: list[str]) -> st.SearchStrategy[list[tuple[str, str, Any]]]:
    suffixes = st.sampled_from(["@production", ":1.0.0", ":predict"])
    segment = st.one_of(st.sampled_from(WORDS + names), st.text(PATH_CHARS, min_size=1, max_size=10),
                        st.builds(lambda n, v: f"{n}{v}", st.sampled_from(names), suffixes))
    path = st.lists(segment, min_size=1, max_size=6).map(lambda s: "/" + "/".join(s))
    method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    return st.lists(st.tuples(method, path, BODIES), min_size=1, max_size=6)


def send(client: httpx.Client, base: str, method: str, path: str, body: Any,
         headers: dict[str, str] | None = None) -> httpx.Response:
    url = httpx.URL(base).copy_with(path=path)
    if isinstance(body, bytes):
        return client.request(method, url, content=body, headers=headers)
    return client.request(method, url, json=body, headers=headers)


# -- auth off: every model failure state -----------------------------------------------------------------------
@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(failing: Registry, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[tuple[Server, Path]]:
    directory = tmp_path_factory.mktemp("exposure")
    s = start_unready(failing, directory, http=request.param)
    yield s, directory / "server.log"
    stop(s)


def names_of(registry: Registry) -> list[str]:
    return [e["name"] for e in registry.endpoints]


def test_every_route_keeps_the_servers_paths_private(server: tuple[Server, Path], failing: Registry) -> None:
    s, _ = server
    with httpx.Client() as client:
        for method, path, body in every_route(names_of(failing)):
            assert_private(send(client, s.url, method, path, body), failing.secrets)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_requests_keep_the_servers_paths_private(server: tuple[Server, Path], failing: Registry,
                                                       data: st.DataObject) -> None:
    s, _ = server
    with httpx.Client() as client:
        for method, path, body in data.draw(random_calls(names_of(failing))):
            assert_private(send(client, s.url, method, path, body), failing.secrets)


PUBLIC_REASONS = {
    "ghost": "model ghost: no model of that name in the registry",
    "noalias": "model good@production: no such alias in the registry",
    "noversion": "model good:9.9.9: no such version in the registry",
    "corrupt": "model corrupt: its files do not match the digests recorded when it was saved (changed or"
               " corrupted since)",
    "broken": "model broken: its manifest cannot be read",
    "drifty": "model drifty: it does not reproduce its golden sample",
    "fragile": "model fragile: its runtime failed to load it (FileNotFoundError)",
    "elsewhere": "model (package directory): no model package there",
}


def test_clients_see_a_public_reason_and_the_log_has_the_details(server: tuple[Server, Path],
                                                                 failing: Registry) -> None:
    s, log = server
    ready = httpx.get(s.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    models = ready.json()["models"]
    assert models["good"] == {"versions": ["1.0.0"], "errors": []}
    for name, reason in PUBLIC_REASONS.items():
        assert models[name]["errors"] == [reason + "; the server log has the details"], name
        answer = httpx.post(f"{s.url}/models/{name}/predict", json=SIMPLE)
        assert answer.status_code == 503 and reason in answer.json()["error"], answer.text
    assert models["mixed"]["versions"] == ["1.0.0"] and models["mixed"]["errors"] == [
        PUBLIC_REASONS["ghost"] + "; the server log has the details"]
    logged = log.read_text()
    assert f"no model named 'ghost' in Registry('{failing.root}')" in logged
    assert f"{failing.root}/models/fragile/versions/1.0.0/model/artifacts/weights.bin" in logged
    assert "Traceback" in logged  # a framework error is logged with its traceback


# -- auth on: a missing or broken token file -------------------------------------------------------------------
@pytest.fixture(scope="module", params=["missing", "broken"])
def auth_server(failing: Registry, tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Iterator[Server]:
    directory = failing.root / f"tokens-{request.param}"
    directory.mkdir()
    tokens = directory / "tokens.json"
    if request.param == "broken":
        tokens.write_text('{"format": 1, "tokens": {"abc": ')
    s = start_unready(failing, tmp_path_factory.mktemp("exposure-auth"),
                      auth={"enabled": True, "tokens_file": str(tokens)})
    yield s
    stop(s)


TOKEN = "shipml_0123456789ab_" + "A" * 43


HEADERS = [None, {"authorization": f"Bearer {TOKEN}"}, {"authorization": "Basic Og=="}]


def test_every_route_with_auth_keeps_the_servers_paths_private(auth_server: Server, failing: Registry) -> None:
    with httpx.Client() as client:
        for method, path, body in every_route(names_of(failing)):
            for headers in HEADERS:
                assert_private(send(client, auth_server.url, method, path, body, headers), failing.secrets)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_requests_with_auth_keep_the_servers_paths_private(auth_server: Server, failing: Registry,
                                                                  data: st.DataObject) -> None:
    with httpx.Client() as client:
        for method, path, body in data.draw(random_calls(names_of(failing))):
            for headers in HEADERS:
                assert_private(send(client, auth_server.url, method, path, body, headers), failing.secrets)
