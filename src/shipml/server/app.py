"""The application: routes parse and serialise, the dataplane (protocol/dataplane.py) does the work.

No web framework on the hot path: one dict lookup (or one regex) routes a request, the body is read with a
limit, and orjson encodes the answer. Handlers take a transport-free ``http.Request`` and return an
``http.Reply``; :meth:`ShipmlApp.handle` serves them over ASGI (uvicorn, Ray Serve) and ``server/rsgi.py`` over
granian's RSGI. Models load in the background after start-up, so liveness answers at once and readiness turns
200 only when every model is loaded and has passed its golden check.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shipml.errors import (
    BadRequest,
    DeadlineExceeded,
    MethodNotAllowed,
    NotFoundError,
    Overloaded,
    SchemaError,
    ServiceUnavailable,
    ShipmlError,
)
from shipml.package.example import model_example
from shipml.package.loaded import LoadedModel
from shipml.package.manifest import read_manifest
from shipml.protocol import json_body
from shipml.protocol.dataplane import ModelRunner, Outcome
from shipml.registry.registry import Registry
from shipml.server import docs, http, public, routes
from shipml.server.compiled import switch_when_compiled
from shipml.server.metrics import ServerMetrics
from shipml.server.openapi import openapi_document
from shipml.server.v2_routes import V2Routes
from shipml.spec import DeploymentSpec, EndpointSpec

log = logging.getLogger("shipml.server")
access_log = logging.getLogger("shipml.access")

Handler = Callable[..., Awaitable[http.Reply]]


@dataclass
class Endpoint:
    spec: EndpointSpec
    runners: dict[str, ModelRunner] = field(default_factory=dict)  # version -> runner, primary first
    errors: dict[str, str] = field(default_factory=dict)  # ref -> why it is not loaded, as clients may see it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Every model of the endpoint loaded and verified."""
        return bool(self.runners) and not self.errors

    def runner(self, version: str | None = None) -> ModelRunner:
        if self.errors:
            raise ServiceUnavailable(f"model {self.name} is not ready: " + "; ".join(self.errors.values()))
        if not self.runners:
            raise ServiceUnavailable(f"model {self.name} is still loading")
        if version is None:
            return next(iter(self.runners.values()))
        runner = self.runners.get(version)
        if runner is None:
            raise NotFoundError(f"model {self.name} serves no version {version}"
                                f" (serving {', '.join(self.runners)})")
        return runner


#: Health probes (every few seconds from each load balancer and kubelet) are counted in metrics, not logged.
_PROBES = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
_NO_SKLEARN_RUNTIMES = frozenset({"lightgbm", "xgboost", "onnx"})
_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-{int(time.time()):x}"


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_ids):x}"


