"""The Ray Serve application: the same ASGI app ``shipml serve`` runs, as the ingress of one Serve deployment.

Two halves:

- generation (no Ray needed): ``serve_config(spec)`` is a Serve config (``ServeDeploySchema``: proxy location,
  HTTP host and port from the spec's server section, one application whose deployment takes its replicas or
  autoscaling and its CPUs from the spec's ``ray`` section); ``write_serve_app`` writes it as ``serve.yaml`` next
  to a copy of the spec. The spec travels inline in the application's ``args``, so it reaches every node through
  the Serve controller and needs no shared file; its registry is pinned to an absolute path first, because a
  replica's working directory and ``$SHIPML_HOME`` are not the caller's.
- the cluster side (Ray needed): ``app_builder`` is the config's ``import_path`` (a Serve application builder,
  so ``serve run serve.yaml`` and ``serve deploy serve.yaml`` both work); ``deploy`` does the same through the
  Serve Python API and waits until the application runs.

Each replica builds the app with ``build_app`` (auth included), loads its models before it takes traffic - a
replica whose models fail to load or fail their golden check never starts, and the deployment's status says
why - and reports healthy to Serve only while the app is ready. Serve's proxy keeps the route prefix in the
request path (and sets ``root_path``), so the app sees the path below the prefix. Each replica keeps its own
metrics: ``/metrics`` through the proxy answers for the replica that took the request. The spec's
``server.workers`` and ``drain_delay_s`` do not apply here: replicas and Serve's graceful shutdown take their place.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipml._optional import import_optional
from shipml.errors import ConflictError, NotFoundError, ServiceUnavailable, ShipmlError, SpecError
from shipml.registry import local
from shipml.registry.names import Ref
from shipml.registry.registry import Registry
from shipml.server import http
from shipml.server.auth import route_path
from shipml.spec import DeploymentSpec, endpoint_with_refs, load_spec, parse_spec

if TYPE_CHECKING:
    from shipml.server.app import ShipmlApp

IMPORT_PATH = "shipml.deploy.ray_serve:app_builder"
DEPLOYMENT_NAME = "shipml"
CONFIG_FILE = "serve.yaml"
SPEC_FILE = "shipml.yaml"
DEFAULT_STARTUP_TIMEOUT_S = 300.0
LOAD_POLL_S = 0.05

PROXY_LOCATIONS = ("EveryNode", "HeadOnly", "Disabled")  # Serve's ProxyLocation


@dataclass(frozen=True)
class ServeAppOptions:
    """What the spec does not say about a Serve application: its name, its route prefix, where the HTTP proxies
    run, and how long a replica may take to load its models."""

    name: str = "shipml"
    route_prefix: str = "/"
    proxy_location: str = "EveryNode"
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip() or any(c in self.name for c in "/#\n"):
            raise SpecError(f"Ray Serve application name {self.name!r} must be non-empty, without '/', '#' or "
                            "line breaks")
        check_route_prefix(self.route_prefix)
        if self.proxy_location not in PROXY_LOCATIONS:
            raise SpecError(f"proxy location {self.proxy_location!r} is not one of {', '.join(PROXY_LOCATIONS)}")
        if not (math.isfinite(self.startup_timeout_s) and self.startup_timeout_s > 0):
            raise SpecError(f"startup timeout must be a positive number of seconds, not {self.startup_timeout_s}")


def check_route_prefix(prefix: str) -> str:
    """Serve's rules for a route prefix: starts with '/', no trailing '/' (except "/" itself), no braces."""
    if not prefix.startswith("/"):
        raise SpecError(f"route prefix {prefix!r} must start with '/'")
    if prefix != "/" and prefix.endswith("/"):
        raise SpecError(f"route prefix {prefix!r} must not end with '/'")
    if any(c in prefix for c in "{}? #\n"):
        raise SpecError(f"route prefix {prefix!r} must not contain braces, '?', '#', spaces or line breaks")
    return prefix


