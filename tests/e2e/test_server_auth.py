"""Auth on a real server (on each HTTP backend): every route x method, without a token, with each scope, with a
token for another model, and with broken tokens. Health stays open; the docs need any valid token (as a bearer
token, or as the password of Basic credentials from a browser) unless the spec opens them; metrics are open or
admin-only as configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipml.server.auth import TokenStore
from tests.e2e.conftest import numeric_data
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

ROW = numeric_data().iloc[0].to_dict()
SIMPLE = {"instances": [ROW]}
V1 = {"instances": [list(ROW.values())]}
V2 = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]}

OPEN = "open"
SERVER = "server"  # any valid token
CLF = "clf"  # a predict token for clf (or for any model), or admin
# (method, path, body, access, status when allowed)
ROUTES: list[tuple[str, str, Any, str, int]] = [
    ("GET", "/healthz", None, OPEN, 200),
    ("GET", "/readyz", None, OPEN, 200),
    ("GET", "/v2/health/live", None, OPEN, 200),
    ("GET", "/v2/health/ready", None, OPEN, 200),
    ("GET", "/openapi.json", None, SERVER, 200),
    ("GET", "/docs", None, SERVER, 200),
    ("GET", "/docs/assets/swagger-ui.css", None, SERVER, 200),
    ("GET", "/metrics", None, OPEN, 200),
    ("GET", "/models", None, SERVER, 200),
    ("GET", "/v2", None, SERVER, 200),
    ("POST", "/v2/repository/index", {}, SERVER, 200),
    ("GET", "/models/clf", None, CLF, 200),
    ("GET", "/v1/models/clf", None, CLF, 200),
    ("GET", "/v2/models/clf", None, CLF, 200),
    ("GET", "/v2/models/clf/ready", None, CLF, 200),
    ("GET", "/v2/models/clf/versions/1.1.0", None, CLF, 200),
    ("GET", "/v2/models/clf/versions/1.1.0/ready", None, CLF, 200),
    ("POST", "/models/clf/predict", SIMPLE, CLF, 200),
    ("POST", "/models/clf/versions/1.1.0/predict", SIMPLE, CLF, 200),
    ("POST", "/v1/models/clf:predict", V1, CLF, 200),
    ("POST", "/v2/models/clf/infer", V2, CLF, 200),
    ("POST", "/v2/models/clf/versions/1.1.0/infer", V2, CLF, 200),
    ("POST", "/predict", SIMPLE, CLF, 404),  # two models are served: /predict names none of them
]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


@pytest.fixture(scope="module")
def tokens(served_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    made = {"admin": store.create("admin")[0], "predict": store.create("predict")[0],
            "clf_only": store.create("predict", model="clf")[0],
            "churn_only": store.create("predict", model="churn")[0]}
    revoked, info = store.create("admin")
    store.revoke(info.id)
    made["revoked"] = revoked
    made["store"] = str(store.path)
    return made


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(served_registry: Path, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("auth"), http=request.param,
              endpoints=[{"name": "clf", "models": ["clf:1.1.0"]}, {"name": "churn", "models": ["churn"]}],
              auth={"enabled": True, "tokens_file": tokens["store"]})
    yield s
    assert s.stop() == 0


def call(server: Server, method: str, path: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, server.url + path, json=body, headers=headers)


def expected(access: str, who: str | None, allowed_status: int) -> int:
    if access == OPEN:
        return allowed_status
    if who is None:
        return 401
    if access == CLF and who == "churn_only":
        return 403
    return allowed_status


@pytest.mark.parametrize(("method", "path", "body", "access", "status"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_each_route_needs_what_it_should(server: Server, tokens: dict[str, str], method: str, path: str,
                                         body: Any, access: str, status: int) -> None:
    for who in (None, "admin", "predict", "clf_only", "churn_only"):
        token = tokens[who] if who else None
        want = expected(access, who, status)
        if path == "/predict" and who in ("clf_only", "churn_only"):
            want = 403  # a restricted token must name its model in the path
        answer = call(server, method, path, body, token)
        assert answer.status_code == want, (who, answer.text)
        if want == 401:
            assert answer.headers["www-authenticate"].startswith("Bearer")
        for t in tokens.values():
            assert t not in answer.text


@pytest.mark.parametrize("path", sorted({p for _, p, *_ in ROUTES}))
def test_other_methods_are_refused(server: Server, tokens: dict[str, str], path: str) -> None:
    defined = {m for m, p, *_ in ROUTES if p == path}
    for method in METHODS:
        if method in defined:
            continue
        assert call(server, method, path, None, None).status_code == 401
        assert call(server, method, path, None, tokens["predict"]).status_code == 403
        admin = call(server, method, path, None, tokens["admin"])
        assert admin.status_code == 405, (method, admin.text)
        assert set(admin.headers["allow"].split(", ")) == defined


def test_broken_tokens_are_refused(server: Server, tokens: dict[str, str]) -> None:
    for header in ("Bearer nope", f"Bearer {tokens['revoked']}", f"Basic {tokens['admin']}", "Bearer"):
        answer = httpx.post(server.url + "/models/clf/predict", json=SIMPLE, headers={"authorization": header})
        assert answer.status_code == 401, header
        assert tokens["revoked"] not in answer.text and tokens["admin"] not in answer.text


def test_metrics_can_require_admin(served_registry: Path, tokens: dict[str, str], tmp_path: Path) -> None:
    server = start(served_registry, tmp_path, endpoints=[{"name": "clf", "models": ["clf"]}],
                   auth={"enabled": True, "tokens_file": tokens["store"], "metrics_auth": True})
    try:
        assert call(server, "GET", "/metrics", None, None).status_code == 401
        assert call(server, "GET", "/metrics", None, tokens["predict"]).status_code == 403
        assert call(server, "GET", "/metrics", None, tokens["admin"]).status_code == 200
        assert call(server, "GET", "/healthz", None, None).status_code == 200
        assert call(server, "POST", "/predict", SIMPLE, tokens["clf_only"]).status_code == 200  # the only model
    finally:
        assert server.stop() == 0
