"""Every route the server answers, in one table: its method and path, the handler that answers it, its name in
the metrics and the access it needs. The app dispatches from it, the token gate (``auth.py``) decides from it and
``/metrics`` labels each request with it, so a route cannot be served without an access level, nor counted under
anything but its fixed name.

A path is literal, or a regular expression when the route takes parts of it (the model's name first). Each
route's ``label`` is the ``route`` label of ``shipml_requests_total``: a fixed word per route, never the request's
own path, so that an attacker's random paths cannot create series. A path that no route serves is counted as
``not_found``; a served path called with another method as ``method_not_allowed``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = ["METHOD_NOT_ALLOWED", "NOT_FOUND", "ROUTES", "Level", "Route", "find", "label_for", "methods_for"]


class Level(enum.Enum):
    OPEN = "open"        # no token
    METRICS = "metrics"  # open, or admin when the spec says auth.metrics_auth
    DOCS = "docs"        # any valid token, or open when the spec says auth.open_docs
    PREDICT = "predict"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Route:
    """``path``: literal, or a regular expression (``regex=True``) whose first group, when ``model`` is set, is
    the model the request is for. ``default_model``: the route serves the server's only model without naming it."""

    method: str
    path: str
    handler: str
    label: str
    level: Level
    regex: bool = False
    model: bool = False
    default_model: bool = False
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.regex:
            object.__setattr__(self, "pattern", re.compile(self.path))


NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"

_MODEL = r"/models/([^/]+)"
_V2_MODEL = r"/v2/models/([^/]+)(?:/versions/([^/]*))?"
_OPEN, _METRICS, _DOCS, _PREDICT, _ADMIN = Level.OPEN, Level.METRICS, Level.DOCS, Level.PREDICT, Level.ADMIN

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "/healthz", _OPEN),
    Route("GET", "/readyz", "readyz", "/readyz", _OPEN),
    Route("GET", "/metrics", "render_metrics", "/metrics", _METRICS),
    Route("GET", "/models", "list_models", "/models", _PREDICT),
    Route("GET", "/admin/releases", "admin_releases", "/admin/releases", _ADMIN),
    Route("POST", "/predict", "predict_only", "predict", _PREDICT, default_model=True),
    Route("GET", "/openapi.json", "openapi", "/openapi.json", _DOCS),
    Route("GET", "/docs", "docs", "/docs", _DOCS),
    Route("GET", r"/docs/assets/([^/]+)", "docs_asset", "/docs/assets", _DOCS, regex=True),
    Route("GET", _MODEL, "model_info", "model_info", _PREDICT, regex=True, model=True),
    Route("POST", _MODEL + "/predict", "predict_simple", "predict", _PREDICT, regex=True, model=True),
    Route("POST", _MODEL + r"/versions/([^/]+)/predict", "predict_simple", "predict", _PREDICT, regex=True,
          model=True),
    Route("POST", _MODEL + "/feedback", "monitor.feedback", "feedback", _PREDICT, regex=True, model=True),
    Route("GET", _MODEL + "/drift", "monitor.drift", "drift", _PREDICT, regex=True, model=True),
    Route("GET", _MODEL + "/performance", "monitor.performance", "performance", _PREDICT, regex=True, model=True),
    Route("POST", r"/v1/models/([^/:]+):predict", "predict_v1", "v1_predict", _PREDICT, regex=True, model=True),
    Route("GET", r"/v1/models/([^/:]+)", "v1_status", "v1_status", _PREDICT, regex=True, model=True),
    Route("GET", "/v2", "v2.server_metadata", "/v2", _PREDICT),
    Route("GET", "/v2/health/live", "v2.live", "/v2/health/live", _OPEN),
    Route("GET", "/v2/health/ready", "v2.ready", "/v2/health/ready", _OPEN),
    Route("POST", "/v2/repository/index", "v2.repository_index", "/v2/repository/index", _PREDICT),
    Route("GET", _V2_MODEL, "v2.model_metadata", "v2_model_metadata", _PREDICT, regex=True, model=True),
    Route("GET", _V2_MODEL + "/ready", "v2.model_ready", "v2_model_ready", _PREDICT, regex=True, model=True),
    Route("POST", _V2_MODEL + "/infer", "v2.infer", "v2_infer", _PREDICT, regex=True, model=True),
)

_FIXED: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES if not r.regex}
_PATTERNS: tuple[tuple[Route, re.Pattern[str]], ...] = tuple((r, r.pattern) for r in ROUTES if r.pattern is not None)


def find(method: str, path: str) -> tuple[Route, tuple[str | None, ...]] | None:
    """The route serving ``method`` on ``path`` and the parts of the path it takes, or None."""
    route = _FIXED.get((method, path))
    if route is not None:
        return route, ()
    for route, pattern in _PATTERNS:
        if route.method == method and (match := pattern.fullmatch(path)) is not None:
            return route, match.groups()
    return None


def methods_for(path: str) -> tuple[str, ...]:
    """The methods some route serves on ``path`` (sorted; empty when no route serves it)."""
    found = {r.method for r in ROUTES if (r.pattern.fullmatch(path) if r.pattern is not None else r.path == path)}
    return tuple(sorted(found))


def label_for(method: str, path: str) -> str:
    """The metrics label of a request: its route's, ``method_not_allowed`` or ``not_found``."""
    found = find(method, path)
    if found is not None:
        return found[0].label
    return METHOD_NOT_ALLOWED if methods_for(path) else NOT_FOUND
