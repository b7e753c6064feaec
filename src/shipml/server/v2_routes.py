"""Open Inference Protocol v2 (REST) routes: parse and serialise around the codec (protocol/v2.py) and the dataplane.

Health answers follow the protocol: 200 means true, a 4xx (400) means false, with ``{"live"|"ready": bool}``.
An inference request may be plain JSON or JSON followed by binary tensor data (the binary tensor data extension,
``Inference-Header-Content-Length``); the response carries binary outputs the same way when asked to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

import shipml
from shipml.errors import BadRequest
from shipml.protocol import v2
from shipml.server import http
from shipml.serving.context import RequestContext

if TYPE_CHECKING:
    from shipml.server.app import ShipmlApp

_HEADER_LENGTH = "inference-header-content-length"
_NOT_READY = 400  # the protocol: "a 4xx status code indicates false"


class V2Routes:
    """The v2 handlers of one app (the route table, server/routes.py, names them ``v2.<method>``)."""

    def __init__(self, app: ShipmlApp) -> None:
        self.app = app

    async def server_metadata(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        body = v2.server_metadata(shipml.__version__, ["model_repository"])
        return http.Reply(200, http.json_bytes(body))

    async def live(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        return http.Reply(200, b'{"live":true}')

    async def ready(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        ready = self.app.is_ready
        status = 200 if ready else _NOT_READY
        return http.Reply(status, http.json_bytes({"ready": ready}))

    async def repository_index(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        await request.body(self.app.max_body)  # optional {"ready": bool} filter, ignored
        index: list[dict[str, object]] = []
        for endpoint in self.app.endpoints.values():
            for version in endpoint.versions:
                index.append({"name": endpoint.name, "version": version, "state": "READY"})
            for reason in endpoint.errors.values():
                index.append({"name": endpoint.name, "version": "", "state": "UNAVAILABLE", "reason": reason})
            if endpoint.serving is None and not endpoint.errors:
                index.append({"name": endpoint.name, "version": "", "state": "LOADING"})
        return http.Reply(200, http.json_bytes(index))

    async def model_metadata(self, request: http.Request, ctx: RequestContext,
                             name: str, version: str | None = None) -> http.Reply:
        endpoint = self.app.service.endpoint(name)
        model = endpoint.runner(version or None).model
        ctx.model, ctx.version = model.name, model.version
        versions = [version] if version else endpoint.versions
        body = v2.model_metadata(endpoint.name, versions, model.manifest.runtime.name, model.signature)
        return http.Reply(200, http.json_bytes(body))

    async def model_ready(self, request: http.Request, ctx: RequestContext,
                          name: str, version: str | None = None) -> http.Reply:
        endpoint = self.app.service.endpoint(name)
        ready = endpoint.ready and (not version or version in endpoint.versions)
        if ready:
            runner = endpoint.runner(version or None)
            ctx.model, ctx.version = runner.model.name, runner.model.version
        status = 200 if ready else _NOT_READY
        return http.Reply(status, http.json_bytes({"name": name, "ready": ready}))

    async def infer(self, request: http.Request, ctx: RequestContext,
                    name: str, version: str | None = None) -> http.Reply:
        endpoint = self.app.service.endpoint(name)
        runner = endpoint.runner(version or None)
        ctx.model, ctx.version = runner.model.name, runner.model.version
        header_length = _header_length(request)
        http.check_json_content_type(request, allow_binary=True)
        body = await self.app.read_body(request, runner)
        decoded = v2.decode_infer_request(body, header_length, runner.model.signature)
        wanted = decoded.output_names
        want_proba = v2.PREDICT_PROBA in wanted
        answer = await self.app.service.predict(endpoint, decoded.columns, want_proba=want_proba,
                                                version=version or None, header=request.header,
                                                payload=decoded.parameters, ctx=ctx)
        outcome = answer.outcome
        produced: dict[str, np.ndarray] = {}
        for out in wanted:
            if out == v2.PREDICT:
                produced[out] = outcome.predictions
            elif outcome.probabilities is not None:
                produced[out] = outcome.probabilities
        response, json_length = v2.encode_infer_response(
            endpoint.name, answer.version, decoded.id, produced, decoded.binary_outputs,
            parameters={"variant": answer.variant})
        headers = http.answered(ctx)
        content_type = http.JSON
        if json_length is not None:
            headers.append((_HEADER_LENGTH, str(json_length)))
            content_type = "application/octet-stream"
        return http.Reply(200, response, headers, content_type=content_type)


def _header_length(request: http.Request) -> int | None:
    raw = request.header(_HEADER_LENGTH)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"Inference-Header-Content-Length must be a whole number, got {raw[:40]!r}") from exc
    if value < 0:
        raise BadRequest("Inference-Header-Content-Length must not be negative")
    return value
