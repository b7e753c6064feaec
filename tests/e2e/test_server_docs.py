"""/docs of a real server works offline: the page references same-origin URLs only, every asset it references is
served with its content type, and headless Chromium - every request off the server refused - renders the
operations. With auth on, the docs need a token of any scope (a browser gives it as the Basic password) unless
the spec opens them."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipml.server.auth import TokenStore
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
ENDPOINTS = [{"name": "clf", "models": ["clf:1.1.0"]}, {"name": "churn", "models": ["churn"]}]


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(served_registry: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("docs"), http=request.param, endpoints=ENDPOINTS)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = TokenStore(tmp_path_factory.mktemp("docs-tokens") / "tokens.json")
    return {"store": str(store.path), "churn": store.create("predict", model="churn")[0],
            "admin": store.create("admin")[0]}


@pytest.fixture(scope="module")
def auth_server(served_registry: Path, tokens: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start(served_registry, tmp_path_factory.mktemp("docs-auth"), endpoints=ENDPOINTS,
              auth={"enabled": True, "tokens_file": tokens["store"]})
    yield s
    assert s.stop() == 0


def references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def basic(token: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"me:{token}".encode()).decode()}


def check_docs(server: Server, headers: dict[str, str] | None = None) -> None:
    page = httpx.get(server.url + "/docs", headers=headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    refs = references(page.text)
    assert refs and "http" not in page.text.lower()
    scripts = [r for r in refs if r.endswith(".js")]
    assert {"docs/assets/swagger-ui-bundle.js", "docs/assets/shipml-docs.js"} <= set(scripts)
    for ref in refs:
        url = page.url.join(ref)
        assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", server.port), ref
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200, ref
        suffix = Path(url.path).suffix
        if suffix in CONTENT_TYPES:
            assert answer.headers["content-type"].startswith(CONTENT_TYPES[suffix]), ref
            assert answer.headers["x-content-type-options"] == "nosniff"
    start_script = httpx.get(page.url.join("docs/assets/shipml-docs.js"), headers=headers).text
    assert '"openapi.json"' in start_script and "validatorUrl: null" in start_script


def test_docs_reference_only_their_own_assets(server: Server) -> None:
    check_docs(server)
    assert httpx.get(server.url + "/docs/assets/swagger-ui-bundle.js.map").status_code == 404
    assert httpx.get(server.url + "/docs/assets/..%2F..%2Fshipml.json").status_code == 404
    assert httpx.get(server.url + "/docs/assets/").status_code == 404


def test_docs_need_a_token_of_any_scope(auth_server: Server, tokens: dict[str, str]) -> None:
    for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css", "/docs/assets/shipml-docs.js"):
        refused = httpx.get(auth_server.url + path)
        assert refused.status_code == 401, path
        assert 'Basic realm="shipml"' in refused.headers["www-authenticate"]
        restricted = {"authorization": f"Bearer {tokens['churn']}"}
        assert httpx.get(auth_server.url + path, headers=restricted).status_code == 200, path
    check_docs(auth_server, basic(tokens["churn"]))
    assert httpx.post(auth_server.url + "/models/churn/predict", json={"instances": []},
                      headers=basic(tokens["admin"])).status_code == 401  # Basic: the docs only


def test_the_spec_may_open_the_docs(served_registry: Path, tokens: dict[str, str], tmp_path: Path) -> None:
    s = start(served_registry, tmp_path, endpoints=ENDPOINTS,
              auth={"enabled": True, "tokens_file": tokens["store"], "open_docs": True})
    try:
        check_docs(s)
        assert httpx.get(s.url + "/openapi.json").status_code == 200
        assert httpx.get(s.url + "/models").status_code == 401
    finally:
        assert s.stop() == 0


# -- in a browser ----------------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render(server: Server, credentials: dict[str, str] | None = None) -> tuple[str, list[str], list[str]]:
    """The text Swagger UI rendered for /docs, the requests refused for leaving the server, and console errors."""
    if not os.path.exists(CHROMIUM) or not _playwright_available():
        if os.environ.get("CI"):
            pytest.fail("chromium and playwright are needed here: .ci/run installs them")
        pytest.skip("needs Debian's chromium and the playwright package")
    from playwright.sync_api import Route, sync_playwright

    refused: list[str] = []
    errors: list[str] = []
    origin = f"http://127.0.0.1:{server.port}/"

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            options: dict[str, Any] = {"http_credentials": credentials} if credentials else {}
            context = browser.new_context(**options)
            context.route("**/*", only_the_server)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(origin + "docs")
            page.wait_for_selector(".opblock-summary-path", timeout=60_000)  # liveness, not speed
            text = page.inner_text("#swagger-ui")
        finally:
            browser.close()
    return text, refused, errors


def _playwright_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


def test_swagger_ui_renders_the_operations_offline(server: Server) -> None:
    text, refused, errors = render(server)
    for path in ("/models/clf/predict", "/models/churn/predict", "/v2/models/churn/infer", "/healthz"):
        assert path in text, path
    assert refused == [] and errors == []


def test_a_browser_gets_in_with_the_token_as_password(auth_server: Server, tokens: dict[str, str]) -> None:
    text, refused, errors = render(auth_server, {"username": "", "password": tokens["churn"]})
    assert "/models/churn/predict" in text and "Authorize" in text
    assert refused == [] and errors == []
