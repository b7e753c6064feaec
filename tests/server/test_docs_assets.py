"""The docs' page and assets (server/docs.py): only the listed files are served, whatever name a client asks for,
and without a suitable Swagger UI package the page says how to enable it."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.server import docs

LISTED = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "shipml-docs.js"}


@pytest.fixture
def fresh() -> Iterator[None]:
    """The package lookup and the file cache start empty, and are emptied again afterwards."""
    docs._bundle.cache_clear()
    docs._vendor_file.cache_clear()
    yield
    docs._bundle.cache_clear()
    docs._vendor_file.cache_clear()


def test_the_installed_package_serves_swagger_ui_5(fresh: None) -> None:
    html = docs.page().decode()
    assert "http" not in html.lower()
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        if ref.startswith("docs/assets/"):
            found = docs.asset(ref.removeprefix("docs/assets/"))
            assert found is not None and found.body, ref
    bundle = docs.asset("swagger-ui-bundle.js")
    assert bundle is not None and bundle.content_type.startswith("text/javascript") and len(bundle.body) > 100_000


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=40), st.sampled_from(sorted(LISTED)),
                      st.sampled_from(["../shipml.json", "..", ".", "index.html", "swagger-ui.css.map",
                                       "swagger-initializer.js", "SWAGGER-UI.CSS", "swagger-ui.css/"])))
def test_only_listed_assets_are_served(name: str) -> None:
    found = docs.asset(name)
    assert (found is not None) == (name in LISTED), name
    assert docs._vendor_file.cache_info().currsize <= 3  # a client's random names are never kept


def test_without_the_package_the_page_says_how_to_enable_it(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "swagger_ui_bundle", None)  # the import fails, as when it is not installed
    html = docs.page().decode()
    assert "pip install 'shipml[docs]'" in html and "swagger-ui-bundle-v2 is missing" in html
    assert 'href="openapi.json"' in html and "http" not in html.lower()
    assert docs.asset("swagger-ui-bundle.js") is None and docs.asset("shipml-docs.js") is not None


def test_an_older_swagger_ui_is_refused(fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """swagger-ui-bundle (v1, Swagger UI 4) installs the same module, but cannot render OpenAPI 3.1."""
    package = tmp_path / "swagger_ui_bundle"
    vendor = package / "vendor" / "swagger-ui-4.15.5"
    vendor.mkdir(parents=True)
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"):
        (vendor / name).write_text("old")
    (package / "__init__.py").write_text(
        "from pathlib import Path\nswagger_ui_path = Path(__file__).parent / 'vendor' / 'swagger-ui-4.15.5'\n")
    monkeypatch.delitem(sys.modules, "swagger_ui_bundle", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    html = docs.page().decode()
    assert "cannot render OpenAPI 3.1" in html and "pip install 'shipml[docs]'" in html
    assert docs.asset("swagger-ui.css") is None