# -- generation ----------------------------------------------------------------------------------------------
def pinned_spec(spec: DeploymentSpec, registry: str | Path | None = None) -> DeploymentSpec:
    """``spec`` with everything a replica would otherwise resolve against its own working directory or
    environment made absolute: the registry (``registry`` when the spec names none; else ``$SHIPML_HOME`` or
    ``~/.shipml`` as seen here), model packages given as paths, and the auth tokens file."""
    data = spec.model_dump(mode="json", exclude_none=True)
    data["registry"] = Registry(spec.registry or registry).location
    data["endpoints"] = [endpoint_with_refs(e, _absolute_ref) for e in data["endpoints"]]
    tokens = data["auth"].get("tokens_file")
    if tokens:
        data["auth"]["tokens_file"] = str(Path(tokens).expanduser().absolute())
    return parse_spec(data, "pinned spec")


def _absolute_ref(ref: str) -> str:
    r = Ref.parse(ref)
    return str(r.path.absolute()) if r.path is not None else ref


def check_models(spec: DeploymentSpec) -> dict[str, str]:
    """Every model of ``spec`` as it resolves now (ref -> version, or the package directory), or NotFoundError
    naming the ones that do not. Replicas resolve aliases again when they start."""
    registry = Registry(spec.registry)
    found: dict[str, str] = {}
    missing: list[str] = []
    for endpoint in spec.endpoints:
        for ref in spec.refs_of(endpoint):
            r = Ref.parse(ref)
            if r.path is not None:
                if (r.path / "shipml.json").is_file():
                    found[ref] = str(r.path)
                else:
                    missing.append(f"{ref}: no model package (shipml.json) there")
                continue
            try:
                found[ref] = registry.get(r).version
            except ShipmlError as exc:
                missing.append(f"{ref}: {exc}")
    if missing:
        raise NotFoundError(f"models not found in the registry {registry.location}: " + "; ".join(missing))
    return found


def deployment_options(spec: DeploymentSpec) -> dict[str, Any]:
    """The Serve deployment's options from the spec: fixed replicas, or autoscaling between min and max around a
    target of ongoing requests per replica; CPUs per replica; how long a replica may take to stop.
    ``max_ongoing_requests`` is the spec's queue bound (the server's own backpressure answers 503 past it), and
    at least twice the autoscaling target, so the autoscaler can see load above its target."""
    ray = spec.ray
    options: dict[str, Any] = {}
    if ray.num_replicas is not None:
        options["num_replicas"] = ray.num_replicas
    else:
        options["autoscaling_config"] = {"min_replicas": ray.min_replicas, "max_replicas": ray.max_replicas,
                                         "target_ongoing_requests": ray.target_ongoing_requests}
    options["max_ongoing_requests"] = max(spec.limits.max_queue, math.ceil(2 * ray.target_ongoing_requests))
    options["graceful_shutdown_timeout_s"] = spec.server.graceful_timeout_s
    options["ray_actor_options"] = {"num_cpus": ray.num_cpus}
    return options


def serve_args(spec: DeploymentSpec, options: ServeAppOptions) -> dict[str, Any]:
    """The application builder's arguments: the spec inline, and the replicas' startup timeout."""
    return {"spec": spec.model_dump(mode="json", exclude_none=True),
            "startup_timeout_s": options.startup_timeout_s}


def serve_config(spec: DeploymentSpec, options: ServeAppOptions | None = None) -> dict[str, Any]:
    """The Serve config (Ray's ``ServeDeploySchema``) for ``spec``, which should be pinned (``pinned_spec``)."""
    options = options or ServeAppOptions()
    deployment = {"name": DEPLOYMENT_NAME, **deployment_options(spec)}
    return {
        "proxy_location": options.proxy_location,
        "http_options": {"host": spec.server.host, "port": spec.server.port},
        "applications": [{
            "name": options.name,
            "route_prefix": options.route_prefix,
            "import_path": IMPORT_PATH,
            "args": serve_args(spec, options),
            "deployments": [deployment],
        }],
    }


@dataclass(frozen=True)
class ServeAppFiles:
    config: Path
    spec: Path
    url: str


def app_url(spec: DeploymentSpec, options: ServeAppOptions) -> str:
    prefix = "" if options.route_prefix == "/" else options.route_prefix
    return f"http://{spec.server.host}:{spec.server.port}{prefix}"


