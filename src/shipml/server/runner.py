"""Run the app under uvicorn (uvloop + httptools) or granian (``server.http``), with graceful shutdown and
several worker processes.

On SIGTERM (or SIGINT) a worker first drains: readiness turns 503 at once while requests keep being served for
``drain_delay_s`` (so load balancers stop sending traffic), then the server stops accepting, lets in-flight
requests finish and exits - all within ``graceful_timeout_s``. A second signal exits at once. This module
does it for uvicorn; ``rsgi.py`` does the same for granian.

Several workers share one port: for uvicorn the parent binds the socket and passes it to each worker; granian
binds every worker's socket with SO_REUSEPORT, so the parent only checks that the port is free.

Against slow and numerous clients each worker has a header timeout, a body timeout and a cap on its open
connections (``limits``): ``uvicorn_http.py`` adds them to uvicorn, ``rsgi.py`` sets granian's. The cap is
lowered to what the open-files limit allows (:func:`connection_cap`), whose soft value is raised first.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from shipml.errors import SpecError
from shipml.registry.registry import Registry
from shipml.server.app import ShipmlApp
from shipml.spec import DeploymentSpec

if TYPE_CHECKING:
    from shipml.server.auth import TokenGate

log = logging.getLogger("shipml.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: ShipmlApp, drain_delay_s: float) -> None:
        super().__init__(config)
        self.shipml_app = app
        self.drain_delay_s = drain_delay_s
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            self.force_exit = True
            return
        self._draining = True
        self.shipml_app.begin_drain(f"signal {sig}")
        timer = threading.Timer(self.drain_delay_s, self._stop)
        timer.daemon = True
        timer.start()

    def _stop(self) -> None:
        self.should_exit = True


#: Young-generation collections every 20,000 new objects rather than 700: parsing a 100-row JSON body alone makes
#: hundreds, and each collection has a fixed cost (~9% more 100-row requests per second measured on one core).
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("shipml.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    server_handler = logging.StreamHandler(sys.stderr)
    server_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("shipml")
    if not root.handlers:
        root.addHandler(server_handler)
    root.setLevel(level)


def build_app(spec: DeploymentSpec, registry: Registry | None = None) -> tuple[ShipmlApp, Any]:
    """The app, and the ASGI callable to serve: the app wrapped in its middleware."""
    app, gate = build_parts(spec, registry)
    if gate is not None:
        from shipml.server.auth import AuthMiddleware

        return app, AuthMiddleware.over(app, gate)  # type: ignore[arg-type]
    return app, app


def build_parts(spec: DeploymentSpec, registry: Registry | None = None) -> tuple[ShipmlApp, TokenGate | None]:
    """The app, and the token gate every request must pass (None when auth is off)."""
    app = ShipmlApp(spec, registry, load_before_serving=spec.server.workers > 1, own_process=True)
    if not spec.auth.enabled:
        return app, None
    from shipml.server.auth import TokenGate, TokenStore, default_token_path

    if spec.auth.tokens_file is None and app.registry.local_directory is None:
        raise SpecError(f"auth.tokens_file is needed with a registry in an object store ({app.registry.location}):"
                        " tokens live in a local file")
    store = TokenStore(spec.auth.tokens_file or default_token_path(app.registry.local_directory))
    only = spec.endpoints[0].name if len(spec.endpoints) == 1 else None
    return app, TokenGate(store, metrics_auth=spec.auth.metrics_auth, default_model=only,
                          open_docs=spec.auth.open_docs, on_refused=app.count_refused)


#: Open files a worker keeps for itself besides its connections (model files, logs, metric files, pipes).
FD_RESERVE = 256


def connection_cap(max_connections: int) -> int:
    """``max_connections``, or fewer when the process's open-files limit does not allow as many (a server that
    runs out of descriptors fails every accept); the soft limit is raised towards the hard one first."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to check
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    cap = max(16, soft - FD_RESERVE)
    log.warning("the open-files limit (%d) allows %d connections per worker, not the %d of limits.max_connections:"
                " raise it (ulimit -n) to serve more", soft, cap, max_connections)
    return cap