class ShipmlApp:
    """The app serving the endpoints of a deployment spec from a registry."""

    def __init__(self, spec: DeploymentSpec, registry: Registry | None = None,
                 models: dict[str, LoadedModel] | None = None, *, load_before_serving: bool = False,
                 own_process: bool = False) -> None:
        self.spec = spec
        self.own_process = own_process  # the process serves only this app: it may tune process-wide settings
        # One worker loads in the background, so liveness answers during a long load. Several workers share a
        # socket: each loads before it accepts, so no connection ever lands on a worker still loading.
        self.load_before_serving = load_before_serving
        self.registry = registry or Registry(spec.registry)
        self.preloaded = models or {}
        self.metrics = ServerMetrics()
        self.endpoints = {e.name: Endpoint(e) for e in spec.endpoints}
        self.loaded = False
        self.draining = False
        self._load_task: asyncio.Task[None] | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._compiling: list[asyncio.Task[bool]] = []
        limits = spec.limits
        self.max_body = limits.max_body_bytes
        self.timeout_s = limits.request_timeout_ms / 1000.0
        self.read_deadlines = http.ReadDeadlines(limits.body_timeout_s)
        # Dispatch tables built from the one route table (server/routes.py): handler and metrics label per route.
        v2_routes = V2Routes(self)
        self.fixed: dict[tuple[str, str], tuple[Handler, str]] = {}
        self.patterns: list[tuple[str, re.Pattern[str], Handler, str]] = []
        for route in routes.ROUTES:
            owner, _, attribute = route.handler.rpartition(".")
            handler: Handler = getattr(v2_routes if owner == "v2" else self, attribute)
            if route.pattern is None:
                self.fixed[(route.method, route.path)] = (handler, route.label)
            else:
                self.patterns.append((route.method, route.pattern, handler, route.label))
        self._openapi: tuple[int, bytes] | None = None  # (models loaded when built, document)
        self._examples: dict[str, dict[str, Any]] = {}  # model ref -> example input row

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
        await asyncio.to_thread(self._prepare_runtimes)
        for endpoint in self.endpoints.values():
            for ref in endpoint.spec.models:
                try:
                    preloaded = self.preloaded.get(ref)
                    model = preloaded if preloaded is not None else await asyncio.to_thread(self.registry_load, ref)
                except Exception as exc:  # whatever failed, the server goes on: the endpoint says it is not ready
                    # The log has it all (paths, framework messages, their traceback); clients get a public reason.
                    framework = not isinstance(exc, ShipmlError) or exc.__cause__ is not None
                    log.error("model %s of endpoint %s failed to load: %s: %s", ref, endpoint.name,
                              type(exc).__name__, exc, exc_info=exc if framework else None)
                    endpoint.errors[ref] = await asyncio.to_thread(public.load_failure, ref, exc, self.registry)
                    continue
                batching = self.spec.batching_for(endpoint.spec)
                runner = ModelRunner(
                    model, policy=self.spec.input_policy.policy(), max_rows=self.spec.limits.max_rows,
                    max_batch_size=batching.max_batch_size, max_latency_ms=batching.max_latency_ms,
                    max_queue=self.spec.limits.max_queue,
                    on_batch=self.metrics.batch_observer(model.name, model.version))
                runner.batcher.start()
                if not self.metrics.multiprocess:  # else sampled by _report_depths: files hold no functions
                    self.metrics.queue_depth.labels(model.name, model.version).set_function(_depth(runner))
                endpoint.runners[model.version] = runner
                log.info("model %s ready on endpoint %s", model.ref, endpoint.name)
                if self.spec.server.compile == "auto":
                    self._compiling.append(asyncio.get_running_loop().create_task(switch_when_compiled(runner)))
                else:
                    runner.compile_status = "off"
        self.loaded = True
        if self.own_process:
            # What is loaded now lives as long as the process: out of the collector's sight, so that collections
            # (frequent: a 100-row JSON body is hundreds of new objects) do not walk it again and again.
            gc.collect()
            gc.freeze()
        self.metrics.ready.set(1 if self.is_ready else 0)
        if self.metrics.multiprocess:
            self._depth_task = asyncio.get_running_loop().create_task(self._report_depths())

    async def _report_depths(self, every_s: float = 0.5) -> None:
        gauges = [(self.metrics.queue_depth.labels(r.model.name, r.model.version), r)
                  for e in self.endpoints.values() for r in e.runners.values()]
        while not self.draining:
            for gauge, runner in gauges:
                gauge.set(runner.batcher.depth)
            await asyncio.sleep(every_s)

    def _prepare_runtimes(self) -> None:
        """Serving only LightGBM/XGBoost/ONNX models: import LightGBM without scikit-learn, and without pandas
        when every LightGBM model takes a numeric matrix (faster start, ~100 MB less memory)."""
        manifests = []
        for endpoint in self.endpoints.values():
            for ref in endpoint.spec.models:
                if ref in self.preloaded:
                    continue
                try:
                    manifests.append(read_manifest(self.registry.get(ref).path))
                except (ShipmlError, OSError):
                    return  # loading will say what is wrong with it
        runtimes = {m.runtime.name for m in manifests}
        if "lightgbm" in runtimes and runtimes <= _NO_SKLEARN_RUNTIMES:
            from shipml.runtimes.lightgbm import import_lean

            import_lean(pandas=any(m.runtime.name == "lightgbm" and m.runtime.info.get("pandas_categorical")
                                   for m in manifests))

    def registry_load(self, ref: str) -> LoadedModel:
        from shipml.api import load_model

        return load_model(ref, registry=self.registry)

    async def shutdown(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)
        if self._depth_task is not None:
            self._depth_task.cancel()
        for task in self._compiling:
            task.cancel()
        await asyncio.gather(*self._compiling, return_exceptions=True)
        for endpoint in self.endpoints.values():
            for runner in endpoint.runners.values():
                await runner.batcher.stop()

    @property
    def is_ready(self) -> bool:
        return self.loaded and not self.draining and all(e.ready for e in self.endpoints.values())

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
        request_id = incoming[:128] if incoming else new_request_id()
        state: dict[str, Any] = {"id": request_id, "route": routes.NOT_FOUND, "model": "", "version": ""}
        method, path = request.method, request.path
        reply: http.Reply | None
        try:
            found = self.fixed.get((method, path))
            args: tuple[str, ...] = ()
            if found is None:
                handler, args = self._match(method, path, state)
            else:
                handler, state["route"] = found
            reply = await handler(request, state, *args)
        except http.ClientDisconnected:
            reply = None
        except Exception as exc:
            reply = self._error(exc, state)
        status = 499 if reply is None else reply.status
        elapsed = time.monotonic() - started
        self.metrics.observe_request(state["route"], state["model"], state["version"], status, elapsed)
        if self.spec.server.access_log and path not in _PROBES and access_log.isEnabledFor(logging.INFO):
            access_log.info(orjson.dumps({
                "request_id": request_id, "method": method, "path": path, "status": status,
                "ms": round(elapsed * 1000, 3), "model": state["model"] or None,
                "version": state["version"] or None, "rows": state.get("rows"),
                "token_id": request.token_id,
            }).decode())
        return reply

    def _match(self, method: str, path: str, state: dict[str, Any]) -> tuple[Handler, tuple[str, ...]]:
        for m, pattern, handler, label in self.patterns:
            if m == method and (match := pattern.fullmatch(path)) is not None:
                state["route"] = label
                return handler, match.groups()
        allow = routes.methods_for(path)
        if allow:
            state["route"] = routes.METHOD_NOT_ALLOWED
            raise MethodNotAllowed(f"{method} is not allowed on {path}", allow)
        state["route"] = routes.NOT_FOUND
        raise NotFoundError(f"no route {path}")

    def count_refused(self, method: str, path: str, status: int) -> None:
        """Count a request the token gate refused (it never reaches :meth:`respond`)."""
        self.metrics.observe_request(routes.label_for(method, path), "", "", status, 0.0)

    def _error(self, exc: Exception, state: dict[str, Any]) -> http.Reply:
        if isinstance(exc, ShipmlError):
            status = exc.status
            body: dict[str, Any] = {"error": exc.public_message, "request_id": state["id"]}
            if isinstance(exc, SchemaError):
                body["problems"] = [p.to_dict() for p in exc.problems[:100]]
                body["problem_count"] = exc.total
            if status >= 500 and not exc.expose:  # the operator's log gets what the client does not: the cause
                log.error("request %s failed: %s", state["id"], exc, exc_info=exc)
        else:
            status = 500
            body = {"error": "internal error", "request_id": state["id"]}
            log.exception("request %s failed", state["id"])
        headers: http.Headers = [("x-request-id", state["id"])]
        if isinstance(exc, MethodNotAllowed) and exc.allow:
            headers.append(("allow", ", ".join(exc.allow)))
        if isinstance(exc, Overloaded):
            headers.append(("retry-after", str(max(1, round(exc.retry_after_s)))))
        return http.Reply(status, http.json_bytes(body), headers)

    # -- routes --------------------------------------------------------------------------------------------
    async def healthz(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        return http.Reply(200, b'{"status":"ok"}')

    async def readyz(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        models = {e.name: {"versions": list(e.runners), "errors": list(e.errors.values())}
                  for e in self.endpoints.values()}
        if self.is_ready:
            status, word = 200, "ready"
        else:
            status = 503
            word = "draining" if self.draining else ("failed" if any(e.errors for e in self.endpoints.values())
                                                     else "loading")
        return http.Reply(status, http.json_bytes({"status": word, "models": models}))

    async def render_metrics(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        return http.Reply(200, self.metrics.render(), content_type=self.metrics.content_type)

    async def list_models(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        data = [{"name": e.name, "models": [public.public_ref(r) for r in e.spec.models], "versions": list(e.runners),
                 "ready": e.ready} for e in self.endpoints.values()]
        return http.Reply(200, http.json_bytes({"models": data}))

    async def predict_only(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        if len(self.endpoints) != 1:
            raise NotFoundError(f"several models are served ({', '.join(self.endpoints)}):"
                                " POST /models/{name}/predict")
        return await self.predict_simple(request, state, next(iter(self.endpoints)))

    async def predict_simple(self, request: http.Request, state: dict[str, Any],
                             name: str, version: str | None = None) -> http.Reply:
        runner, payload = await self._admit(request, state, name, version)
        if "instances" in payload:
            data = payload["instances"]
        elif "inputs" in payload:
            data = payload["inputs"]
        else:
            raise BadRequest('body must have "instances" (a list of records or rows) or "inputs"'
                                  " (column name -> list of values)")
        outcome = await self.infer(runner, data, want_proba=True, state=state)
        body: dict[str, Any] = {"predictions": _jsonable(outcome.predictions)}
        if outcome.probabilities is not None:
            body["probabilities"] = outcome.probabilities
            body["classes"] = runner.model.classes
        body.update(model=runner.model.name, version=runner.model.version, request_id=state["id"])
        if outcome.warnings:
            body["warnings"] = [p.to_dict() for p in outcome.warnings[:100]]
        return http.Reply(200, http.json_bytes(body), [("x-request-id", state["id"])])

    async def predict_v1(self, request: http.Request, state: dict[str, Any], name: str) -> http.Reply:
        runner, payload = await self._admit(request, state, name, None)
        if "instances" not in payload:
            raise BadRequest('body must have "instances"')
        outcome = await self.infer(runner, payload["instances"], want_proba=False, state=state)
        body = {"predictions": _jsonable(outcome.predictions)}
        return http.Reply(200, http.json_bytes(body), [("x-request-id", state["id"])])

    async def v1_status(self, request: http.Request, state: dict[str, Any], name: str) -> http.Reply:
        endpoint = self.endpoint_named(name)
        ready = endpoint.ready
        _label_model(state, endpoint)
        return http.Reply(200, http.json_bytes({"name": name, "ready": ready}))

    async def model_info(self, request: http.Request, state: dict[str, Any], name: str) -> http.Reply:
        """What a client needs to call the model: its inputs and an example body known to be valid."""
        endpoint = self.endpoint_named(name)
        _label_model(state, endpoint)
        body: dict[str, Any] = {"name": name, "models": [public.public_ref(r) for r in endpoint.spec.models],
                                "versions": list(endpoint.runners), "ready": endpoint.ready}
        if endpoint.runners:
            model = endpoint.runner().model
            body["inputs"] = [c.model_dump(exclude={"pandas_dtype"}) for c in model.signature.inputs]
            body["outputs"] = model.signature.outputs.model_dump()
            example = self._examples.get(model.ref)
            if example is None:  # made once per model: it reads the profile
                example = self._examples[model.ref] = model_example(model)
            body["example"] = {"instances": [example]}
            runner = endpoint.runner()
            body["runtime"] = {"name": model.manifest.runtime.name,
                               "compiled": bool(getattr(model.runtime_model, "compiled", False)),
                               "compile_status": runner.compile_status}
        return http.Reply(200, http.json_bytes(body))

    async def openapi(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        loaded = sum(len(e.runners) for e in self.endpoints.values())
        if self._openapi is None or self._openapi[0] != loaded:
            models = {e.name: e.runner().model if e.runners else None for e in self.endpoints.values()}
            self._openapi = (loaded, http.json_bytes(openapi_document(self.spec, models)))
        return http.Reply(200, self._openapi[1])

    async def docs(self, request: http.Request, state: dict[str, Any]) -> http.Reply:
        return http.Reply(200, docs.page(), list(docs.DOCS_HEADERS), content_type="text/html; charset=utf-8")

    async def docs_asset(self, request: http.Request, state: dict[str, Any], name: str) -> http.Reply:
        found = docs.asset(name)
        if found is None:
            raise NotFoundError("no such asset of the docs")
        return http.Reply(200, found.body, list(docs.DOCS_HEADERS), content_type=found.content_type)

    # -- shared steps --------------------------------------------------------------------------------------
    def endpoint_named(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise NotFoundError(f"no model named {name!r} is served here")
        return endpoint

    async def _admit(self, request: http.Request, state: dict[str, Any], name: str,
                     version: str | None) -> tuple[ModelRunner, Any]:
        runner = self.endpoint_named(name).runner(version)
        state["model"], state["version"] = runner.model.name, runner.model.version
        http.check_json_content_type(request)
        body = await self.read_body(request, runner)
        try:
            payload = json_body.loads(body)
        except json_body.JSONBodyError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadRequest("body must be a JSON object")
        return runner, payload

    async def read_body(self, request: http.Request, runner: ModelRunner) -> bytes:
        """The body of a request for ``runner``: while it is read, the model's batcher waits for it (up to
        ``max_latency_ms``) rather than sending a batch without it."""
        batcher = runner.batcher
        batcher.coming += 1
        try:
            return await request.body(self.max_body)
        finally:
            batcher.coming -= 1

    async def infer(self, runner: ModelRunner, data: Any, *, want_proba: bool, state: dict[str, Any]) -> Outcome:
        """The model's answer, or 504 at the request's deadline (kept by the batcher's timer, queued or in
        flight: no timer per request)."""
        try:
            outcome = await runner.infer(data, want_proba=want_proba, deadline=time.monotonic() + self.timeout_s)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"no answer within {self.timeout_s * 1000:.0f} ms") from exc
        state["rows"] = len(outcome.predictions)
        return outcome


def _label_model(state: dict[str, Any], endpoint: Endpoint) -> None:
    """Label the request's metrics with the endpoint's primary model, once it is loaded."""
    if endpoint.runners:
        model = next(iter(endpoint.runners.values())).model
        state["model"], state["version"] = model.name, model.version


def _depth(runner: ModelRunner) -> Callable[[], float]:
    return lambda: float(runner.batcher.depth)


def _jsonable(values: np.ndarray) -> Any:
    return values if values.dtype.kind in "biuf" else values.tolist()