def write_serve_app(spec: DeploymentSpec, out_dir: str | Path, options: ServeAppOptions | None = None, *,
                    force: bool = False, source: str = "the deployment spec") -> ServeAppFiles:
    """Write ``serve.yaml`` (the Serve config) and ``shipml.yaml`` (the spec it carries) into ``out_dir``, new or
    empty unless ``force`` (then only these two files are replaced, each atomically)."""
    options = options or ServeAppOptions()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConflictError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConflictError(f"output directory {out} is not empty: choose another, or pass --force to replace "
                            f"{CONFIG_FILE} and {SPEC_FILE} in it")
    out.mkdir(parents=True, exist_ok=True)
    config = serve_config(spec, options)
    header = (f"# Ray Serve config generated by shipml from {source}.\n"
              f"# Deploy: serve deploy {CONFIG_FILE} (through the dashboard), serve run {CONFIG_FILE}, or\n"
              f"# shipml ray ... --deploy --address HEAD:PORT. Every node needs shipml installed and must reach\n"
              f"# the registry {spec.registry}.\n")
    local.write_atomic(out / CONFIG_FILE, (header + yaml.safe_dump(config, sort_keys=False)).encode())
    local.write_atomic(out / SPEC_FILE, spec.to_yaml().encode())
    return ServeAppFiles(out / CONFIG_FILE, out / SPEC_FILE, app_url(spec, options))


# -- the replica -----------------------------------------------------------------------------------------------
class ServeIngress:
    """ASGI wrapper for the app behind Serve's HTTP proxy. The proxy keeps the route prefix in the path and sets
    ``root_path``: the app gets the path below it. The proxy also gives every request an ``x-request-id`` (the
    client's, or a new one), which the app echoes, and then adds that same header to the response itself: the
    app's copy is dropped so the client sees it once."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope) or "/"
        if path != scope["path"]:
            scope = {**scope, "path": path}
        if http.AsgiRequest(scope, receive).header("x-request-id") is None:
            await self.app(scope, receive, send)
            return

        async def send_without_request_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_without_request_id)


async def wait_until_loaded(app: ShipmlApp, timeout_s: float) -> None:
    """Until ``app`` has tried every model (it loads them in the background), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not app.loaded:
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(f"the models did not load within {timeout_s:g}s")
        await asyncio.sleep(LOAD_POLL_S)


def not_ready_reason(app: ShipmlApp) -> str:
    errors = [e for endpoint in app.endpoints.values() for e in endpoint.errors.values()]
    if errors:
        return "models failed to load: " + "; ".join(errors)
    if app.draining:
        return "the replica is shutting down"
    return "the models are still loading"


