"""API tokens: the hashed store, the route policy, and the ASGI middleware driven through httpx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import stat
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shipml.errors import InvalidNameError, NotFoundError, ShipmlError
from shipml.server.auth import (
    Access,
    AuthMiddleware,
    Level,
    TokenStore,
    default_token_path,
    parse_duration,
    required_access,
)

Message = MutableMapping[str, Any]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "registry" / "tokens.json"


@pytest.fixture
def store(path: Path) -> TokenStore:
    """Re-checks the file on every call (the server's once-a-second check is tested on its own)."""
    return TokenStore(path, check_interval=0.0)


# -- store ------------------------------------------------------------------------------------------------
def test_token_format_and_only_the_hash_on_disk(store: TokenStore, path: Path) -> None:
    token, info = store.create("predict", model="churn", description="ci job")
    prefix, token_id, secret = token.split("_", 2)
    assert (prefix, token_id) == ("shipml", info.id)
    assert len(secret) >= 40 and secret.isalnum()
    text = path.read_text()
    assert secret not in text and token not in text
    assert "sha256:" + hashlib.sha256(token.encode()).hexdigest() in text
    assert info.id in text and "ci job" in text


def test_file_is_private(store: TokenStore, path: Path) -> None:
    store.create("admin")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _, info = store.create("predict")
    store.revoke(info.id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_verify(store: TokenStore) -> None:
    token, info = store.create("predict", model="churn")
    assert store.verify(token) == info
    _, other = store.create("predict")
    wrong_secret = f"shipml_{info.id}_{'A' * 43}"
    for bad in [wrong_secret, f"shipml_{'0' * 12}_{'A' * 43}", token + "x", token[:-1], "", "Bearer " + token,
                token.upper(), f"shipml_{other.id}_{token.split('_', 2)[2]}"]:
        assert store.verify(bad) is None, bad


def test_fresh_store_instance_verifies(store: TokenStore, path: Path) -> None:
    token, info = store.create("admin", description="ops")
    again = TokenStore(path).verify(token)
    assert again is not None
    assert (again.id, again.scope, again.description, again.created_at) == (
        info.id, "admin", "ops", info.created_at)


def test_revoke(store: TokenStore, path: Path) -> None:
    token, info = store.create("predict")
    keep, kept = store.create("predict")
    revoked = TokenStore(path).revoke(info.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert store.verify(token) is None
    assert store.verify(keep) is not None
    assert store.find(token) == revoked  # still known, so the server can say "revoked"
    assert {i.id: i.status() for i in store.list()} == {info.id: "revoked", kept.id: "active"}
    assert store.revoke(info.id) == revoked  # twice is harmless
    with pytest.raises(NotFoundError):
        store.revoke("0123456789ab")


def test_expiry(store: TokenStore) -> None:
    token, info = store.create("predict", expires_in="30d")
    assert info.expires_at is not None
    assert info.expires_at - info.created_at == timedelta(days=30)
    assert store.verify(token, now=info.expires_at - timedelta(seconds=1)) == info
    assert store.verify(token, now=info.expires_at) is None
    assert info.status(info.expires_at) == "expired"
    forever, _ = store.create("predict")
    assert store.verify(forever, now=info.created_at + timedelta(days=3650)) is not None


def test_create_refuses_bad_arguments(store: TokenStore, path: Path) -> None:
    with pytest.raises(ValueError, match="admin token"):
        store.create("admin", model="churn")
    with pytest.raises(ValueError, match="scope"):
        store.create("root")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        store.create("predict", model="../etc")
    with pytest.raises(ValueError, match="duration"):
        store.create("predict", expires_in="soon")
    with pytest.raises(ValueError, match="longer than zero"):
        store.create("predict", expires_in=timedelta(0))
    assert not path.exists()


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400),
    ("1d12h", 36 * 3600), (" 7D ", 7 * 86400),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "0d", "1.5h", "1y", "30 d", "1e3s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_missing_file_means_no_tokens(store: TokenStore) -> None:
    assert store.list() == []
    assert store.verify(f"shipml_{'0' * 12}_{'A' * 43}") is None


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"format": 2, "tokens": {}}',
                                     b'{"format": 1, "tokens": {"abc": {"scope": "root"}}}',
                                     b'{"format": 1, "tokens": {"abc": {"scope": "predict", "hash": "sha256:\xc3\xa9",'
                                     b' "created_at": "2026-01-01T00:00:00Z"}}}'])
