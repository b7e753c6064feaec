"""Monitoring routes: ground-truth feedback, drift and live performance of an endpoint's models.

- ``POST /models/{name}/feedback``: ``{"request_id": ..., "target": ...}``, a list of them, or
  ``{"feedback": [...]}``; a multi-row request takes a list target (one per row) or one item per row with
  ``"row"``. The answer says how many labels matched a prediction this server made (or logged).
- ``GET /models/{name}/drift``: drift of each version the endpoint serves (the stable one first) over the last
  ``monitoring.drift.window_s`` seconds, against the version's training profile, features ranked worst first.
- ``GET /models/{name}/performance``: realised figures over the last labelled rows and the estimate from the
  model's own probabilities over the last served rows.

With monitoring off they answer 404 saying how to turn it on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shipml.errors import BadRequest, NotFoundError
from shipml.protocol import json_body
from shipml.server import http
from shipml.serving.context import RequestContext

if TYPE_CHECKING:
    from shipml.monitoring.monitor import Monitor, Watched
    from shipml.protocol.dataplane import ModelRunner
    from shipml.server.app import ShipmlApp
    from shipml.serving.endpoints import EndpointState

OFF = "monitoring is off: start the server with --log DIR, or set monitoring.enabled in the spec"


class MonitorRoutes:
    """The monitoring handlers of one app (the route table, server/routes.py, names them ``monitor.<method>``)."""

    def __init__(self, app: ShipmlApp) -> None:
        self.app = app

    def _monitor(self) -> Monitor:
        monitor = self.app.monitor
        if monitor is None:
            raise NotFoundError(OFF)
        return monitor

    async def feedback(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        from shipml.monitoring.feedback import parse_feedback

        monitor = self._monitor()
        endpoint = self.app.service.endpoint(name)
        runners = _runners(endpoint)
        if runners:
            ctx.model, ctx.version = runners[0].model.name, runners[0].model.version
        http.check_json_content_type(request)
        body = await request.body(self.app.max_body)
        try:
            payload = json_body.loads(body)
        except json_body.JSONBodyError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        labels = parse_feedback(payload)
        models = [r.model for r in runners]
        # joining may read the log on disk (ids this process does not hold): off the event loop
        result = await asyncio.to_thread(monitor.feedback, labels, models)
        return http.Reply(200, http.json_bytes(result.to_dict()))

    async def drift(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        monitor = self._monitor()
        reports = []
        for watched in self._watched(ctx, name, monitor):
            report = await asyncio.to_thread(monitor.drift, watched)
            entry: dict[str, Any] = {"model": watched.model.name, "version": watched.model.version}
            if report is None:
                entry["error"] = "the package has no reference profile to compare with"
            else:
                entry.update(report.to_dict())
            reports.append(entry)
        return http.Reply(200, http.json_bytes(_shape(name, reports, monitor.spec.drift.window_s)))

    async def performance(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        monitor = self._monitor()
        reports = []
        for watched in self._watched(ctx, name, monitor):
            figures = await asyncio.to_thread(monitor.performance, watched)
            realised = {k: v for k, v in figures.items() if not k.startswith("estimated_")}
            estimated = {k.removeprefix("estimated_"): v for k, v in figures.items() if k.startswith("estimated_")}
            reports.append({"model": watched.model.name, "version": watched.model.version,
                            "labelled_rows": monitor.labelled_rows(watched),
                            "window_rows": monitor.spec.performance.window_rows,
                            "realised": realised, "estimated": estimated})
        return http.Reply(200, http.json_bytes(_shape(name, reports, None)))

    def _watched(self, ctx: RequestContext, name: str, monitor: Monitor) -> list[Watched]:
        monitor.catch_up()
        endpoint = self.app.service.endpoint(name)
        runners = _runners(endpoint)
        if runners:
            ctx.model, ctx.version = runners[0].model.name, runners[0].model.version
        found = [w for w in (monitor.find(r.model) for r in runners) if w is not None]
        if not found:
            raise NotFoundError(f"model {name} has no loaded version being monitored yet")
        return found


def _runners(endpoint: EndpointState) -> list[ModelRunner]:
    """The endpoint's loaded runners, the one that describes it (stable) first, each once."""
    serving = endpoint.serving
    if serving is None:
        return []
    runners = [serving.front] if serving.front is not None else []
    for runner in [*serving.by_version.values(), *serving.by_id.values()]:
        if runner not in runners:
            runners.append(runner)
    return runners


def _shape(endpoint: str, reports: list[dict[str, Any]], window_s: float | None) -> dict[str, Any]:
    """The stable version's report at the top level, the endpoint's other versions under ``other_versions``."""
    body: dict[str, Any] = {"endpoint": endpoint, **reports[0]}
    if window_s is not None:
        body["window_s"] = window_s
    if len(reports) > 1:
        body["other_versions"] = reports[1:]
    return body
