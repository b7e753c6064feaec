"""``/docs``: Swagger UI over ``/openapi.json``, served from an installed package, so it works offline.

The page references same-origin URLs only - its stylesheet, Swagger UI's script and shipml's few lines that start
it, all under ``/docs/assets/`` - and says so to the browser (Content-Security-Policy ``default-src 'self'``).
Swagger UI 5 (it renders OpenAPI 3.1) comes from the PyPI package ``swagger-ui-bundle-v2`` (``pip install
'shipml[docs]'``, ~3 MB); without it, ``/docs`` is a short page that says how to enable it, and
``/openapi.json`` works all the same.

With auth on, the page, its assets and ``/openapi.json`` need a token of any scope (``auth.open_docs`` opens
them). A browser opening ``/docs`` is asked for a user name and a password: any name, the token as the password
(HTTP Basic, accepted for the docs only). Trying requests from the page needs the token again, under
"Authorize".
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["DOCS_HEADERS", "Asset", "asset", "page"]

#: Files of the package served under /docs/assets/, with their content type. Nothing else is: the name in the URL
#: is only ever looked up here, never joined to a path.
_VENDOR_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_START = "shipml-docs.js"
_START_SCRIPT = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    persistAuthorization: false
  });
});
"""
_MINIMUM_MAJOR = 5  # Swagger UI renders OpenAPI 3.1 (what /openapi.json is) from version 5 on

#: Headers of the page and its assets: only same-origin content, no framing, no sniffing, no referrer.
DOCS_HEADERS = [
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
                                " frame-ancestors 'none'; base-uri 'self'; form-action 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "private, max-age=3600"),
]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shipml API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head><body>
<noscript>The API is described at <a href="openapi.json">openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/shipml-docs.js"></script>
</body></html>
"""

_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shipml API</title></head><body>
<h1>shipml API</h1>
<p>The interactive documentation (Swagger UI) is not installed on this server: {why}.
To enable it, install it where the server runs and restart the server:</p>
<pre>pip install 'shipml[docs]'</pre>
<p>The API description is served all the same at <a href="openapi.json">openapi.json</a>.</p>
</body></html>
"""


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class _Bundle:
    directory: Path | None
    problem: str  # why there is none, when ``directory`` is None


@cache
def _bundle() -> _Bundle:
    """Where Swagger UI's files are installed (looked up once per process)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return _Bundle(None, "the package swagger-ui-bundle-v2 is missing")
    directory = Path(str(swagger_ui_path))
    version = re.fullmatch(r"swagger-ui-(\d+)\.\d+\.\d+", directory.name)
    if version is None or int(version.group(1)) < _MINIMUM_MAJOR:
        try:
            installed = "swagger-ui-bundle " + importlib.metadata.version("swagger-ui-bundle")
        except importlib.metadata.PackageNotFoundError:
            installed = "an older Swagger UI"
        return _Bundle(None, f"{installed} is installed, which cannot render OpenAPI 3.1 (Swagger UI"
                             f" {_MINIMUM_MAJOR} is needed: it comes with swagger-ui-bundle-v2)")
    if not all((directory / name).is_file() for name in _VENDOR_FILES):
        return _Bundle(None, "the package swagger-ui-bundle-v2 is incomplete")
    return _Bundle(directory, "")


def page() -> bytes:
    """The HTML of /docs: Swagger UI when it is installed, else how to install it."""
    bundle = _bundle()
    if bundle.directory is None:
        return _MISSING.format(why=bundle.problem).encode()
    return _PAGE.encode()


def asset(name: str) -> Asset | None:
    """The file ``name`` of /docs/assets/, or None when there is no such asset."""
    if name == _START:
        return Asset(_START_SCRIPT, "text/javascript; charset=utf-8")
    if name not in _VENDOR_FILES:  # checked before the cache: a client's random names are never kept
        return None
    return _vendor_file(name)


@cache
def _vendor_file(name: str) -> Asset | None:
    """A file of Swagger UI's (read once, then kept: ~1.7 MB for the three)."""
    directory = _bundle().directory
    if directory is None:
        return None
    return Asset((directory / name).read_bytes(), _VENDOR_FILES[name])