class ShipmlReplica:
    """One Serve replica. Serve's ingress wrapper calls ``__serve_build_asgi_app__`` after the constructor and
    then runs the app's lifespan startup; the models load in between, so the replica starts only when they are
    loaded and have passed their golden check."""

    def __init__(self, spec: dict[str, Any], startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> None:
        from shipml.server.runner import build_app, configure_logging

        configure_logging()
        # shipml_ names: Serve's wrapper class mixes in its own attributes (app, _asgi_app, ...)
        self.shipml_spec = parse_spec(spec, "the Ray Serve replica's spec")
        self.shipml_startup_timeout_s = startup_timeout_s
        self.shipml_app, asgi = build_app(self.shipml_spec)
        self.shipml_asgi = ServeIngress(asgi)

    async def __serve_build_asgi_app__(self) -> Any:
        self.shipml_app.start_loading()
        await wait_until_loaded(self.shipml_app, self.shipml_startup_timeout_s)
        if not self.shipml_app.is_ready:
            raise ServiceUnavailable(not_ready_reason(self.shipml_app))
        return self.shipml_asgi

    def check_health(self) -> None:
        """Serve's health check: a replica is healthy while its app is ready."""
        if not self.shipml_app.is_ready:
            raise ServiceUnavailable(not_ready_reason(self.shipml_app))


# -- the cluster side ------------------------------------------------------------------------------------------
class ServeArgs(BaseModel):
    """The application builder's arguments (``args`` in the Serve config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str | dict[str, Any] = Field(description="path of a deployment spec (reachable where the app is built),"
                                                   " or the spec itself")
    startup_timeout_s: float = Field(DEFAULT_STARTUP_TIMEOUT_S, gt=0, description="longest a replica may take to "
                                                                                  "load its models")


def parse_args(args: object) -> tuple[DeploymentSpec, float]:
    try:
        parsed = ServeArgs.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in exc.errors()[:10])
        raise SpecError(f"Ray Serve application args are invalid: {problems}") from exc
    spec = load_spec(parsed.spec) if isinstance(parsed.spec, str) else parse_spec(parsed.spec, "args.spec")
    return spec, parsed.startup_timeout_s


def _serve() -> Any:
    return import_optional("ray.serve", "ray", "ray[serve]")


def app_builder(args: dict[str, Any]) -> Any:
    """The Serve application builder (``import_path: shipml.deploy.ray_serve:app_builder``): ``args`` is
    ``{"spec": <path or mapping>, "startup_timeout_s": <seconds>}``. The deployment's options come from the
    spec; a config's ``deployments`` section overrides them."""
    spec, startup_timeout_s = parse_args(args)
    serve = _serve()
    ingress = serve.ingress()(ShipmlReplica)
    deployment = serve.deployment(ingress, name=DEPLOYMENT_NAME, **deployment_options(spec))
    return deployment.bind(spec.model_dump(mode="json", exclude_none=True), startup_timeout_s)


def deploy(spec: DeploymentSpec, address: str, options: ServeAppOptions | None = None, *,
           timeout_s: float = 600.0) -> str:
    """Deploy ``spec`` (pinned) to the Ray cluster at ``address`` (or to the one this process is connected to
    already) with the Serve Python API and wait until the application runs - its replicas have loaded their
    models; the URL it answers at."""
    options = options or ServeAppOptions()
    ray = import_optional("ray", "ray", "ray[serve]")
    serve = _serve()
    application = app_builder(serve_args(spec, options))
    started = not ray.is_initialized()  # a caller already connected keeps its connection
    if started:
        try:
            ray.init(address=address, namespace="serve", log_to_driver=False, logging_level="WARNING",
                     configure_logging=False)
        except Exception as exc:  # Ray's own errors, translated here at the boundary
            raise ShipmlError(f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}") \
                from exc
    try:
        serve.start(proxy_location=options.proxy_location,
                    http_options={"host": spec.server.host, "port": spec.server.port})
        serve.run_many([serve.RunTarget(target=application, name=options.name, route_prefix=options.route_prefix)],
                       wait_for_applications_running=False)
        wait_until_running(serve, options.name, timeout_s)
    except ShipmlError:
        raise
    except Exception as exc:  # Ray's own errors, translated here at the boundary
        raise ShipmlError(f"Ray Serve did not deploy {options.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        if started:
            ray.shutdown()
    return app_url(spec, options)


def wait_until_running(serve: Any, name: str, timeout_s: float) -> None:
    """Until Serve says application ``name`` runs; ServiceUnavailable with Serve's reasons when it failed, or is
    still not running after ``timeout_s`` (e.g. no node has the CPUs a replica needs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(name)
        status = str(getattr(app.status, "value", app.status)) if app is not None else "NOT_STARTED"
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise ServiceUnavailable(f"Ray Serve application {name} failed to deploy: {_reasons(app)}")
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(f"Ray Serve application {name} is not running after {timeout_s:g}s (status "
                                     f"{status}){': ' + _reasons(app) if app is not None else ''}")
        time.sleep(0.5)


def _reasons(app: Any) -> str:
    """What Serve says about an application and its deployments, each message cut to its first line and, for
    a replica's traceback, its last (the error itself)."""
    messages = [app.message] + [f"deployment {name}: {info.message}" for name, info in app.deployments.items()]
    reasons = []
    for message in messages:
        lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
        if lines:
            reasons.append(lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}")
    return " ".join(reasons) or "no reason given"