def test_unreadable_file_is_an_error(store: TokenStore, path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ShipmlError, match="not valid"):
        store.list()
    with pytest.raises(ShipmlError):
        store.create("predict")
    assert path.read_bytes() == content  # never overwritten


def test_default_location_follows_shipml_home(tmp_path: Path) -> None:
    assert default_token_path() == tmp_path / "home-registry" / "tokens.json"  # conftest sets SHIPML_HOME
    assert TokenStore().path == tmp_path / "home-registry" / "tokens.json"


def test_concurrent_creates_from_two_processes_are_all_kept(path: Path) -> None:
    go = path.parent / "go"
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from shipml.server.auth import TokenStore
        store = TokenStore(sys.argv[1])
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        for i in range(int(sys.argv[3])):
            store.create("predict", description=f"{sys.argv[4]}-{i}")
    """)
    path.parent.mkdir(parents=True)
    n = 15
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(go), str(n), who],
                              stdout=subprocess.PIPE, text=True) for who in ("a", "b")]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
    descriptions = sorted(info.description or "" for info in TokenStore(path).list())
    assert descriptions == sorted(f"{who}-{i}" for who in ("a", "b") for i in range(n))


# -- policy -----------------------------------------------------------------------------------------------
OPEN, METRICS, DOCS, PREDICT, ADMIN = Level.OPEN, Level.METRICS, Level.DOCS, Level.PREDICT, Level.ADMIN

ROUTES: list[tuple[str, str, Access]] = [
    ("GET", "/healthz", Access(OPEN)),
    ("GET", "/readyz", Access(OPEN)),
    ("GET", "/v2/health/live", Access(OPEN)),
    ("GET", "/v2/health/ready", Access(OPEN)),
    ("GET", "/docs", Access(DOCS)),
    ("GET", "/openapi.json", Access(DOCS)),
    ("GET", "/docs/assets/swagger-ui-bundle.js", Access(DOCS)),
    ("GET", "/metrics", Access(METRICS)),
    ("POST", "/predict", Access(PREDICT, default_model=True)),
    ("POST", "/models/churn/predict", Access(PREDICT, "churn")),
    ("POST", "/models/churn@production/predict", Access(PREDICT, "churn")),
    ("POST", "/models/churn/versions/1.2.0/predict", Access(PREDICT, "churn")),
    ("POST", "/v1/models/churn:predict", Access(PREDICT, "churn")),
    ("POST", "/v2/models/churn/infer", Access(PREDICT, "churn")),
    ("POST", "/v2/models/churn/versions/1.2.0/infer", Access(PREDICT, "churn")),
    ("GET", "/v1/models/churn", Access(PREDICT, "churn")),
    ("GET", "/v2", Access(PREDICT)),
    ("GET", "/v2/models/churn", Access(PREDICT, "churn")),
    ("GET", "/v2/models/churn/ready", Access(PREDICT, "churn")),
    ("GET", "/v2/models/churn/versions/1.2.0", Access(PREDICT, "churn")),
    ("GET", "/v2/models/churn/versions/1.2.0/ready", Access(PREDICT, "churn")),
    ("GET", "/models", Access(PREDICT)),
    ("GET", "/models/churn", Access(PREDICT, "churn")),
    ("POST", "/v2/repository/index", Access(PREDICT)),
    ("GET", "/admin/releases", Access(ADMIN)),
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.parametrize(("method", "route", "expected"), ROUTES)
def test_policy_for_listed_routes(method: str, route: str, expected: Access) -> None:
    assert required_access(method, route) == expected
    assert required_access(method.lower(), route) == expected
    if method == "GET":
        assert required_access("HEAD", route) == expected


@pytest.mark.parametrize(("method", "route"), [
    (other, route) for method, route, _ in ROUTES for other in METHODS
    if other != method and not (method == "GET" and other == "HEAD")
])
def test_other_methods_on_listed_routes_need_admin(method: str, route: str) -> None:
    assert required_access(method, route) == Access(ADMIN)


@pytest.mark.parametrize("route", [
    "/", "", "/admin/reload", "/models/churn/aliases/production", "/healthz/", "/HEALTHZ",
    "//healthz", "/healthz/../models/churn/predict", "/metrics/", "/predict/", "/models/churn/predict/x",
    "/models//predict", "/models/a/b/predict", "/models/churn/versions/predict", "/v2/models/churn/load",
    "/v2/models/a/b/infer", "/v2/models/churn/versions/1.0.0/infer/x",
    "/v1/models/churn/x", "/v1/models", "/v2/", "/models/",
    "/v1/models/churn:1.2.0:predict",  # the server routes no such path: KServe v1 names no version
])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_paths_need_admin(method: str, route: str) -> None:
    assert required_access(method, route) == Access(ADMIN)


# -- middleware -------------------------------------------------------------------------------------------
async def echo_app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
                   send: Callable[[Message], Awaitable[None]]) -> None:
    """A real ASGI app that reports what reached it."""
    if scope["type"] != "http":
        scope.setdefault("seen_by_app", True)
        return
    body = orjson.dumps({
        "path": scope["path"],
        "token_id": scope.get("shipml.token_id"),
        "token_scope": scope.get("shipml.token_scope"),
        "token_model": scope.get("shipml.token_model"),
        "saw_authorization": any(k.lower() == b"authorization" for k, _ in scope["headers"]),
    })
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def request(app: Any, method: str, route: str, token: str | None = None,
            headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    return asyncio.run(requests(app, [(method, route, token)], headers))[0]


async def requests(app: Any, calls: list[tuple[str, str, str | None]],
                   headers: list[tuple[str, str]] | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        out = []
        for method, route, token in calls:
            hdrs = list(headers or []) + ([("Authorization", f"Bearer {token}")] if token else [])
            out.append(await client.request(method, route, headers=hdrs))
        return out


@pytest.fixture
def tokens(store: TokenStore) -> dict[str, str]:
    return {
        "admin": store.create("admin")[0],
        "predict": store.create("predict")[0],
        "churn": store.create("predict", model="churn")[0],
    }


def assert_denied(response: httpx.Response, status: int, error: str, secret: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert error in response.json()["error"]
    if secret:
        assert secret not in response.text and secret.split("_")[-1] not in response.text
        assert secret not in str(response.headers)


def test_no_token_is_401(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    response = request(app, "POST", "/models/churn/predict")
    assert_denied(response, 401, "missing bearer token")
    assert response.headers["www-authenticate"] == 'Bearer realm="shipml"'


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "Bearer:abc"])
def test_malformed_header_is_401(store: TokenStore, header: str) -> None:
    app = AuthMiddleware(echo_app, store)
    response = request(app, "POST", "/predict", headers=[("Authorization", header)])
    assert_denied(response, 401, "malformed Authorization header")


def test_bad_token_is_401_and_never_echoed(store: TokenStore, tokens: dict[str, str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    app = AuthMiddleware(echo_app, store)
    token_id = tokens["predict"].split("_")[1]
    caplog.set_level(logging.DEBUG)
    for bad in ["nonsense", f"shipml_{token_id}_{'A' * 43}", tokens["predict"] + "x"]:
        response = request(app, "POST", "/models/churn/predict", bad)
        assert_denied(response, 401, "invalid token", bad)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert bad not in caplog.text
    assert "denied POST /models/churn/predict: 401 invalid token" in caplog.text


def test_two_authorization_headers_are_401(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    response = request(app, "POST", "/predict", headers=[("Authorization", f"Bearer {tokens['admin']}"),
                                                         ("Authorization", f"Bearer {tokens['admin']}")])
    assert_denied(response, 401, "malformed", tokens["admin"])


def test_wrong_scope_is_403(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    for method, route in [("DELETE", "/models/churn"), ("POST", "/admin/reload"), ("GET", "/nowhere"),
                          ("GET", "/admin/releases")]:
        response = request(app, method, route, tokens["predict"])
        assert_denied(response, 403, "needs 'admin'", tokens["predict"])
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_other_model_is_403(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    for method, route in [("POST", "/models/fraud/predict"), ("POST", "/v2/models/fraud/infer"),
                          ("POST", "/v1/models/fraud:predict"), ("GET", "/v2/models/fraud/ready"),
                          ("POST", "/v2/models/fraud/versions/1.0.0/infer"), ("POST", "/predict")]:
        response = request(app, method, route, tokens["churn"])
        assert_denied(response, 403, "restricted to model 'churn'", tokens["churn"])


def test_right_token_passes(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    churn_id = tokens["churn"].split("_")[1]
    for route in ["/models/churn/predict", "/v2/models/churn/infer", "/v1/models/churn:predict",
                  "/models/churn@production/predict", "/v2/models/churn/versions/1.0.0/infer"]:
        response = request(app, "POST", route, tokens["churn"])
        assert response.status_code == 200, route
        assert response.json() == {"path": route, "token_id": churn_id, "token_scope": "predict",
                                   "token_model": "churn", "saw_authorization": False}
    for method, route in [("GET", "/v2"), ("GET", "/models"), ("GET", "/v2/models/churn")]:
        assert request(app, method, route, tokens["churn"]).status_code == 200
    for route in ["/predict", "/models/fraud/predict", "/v2/models/fraud/infer"]:
        assert request(app, "POST", route, tokens["predict"]).status_code == 200
        assert request(app, "POST", route, tokens["admin"]).status_code == 200
    for method, route in [("DELETE", "/models/churn"), ("POST", "/admin/reload"), ("GET", "/nowhere"),
                          ("GET", "/admin/releases")]:
        response = request(app, method, route, tokens["admin"])
        assert response.status_code == 200  # unknown paths reach the app, which 404s them
        assert response.json()["token_scope"] == "admin"


def test_outer_middleware_sees_who_was_refused(store: TokenStore, tokens: dict[str, str]) -> None:
    seen: list[tuple[int, str | None]] = []
    inner = AuthMiddleware(echo_app, store)

    async def access_log(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
                         send: Callable[[Message], Awaitable[None]]) -> None:
        status = []

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await inner(scope, receive, record)
        seen.append((status[0], scope.get("shipml.token_id")))

    request(access_log, "DELETE", "/models/churn", tokens["predict"])
    request(access_log, "DELETE", "/models/churn", "nonsense")
    assert seen == [(403, tokens["predict"].split("_")[1]), (401, None)]


def test_scheme_is_case_insensitive(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    response = request(app, "POST", "/predict", headers=[("Authorization", f"bearer  {tokens['predict']}")])
    assert response.status_code == 200


def test_default_model_route_for_a_restricted_token(store: TokenStore, tokens: dict[str, str]) -> None:
    ok = AuthMiddleware(echo_app, store, default_model="churn")
    assert request(ok, "POST", "/predict", tokens["churn"]).status_code == 200
    other = AuthMiddleware(echo_app, store, default_model="fraud")
    assert_denied(request(other, "POST", "/predict", tokens["churn"]), 403, "restricted to model 'churn'")
    unknown = AuthMiddleware(echo_app, store)
    assert_denied(request(unknown, "POST", "/predict", tokens["churn"]), 403, "name the model in the path")


def test_health_is_open(store: TokenStore) -> None:
    app = AuthMiddleware(echo_app, store)
    for route in ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]:
        response = request(app, "GET", route)
        assert response.status_code == 200, route
        assert response.json()["token_id"] is None
        assert request(app, "HEAD", route).status_code == 200


DOCS_ROUTES = ["/docs", "/openapi.json", "/docs/assets/swagger-ui.css"]


def basic(token: str, user: str = "") -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode())


def test_docs_need_any_valid_token(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    for route in DOCS_ROUTES:
        assert_denied(request(app, "GET", route), 401, "missing bearer token")
        for who in ("admin", "predict", "churn"):  # any scope, a token restricted to one model too
            assert request(app, "GET", route, tokens[who]).json()["token_id"] is not None, (route, who)
            assert request(app, "HEAD", route, tokens[who]).status_code == 200
        assert_denied(request(app, "GET", route, f"shipml_{'0' * 12}_{'A' * 43}"), 401, "invalid token")


def test_a_browser_gets_in_to_the_docs_with_basic_credentials(store: TokenStore, tokens: dict[str, str]) -> None:
    """A browser cannot send a bearer token when it opens /docs: the 401 also offers Basic, whose password is the
    token (any user name). Only for the docs: elsewhere a browser would send it unasked (cross-site requests)."""
    app = AuthMiddleware(echo_app, store)
    challenge = request(app, "GET", "/docs").headers["www-authenticate"]
    assert challenge == 'Bearer realm="shipml", Basic realm="shipml", charset="UTF-8"'
    for route in DOCS_ROUTES:
        for user in ("", "me"):
            answer = request(app, "GET", route, headers=[basic(tokens["churn"], user)])
            assert answer.status_code == 200 and not answer.json()["saw_authorization"], route
        assert_denied(request(app, "GET", route, headers=[basic("wrong")]), 401, "invalid token")
        assert_denied(request(app, "GET", route, headers=[("Authorization", "Basic !!")]), 401, "malformed")
    for method, route in [("POST", "/models/churn/predict"), ("GET", "/models"), ("GET", "/metrics/x")]:
        answer = request(app, method, route, headers=[basic(tokens["admin"])])
        assert_denied(answer, 401, "malformed Authorization header")
        assert "Basic" not in answer.headers["www-authenticate"]


def test_docs_open_by_flag(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store, open_docs=True)
    for route in DOCS_ROUTES:
        assert request(app, "GET", route).status_code == 200
    assert_denied(request(app, "GET", "/models"), 401, "missing bearer token")


def test_metrics_open_or_admin_by_flag(store: TokenStore, tokens: dict[str, str]) -> None:
    open_metrics = AuthMiddleware(echo_app, store)
    assert request(open_metrics, "GET", "/metrics").status_code == 200
    guarded = AuthMiddleware(echo_app, store, metrics_auth=True)
    assert_denied(request(guarded, "GET", "/metrics"), 401, "missing bearer token")
    assert_denied(request(guarded, "GET", "/metrics", tokens["predict"]), 403, "needs 'admin'")
    assert request(guarded, "GET", "/metrics", tokens["admin"]).status_code == 200


def test_revocation_reaches_a_running_middleware(path: Path) -> None:
    now = [100.0]
    server_store = TokenStore(path, clock=lambda: now[0])  # what the server holds, checked once a second
    cli_store = TokenStore(path)  # what `shipml token` uses, in another process in real life
    token, info = cli_store.create("predict")
    app = AuthMiddleware(echo_app, server_store)

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            auth = {"Authorization": f"Bearer {token}"}
            codes = [(await client.post("/predict", headers=auth)).status_code]
            cli_store.revoke(info.id)
            codes.append((await client.post("/predict", headers=auth)).status_code)  # same second: cached
            now[0] += 1.0
            response = await client.post("/predict", headers=auth)
            assert response.json() == {"error": "token revoked"}
            codes.append(response.status_code)
            later, _ = cli_store.create("predict")
            now[0] += 1.0
            codes.append((await client.post("/predict", headers={"Authorization": f"Bearer {later}"}))
                         .status_code)
            return codes

    assert asyncio.run(scenario()) == [200, 200, 401, 200]


def test_expired_token_is_401(store: TokenStore, path: Path) -> None:
    token, info = store.create("predict", expires_in="1d")
    data = orjson.loads(path.read_bytes())
    data["tokens"][info.id]["expires_at"] = "2000-01-01T00:00:00.000Z"
    path.write_bytes(orjson.dumps(data))
    app = AuthMiddleware(echo_app, TokenStore(path))
    assert_denied(request(app, "POST", "/predict", token), 401, "token expired", token)


def test_broken_store_is_500_without_details(store: TokenStore, path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("{ broken")
    app = AuthMiddleware(echo_app, store)
    response = request(app, "POST", "/predict", f"shipml_{'0' * 12}_{'A' * 43}")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert request(app, "GET", "/healthz").status_code == 200


def test_disabled_passes_everything() -> None:
    app = AuthMiddleware(echo_app, None, enabled=False)
    for method, route in [("POST", "/predict"), ("DELETE", "/models/churn"), ("GET", "/metrics")]:
        response = request(app, method, route)
        assert response.status_code == 200
        assert response.json()["token_id"] is None
    with pytest.raises(ValueError, match="no token store"):
        AuthMiddleware(echo_app, None)


def call_directly(app: AuthMiddleware, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_lifespan_passes_through_untouched(store: TokenStore) -> None:
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert call_directly(AuthMiddleware(echo_app, store, metrics_auth=True), scope) == []
    assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}, "seen_by_app": True}


def test_websocket_needs_a_token(store: TokenStore, tokens: dict[str, str]) -> None:
    app = AuthMiddleware(echo_app, store)
    denied: dict[str, Any] = {"type": "websocket", "path": "/v2/models/churn/stream", "headers": []}
    sent = call_directly(app, denied)
    assert [(m["type"], m["code"]) for m in sent] == [("websocket.close", 1008)]
    assert "seen_by_app" not in denied
    allowed: dict[str, Any] = {"type": "websocket", "path": "/v2/models/churn/stream",
                               "headers": [(b"authorization", f"Bearer {tokens['admin']}".encode())]}
    assert call_directly(app, allowed) == []
    assert allowed["seen_by_app"] and allowed["headers"] == []


def test_root_path_is_stripped_before_the_policy(store: TokenStore) -> None:
    app = AuthMiddleware(echo_app, store)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    base = {"type": "http", "method": "GET", "headers": [], "root_path": "/api"}
    asyncio.run(app({**base, "path": "/api/healthz"}, receive, send))
    assert sent[0]["status"] == 200
    sent.clear()
    asyncio.run(app({**base, "path": "/apix/healthz"}, receive, send))
    assert sent[0]["status"] == 401
