"""The HTTP application: routes parse and serialise; the model service (serving/) holds the models, their
release state and the choice of model per request, and the dataplane (protocol/dataplane.py) predicts.

No web framework on the hot path: one dict lookup (or one regex) routes a request, the body is read with a
limit, and orjson encodes the answer. Handlers take a transport-free ``http.Request`` and return an
``http.Reply``; ``server/uvicorn_http.py`` serves them under uvicorn, ``server/rsgi.py`` over granian's RSGI and
:meth:`ShipmlApp.handle` over ASGI (Ray Serve). Models load in the background after start-up, so liveness
answers at once and readiness turns 200 only when every model is loaded and has passed its golden check.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shipml.errors import BadRequest, MethodNotAllowed, NotFoundError, Overloaded, SchemaError, ShipmlError
from shipml.package.example import model_example
from shipml.package.loaded import LoadedModel
from shipml.protocol import json_body
from shipml.protocol.dataplane import ModelRunner
from shipml.protocol.records import DecodedRecords
from shipml.registry.registry import Registry
from shipml.server import docs, http, public, routes
from shipml.server.compiled import switch_when_compiled
from shipml.server.metrics import ServerMetrics
from shipml.server.monitor_routes import MonitorRoutes
from shipml.server.openapi import openapi_document
from shipml.server.v2_routes import V2Routes
from shipml.serving.context import RequestContext, new_request_id
from shipml.serving.endpoints import EndpointState
from shipml.serving.service import ModelService
from shipml.spec import DeploymentSpec

if TYPE_CHECKING:
    from shipml.monitoring.monitor import Monitor

log = logging.getLogger("shipml.server")
access_log = logging.getLogger("shipml.access")

Handler = Callable[..., Awaitable[http.Reply]]


#: Health probes (every few seconds from each load balancer and kubelet) are counted in metrics, not logged.
_PROBES = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


class ShipmlApp:
    """The app serving the endpoints of a deployment spec from a registry."""

    def __init__(self, spec: DeploymentSpec, registry: Registry | None = None,
                 models: dict[str, LoadedModel] | None = None, *, load_before_serving: bool = False,
                 own_process: bool = False, follow: bool = True) -> None:
        self.spec = spec
        self.own_process = own_process  # the process serves only this app: it may tune process-wide settings
        # One worker loads in the background, so liveness answers during a long load. Several workers share a
        # socket: each loads before it accepts, so no connection ever lands on a worker still loading.
        self.load_before_serving = load_before_serving
        self.registry = registry or Registry(spec.registry)
        self.metrics = ServerMetrics()
        self.monitor: Monitor | None = None
        if spec.monitoring.active:
            from shipml.monitoring.monitor import Monitor

            exchange = None if self.metrics.multiprocess_dir is None else Path(self.metrics.multiprocess_dir)
            self.monitor = Monitor(spec.monitoring, self.metrics.monitor_counters(), exchange_dir=exchange)
            self.metrics.watch(self.monitor)
        self.service = ModelService(
            spec, self.registry, self._make_runner, observer=self.metrics, hooks=_Hooks(self),
            public_reason=lambda ref, exc: public.load_failure(ref, exc, self.registry), preloaded=models,
            follow=follow, on_swap=lambda endpoint, outcome: self.metrics.swap(endpoint.name, outcome))
        self.endpoints = self.service.endpoints
        self.draining = False
        self._load_task: asyncio.Task[None] | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._compiling: dict[ModelRunner, asyncio.Task[bool]] = {}
        limits = spec.limits
        self.max_body = limits.max_body_bytes
        self.read_deadlines = http.ReadDeadlines(limits.body_timeout_s)
        # Dispatch tables built from the one route table (server/routes.py): handler and metrics label per route.
        owners: dict[str, object] = {"": self, "v2": V2Routes(self), "monitor": MonitorRoutes(self)}
        self.fixed: dict[tuple[str, str], tuple[Handler, str, tuple[str, ...]]] = {}
        self.patterns: list[tuple[str, re.Pattern[str], Handler, str]] = []
        only = spec.endpoints[0].name if len(spec.endpoints) == 1 else None
        for route in routes.ROUTES:
            owner, _, attribute = route.handler.rpartition(".")
            handler: Handler = getattr(owners[owner], attribute)
            if route.pattern is None:
                args: tuple[str, ...] = ()
                if handler == self.predict_only and only is not None:  # straight to the one model (no hop)
                    handler, args = self.predict_simple, (only,)
                self.fixed[(route.method, route.path)] = (handler, route.label, args)
            else:
                self.patterns.append((route.method, route.pattern, handler, route.label))
        self._openapi: tuple[Any, bytes] | None = None  # (versions served when built, document)
        self._examples: dict[str, dict[str, Any]] = {}  # model ref -> example input row

    @property
    def loaded(self) -> bool:
        return self.service.loaded

    def _make_runner(self, model: LoadedModel, batching: Any) -> ModelRunner:
        return ModelRunner(
            model, policy=self.spec.input_policy.policy(), max_rows=self.spec.limits.max_rows,
            max_batch_size=batching.max_batch_size, max_latency_ms=batching.max_latency_ms,
            max_queue=self.spec.limits.max_queue, on_batch=self.metrics.batch_observer(model.name, model.version))

    # -- ASGI entry ----------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:  # a second signal: uvicorn exits at once, without a shutdown event
                self.draining = True
                return
            if message["type"] == "lifespan.startup":
                self.start_loading()
                if self.load_before_serving and self._load_task is not None:
                    await self._load_task
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_loading(self) -> asyncio.Task[None]:
        """Start loading the models in the background (once); the task that loads them."""
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self.load_models())
        return self._load_task

    async def load_models(self) -> None:
        if self.monitor is not None:
            self.monitor.start()
        await self.service.start()
        if self.own_process:
            # What is loaded now lives as long as the process: out of the collector's sight, so that collections
            # (frequent: a 100-row JSON body is hundreds of new objects) do not walk it again and again.
            gc.collect()
            gc.freeze()
        self.metrics.ready.set(1 if self.is_ready else 0)
        if self.metrics.multiprocess:
            self._depth_task = asyncio.get_running_loop().create_task(self._report_depths())

    async def _report_depths(self, every_s: float = 0.5) -> None:
        while not self.draining:
            for runner in self.service.runners():
                self.metrics.queue_depth.labels(runner.model.name, runner.model.version).set(runner.batcher.depth)
            self.metrics.ready.set(1 if self.is_ready else 0)
            await asyncio.sleep(every_s)

    def begin_drain(self, why: str) -> None:
        """Readiness 503 from now on, and answers say ``Connection: close``; requests are still served (every
        transport calls this on its first SIGTERM/SIGINT, then closes its listener after ``drain_delay_s``)."""
        if not self.draining:
            self.draining = True
            self.metrics.ready.set(0)
            log.info("%s: draining for %.1fs, then graceful shutdown", why, self.spec.server.drain_delay_s)

    async def shutdown(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)
        if self._depth_task is not None:
            self._depth_task.cancel()
        for task in self._compiling.values():
            task.cancel()
        await asyncio.gather(*self._compiling.values(), return_exceptions=True)
        await self.service.stop()
        if self.monitor is not None:  # what was served is written out before the process exits
            await asyncio.to_thread(self.monitor.close)

    @property
    def is_ready(self) -> bool:
        return self.service.ready and not self.draining

    # -- dispatch ------------------------------------------------------------------------------------------
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        reply = await self.respond(http.AsgiRequest(scope, receive, self.read_deadlines))
        if reply is not None:
            await http.send_asgi(send, reply)

    async def respond(self, request: http.Request) -> http.Reply | None:
        """The reply to one request (None when the client went away before sending all of it), counted in the
        metrics and the access log. Transport-free: ASGI and RSGI servers both call this."""
        started = time.monotonic()
        incoming = request.header("x-request-id")
        # the caller's id is echoed in the answer's headers: only one that is a valid header value
        ctx = RequestContext(incoming[:128] if incoming and incoming.isascii() and incoming.isprintable()
                             else new_request_id(), routes.NOT_FOUND,
                             token_id=request.token_id, started=started)
        method, path = request.method, request.path
        reply: http.Reply | None
        try:
            found = self.fixed.get((method, path))
            if found is None:
                handler, args = self._match(method, path, ctx)
            else:
                handler, ctx.route, args = found
            reply = await handler(request, ctx, *args)
        except http.ClientDisconnected:
            reply = None
        except Exception as exc:
            reply = self._error(exc, ctx)
        status = 499 if reply is None else reply.status
        elapsed = time.monotonic() - started
        self.metrics.observe_request(ctx.route, ctx.model, ctx.version, ctx.variant, status, elapsed)
        if self.spec.server.access_log and path not in _PROBES and access_log.isEnabledFor(logging.INFO):
            access_log.info(orjson.dumps({
                "request_id": ctx.id, "method": method, "path": path, "status": status,
                "ms": round(elapsed * 1000, 3), "model": ctx.model or None, "version": ctx.version or None,
                "variant": ctx.variant or None, "rows": ctx.rows, "token_id": ctx.token_id,
            }).decode())
        return reply

    def _match(self, method: str, path: str, ctx: RequestContext) -> tuple[Handler, tuple[str, ...]]:
        for m, pattern, handler, label in self.patterns:
            if m == method and (match := pattern.fullmatch(path)) is not None:
                ctx.route = label
                return handler, match.groups()
        allow = routes.methods_for(path)
        if allow:
            ctx.route = routes.METHOD_NOT_ALLOWED
            raise MethodNotAllowed(f"{method} is not allowed on {path}", allow)
        ctx.route = routes.NOT_FOUND
        raise NotFoundError(f"no route {path}")

    def count_refused(self, method: str, path: str, status: int) -> None:
        """Count a request the token gate refused (it never reaches :meth:`respond`)."""
        self.metrics.observe_request(routes.label_for(method, path), "", "", "", status, 0.0)

    def _error(self, exc: Exception, ctx: RequestContext) -> http.Reply:
        if isinstance(exc, ShipmlError):
            status = exc.status
            body: dict[str, Any] = {"error": exc.public_message, "request_id": ctx.id}
            if isinstance(exc, SchemaError):
                body["problems"] = [p.to_dict() for p in exc.problems[:100]]
                body["problem_count"] = exc.total
            if status >= 500 and not exc.expose:  # the operator's log gets what the client does not: the cause
                log.error("request %s failed: %s", ctx.id, exc, exc_info=exc)
        else:
            status = 500
            body = {"error": "internal error", "request_id": ctx.id}
            log.exception("request %s failed", ctx.id)
        headers: http.Headers = [("x-request-id", ctx.id)]
        if isinstance(exc, MethodNotAllowed) and exc.allow:
            headers.append(("allow", ", ".join(exc.allow)))
        if isinstance(exc, Overloaded):
            headers.append(("retry-after", str(max(1, round(exc.retry_after_s)))))
        return http.Reply(status, http.json_bytes(body), headers)

    # -- routes --------------------------------------------------------------------------------------------
    async def healthz(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        return http.Reply(200, b'{"status":"ok"}')

    async def readyz(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        models = {e.name: {"versions": e.versions, "errors": list(e.errors.values())}
                  for e in self.endpoints.values()}
        if self.is_ready:
            status, word = 200, "ready"
        else:
            status = 503
            word = "draining" if self.draining else ("failed" if self.service.failed else "loading")
        return http.Reply(status, http.json_bytes({"status": word, "models": models}))

    async def render_metrics(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        return http.Reply(200, self.metrics.render(), content_type=self.metrics.content_type)

    async def admin_releases(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        return http.Reply(200, http.json_bytes({"endpoints": self.service.releases()}))

    async def list_models(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        data = [{"name": e.name, "models": [public.public_ref(r) for r in e.spec.models], "versions": e.versions,
                 "ready": e.ready} for e in self.endpoints.values()]
        return http.Reply(200, http.json_bytes({"models": data}))

    async def predict_only(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        if len(self.endpoints) != 1:
            raise NotFoundError(f"several models are served ({', '.join(self.endpoints)}):"
                                " POST /models/{name}/predict")
        return await self.predict_simple(request, ctx, next(iter(self.endpoints)))

    async def predict_simple(self, request: http.Request, ctx: RequestContext,
                             name: str, version: str | None = None) -> http.Reply:
        endpoint, payload, data = await self._admit_records(request, ctx, name, version)
        if data is None:
            if "instances" in payload:
                data = payload["instances"]
            elif "inputs" in payload:
                data = payload["inputs"]
            else:
                raise BadRequest('body must have "instances" (a list of records or rows) or "inputs"'
                                 " (column name -> list of values)")
        answer = await self.service.predict(endpoint, data, want_proba=True, version=version, header=request.header,
                                            payload=payload, ctx=ctx)
        outcome = answer.outcome
        body: dict[str, Any] = {"predictions": _jsonable(outcome.predictions)}
        if outcome.probabilities is not None:
            body["probabilities"] = outcome.probabilities
            body["classes"] = answer.classes
        body.update(model=endpoint.name if answer.model is None else answer.model.name,
                    version=answer.version or None, variant=answer.variant, request_id=ctx.id)
        if outcome.warnings:
            body["warnings"] = [p.to_dict() for p in outcome.warnings[:100]]
        return http.Reply(200, http.json_bytes(body), http.answered(ctx))

    async def predict_v1(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        endpoint, payload, data = await self._admit_records(request, ctx, name, None)
        if data is None:
            if "instances" not in payload:
                raise BadRequest('body must have "instances"')
            data = payload["instances"]
        answer = await self.service.predict(endpoint, data, want_proba=False, header=request.header,
                                            payload=payload, ctx=ctx)
        body = {"predictions": _jsonable(answer.outcome.predictions)}
        return http.Reply(200, http.json_bytes(body), http.answered(ctx))

    async def v1_status(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        endpoint = self.service.endpoint(name)
        _label_model(ctx, endpoint)
        return http.Reply(200, http.json_bytes({"name": name, "ready": endpoint.ready}))

    async def model_info(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        """What a client needs to call the model: its inputs and an example body known to be valid."""
        endpoint = self.service.endpoint(name)
        _label_model(ctx, endpoint)
        body: dict[str, Any] = {"name": name, "models": [public.public_ref(r) for r in endpoint.spec.models],
                                "versions": endpoint.versions, "ready": endpoint.ready}
        if endpoint.serving is not None and endpoint.serving.front is not None:
            runner = endpoint.serving.front
            model = runner.model
            body["version"] = model.version
            body["inputs"] = [c.model_dump(exclude={"pandas_dtype"}) for c in model.signature.inputs]
            body["outputs"] = model.signature.outputs.model_dump()
            example = self._examples.get(model.ref)
            if example is None:  # made once per model: it reads the profile
                example = self._examples[model.ref] = model_example(model)
            body["example"] = {"instances": [example]}
            body["runtime"] = {"name": model.manifest.runtime.name,
                               "compiled": bool(getattr(model.runtime_model, "compiled", False)),
                               "compile_status": runner.compile_status}
        return http.Reply(200, http.json_bytes(body))

    async def openapi(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        served = tuple((e.name, tuple(e.versions)) for e in self.endpoints.values())
        if self._openapi is None or self._openapi[0] != served:
            models = {e.name: e.serving.front.model if e.serving is not None and e.serving.front is not None else None
                      for e in self.endpoints.values()}
            self._openapi = (served, http.json_bytes(openapi_document(self.spec, models)))
        return http.Reply(200, self._openapi[1])

    async def docs(self, request: http.Request, ctx: RequestContext) -> http.Reply:
        return http.Reply(200, docs.page(), list(docs.DOCS_HEADERS), content_type="text/html; charset=utf-8")

    async def docs_asset(self, request: http.Request, ctx: RequestContext, name: str) -> http.Reply:
        found = docs.asset(name)
        if found is None:
            raise NotFoundError("no such asset of the docs")
        return http.Reply(200, found.body, list(docs.DOCS_HEADERS), content_type=found.content_type)

    # -- shared steps --------------------------------------------------------------------------------------
    async def _admit_records(self, request: http.Request, ctx: RequestContext, name: str,
                             version: str | None) -> tuple[EndpointState, Any, DecodedRecords | None]:
        """The endpoint and the body of a prediction request, checked: (endpoint, parsed body, None), or
        (endpoint, None, the records) when the body is plainly records of the model's inputs (``records.py``). Not
        for an endpoint whose release reads a routing key from the body: it needs the parsed body."""
        endpoint, runner = self._runner(request, ctx, name, version)
        body = await self.read_body(request, runner)
        serving = endpoint.serving
        if runner.decoder is not None and serving is not None and serving.release.ab_key is None:
            records = runner.decoder.decode(body)
            if records is not None:
                return endpoint, None, records
        return endpoint, _parse(body), None

    def _runner(self, request: http.Request, ctx: RequestContext, name: str,
                version: str | None) -> tuple[EndpointState, ModelRunner]:
        endpoint = self.service.endpoint(name)
        runner = endpoint.runner(version)  # 503 while not serving, 404 for a version it does not serve
        ctx.model, ctx.version = runner.model.name, runner.model.version
        http.check_json_content_type(request)
        return endpoint, runner

    async def read_body(self, request: http.Request, runner: ModelRunner) -> bytes:
        """The body of a request for ``runner``: while it is read, the model's batcher waits for it (up to
        ``max_latency_ms``) rather than sending a batch without it."""
        batcher = runner.batcher
        batcher.coming += 1
        try:
            return await request.body(self.max_body)
        finally:
            batcher.coming -= 1


class _Hooks:
    """What the server does when the repository loads or unloads a model: queue-depth metrics, compiled LightGBM."""

    def __init__(self, app: ShipmlApp) -> None:
        self.app = app

    def loaded(self, runner: ModelRunner) -> None:
        app = self.app
        if app.monitor is not None:
            app.monitor.watch(runner.model)
            runner.monitor = app.monitor
        if not app.metrics.multiprocess:  # else sampled by _report_depths: files hold no functions
            app.metrics.queue_depth.labels(runner.model.name, runner.model.version).set_function(_depth(runner))
        if app.spec.server.compile == "auto":
            app._compiling[runner] = asyncio.get_running_loop().create_task(switch_when_compiled(runner))
        else:
            runner.compile_status = "off"

    def unloading(self, runner: ModelRunner) -> None:
        if self.app.monitor is not None:
            runner.monitor = None
            self.app.monitor.unwatch(runner.model)
        task = self.app._compiling.pop(runner, None)
        if task is not None:
            task.cancel()


def _label_model(ctx: RequestContext, endpoint: EndpointState) -> None:
    """Label the request's metrics with the endpoint's stable model, once it is loaded."""
    if endpoint.serving is not None and endpoint.serving.front is not None:
        model = endpoint.serving.front.model
        ctx.model, ctx.version = model.name, model.version


def _depth(runner: ModelRunner) -> Callable[[], float]:
    return lambda: float(runner.batcher.depth)


def _parse(body: bytes) -> dict[str, Any]:
    """A prediction request's body: a JSON object, else 400."""
    try:
        payload = json_body.loads(body)
    except json_body.JSONBodyError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


def _jsonable(values: np.ndarray) -> Any:
    return values if values.dtype.kind in "biuf" else values.tolist()