def _config(spec: DeploymentSpec, app: ShipmlApp | None = None, gate: TokenGate | None = None) -> uvicorn.Config:
    """uvicorn's settings for serving ``app`` (None: only to bind the shared socket of several workers). uvicorn
    runs the process and the app's lifespan; each connection is shipml's own HTTP/1 protocol, which calls the
    app directly (``uvicorn_http.py``)."""
    from shipml.server.uvicorn_http import ConnectionGuard, protocol_for

    limits = spec.limits
    protocol: Any = "httptools"
    asgi: Any = app  # the lifespan's app
    if app is not None:
        guard = ConnectionGuard(limits.header_timeout_s, connection_cap(limits.max_connections),
                                draining=lambda: app.draining)
        protocol = protocol_for(guard, app, gate)
    return uvicorn.Config(
        asgi, host=spec.server.host, port=spec.server.port, loop="uvloop", http=protocol, ws="none",
        lifespan="on", access_log=False, log_level="warning",
        timeout_graceful_shutdown=int(spec.server.graceful_timeout_s),
        # idle keep-alive connections are closed by the header timeout; uvicorn's own timer never before it
        timeout_keep_alive=math.ceil(limits.header_timeout_s),
        server_header=False, date_header=True, log_config=None,
        proxy_headers=False,  # client addresses are not used; X-Forwarded-* is left to the proxy in front
    )


def _run_uvicorn(spec: DeploymentSpec, sock: socket.socket | None) -> None:
    configure_logging()
    tune_gc()
    app, gate = build_parts(spec)
    server = DrainingServer(_config(spec, app, gate), app, spec.server.drain_delay_s)
    server.run(sockets=[sock] if sock is not None else None)


#: granian's Rust side allocates with jemalloc, which returns freed memory to the system only while it keeps
#: allocating - unless a background thread does it: after 2,500 slow clients had gone, an idle granian worker
#: kept ~50 MB of their buffers without it, ~9 MB with it. Read once, when granian's native module loads.
JEMALLOC_CONF = ("_RJEM_MALLOC_CONF", "background_thread:true")


def _run_granian(spec: DeploymentSpec, address: str | None) -> None:
    name, value = JEMALLOC_CONF
    os.environ.setdefault(name, value)  # an operator's own setting wins
    from shipml.server.rsgi import serve_granian

    configure_logging()
    tune_gc()
    serve_granian(spec, address)


def serve(spec: DeploymentSpec) -> None:
    """Serve until a signal says stop. Blocks."""
    granian = spec.server.http == "granian"
    run: Any = _run_granian if granian else _run_uvicorn
    if spec.server.workers == 1:
        run(spec, None)
        return
    listener: socket.socket | str  # what each worker listens with: uvicorn's shared socket, or granian's address
    if granian:
        from shipml.server.rsgi import listen_address

        listener = listen_address(spec.server.host, spec.server.port)
    else:
        listener = _config(spec).bind_socket()
    metrics_dir = _multiprocess_metrics_dir()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run, args=(spec, listener), name=f"shipml-worker-{i}")
               for i in range(spec.server.workers)]
    for w in workers:
        w.start()
    stopping = threading.Event()

    def forward(sig: int, frame: FrameType | None) -> None:
        stopping.set()
        for w in workers:
            if w.pid is not None and w.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for w in workers:
            w.join()
    finally:
        if isinstance(listener, socket.socket):
            listener.close()
        if metrics_dir is not None:
            metrics_dir.cleanup()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        log.error("worker(s) %s exited with an error", ", ".join(failed))
        sys.exit(1)


def _multiprocess_metrics_dir() -> tempfile.TemporaryDirectory[str] | None:
    """A fresh directory for the workers' metric files (inherited through the environment by spawned workers),
    unless the operator set PROMETHEUS_MULTIPROC_DIR already - then it is theirs to manage."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = tempfile.TemporaryDirectory(prefix="shipml-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory.name
    return directory
