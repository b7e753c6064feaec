"""Continuous load against a server on 127.0.0.1, for end-to-end release tests: N keep-alive clients (one thread
and one ``http.client`` connection each) send the same request over and over while a test changes what is served,
and every answer and every connection-level error is recorded with its monotonic time::

    with Traffic(server.url + "/models/churn/predict", body={"instances": [ROW]}, clients=8) as traffic:
        time.sleep(1)
        move_the_alias()
        swapped = time.monotonic()
        time.sleep(3)
    result = traffic.result()
    assert result.non_2xx == [] and result.errors == []
    assert result.versions(since=swapped + 2) == {"2.0.0"}

Every loop is bounded in count (``max_requests``, over all clients) and in time (``max_seconds``); leaving the
``with`` block stops the clients. Only loopback addresses are accepted.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson

VERSION_HEADER = "x-shipml-version"
VARIANT_HEADER = "x-shipml-variant"

HeadersFor = Callable[[int], Mapping[str, str]]
Extract = Callable[[bytes], Hashable]


@dataclass(frozen=True, slots=True)
class Response:
    """One answer: when its request was sent and when the answer was read (``time.monotonic()``)."""

    client: int
    n: int  # the request's number, unique over all clients (what ``headers_for`` was called with)
    sent: float
    done: float
    status: int
    version: str | None
    variant: str | None
    headers: Mapping[str, str] | None = None  # the per-request headers sent, if any
    value: Hashable = None  # what ``extract`` made of a 2xx body (None without ``extract``)
    body: bytes = b""  # the first bytes of a non-2xx body, for messages

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    """A request that got no HTTP answer: refused, reset, closed early, timed out."""

    client: int
    n: int
    sent: float
    done: float
    error: str  # the exception's type name
    message: str


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; NaN when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Result:
    """Everything the clients saw, in the order answers arrived (``responses`` sorted by ``done``)."""

    responses: tuple[Response, ...]
    errors: tuple[ConnectionFailure, ...]
    attempts: int  # requests started; every one is in ``responses`` or ``errors``
    started: float
    stopped: float
    connections: int  # TCP connections opened (1 per client plus reconnects after errors or Connection: close)

    @property
    def by_status(self) -> Counter[int]:
        return Counter(r.status for r in self.responses)

    @property
    def by_release(self) -> Counter[tuple[str | None, str | None]]:
        """How many answers each (version, variant) gave."""
        return Counter((r.version, r.variant) for r in self.responses)

    @property
    def by_error(self) -> Counter[str]:
        return Counter(e.error for e in self.errors)

    @property
    def non_2xx(self) -> list[Response]:
        return [r for r in self.responses if not 200 <= r.status < 300]

    def window(self, since: float = -math.inf, until: float = math.inf) -> list[Response]:
        """Answers to requests sent at ``since`` or later and before ``until``."""
        return [r for r in self.responses if since <= r.sent < until]

    def versions(self, since: float = -math.inf, until: float = math.inf) -> set[str | None]:
        return {r.version for r in self.window(since, until)}

    def variants(self, since: float = -math.inf, until: float = math.inf) -> set[str | None]:
        return {r.variant for r in self.window(since, until)}

    def last_sent(self, predicate: Callable[[Response], bool]) -> float | None:
        """When the last request whose answer matches ``predicate`` was sent (None: no such answer)."""
        return max((r.sent for r in self.responses if predicate(r)), default=None)

    def first_sent(self, predicate: Callable[[Response], bool]) -> float | None:
        return min((r.sent for r in self.responses if predicate(r)), default=None)

    def latency_ms(self, since: float = -math.inf, until: float = math.inf,
                   quantiles: Iterable[float] = (50, 90, 99)) -> dict[str, float]:
        """Latency percentiles in ms (keys ``p50``, ``p90``, ``p99``, ``max``) of the answers sent in the window."""
        values = [r.latency * 1000 for r in self.window(since, until)]
        out = {f"p{q:g}": percentile(values, q) for q in quantiles}
        out["max"] = max(values, default=math.nan)
        return out

    def summary(self) -> str:
        """One line for assertion messages."""
        lat = self.latency_ms()
        return (f"{self.attempts} requests in {self.stopped - self.started:.1f} s, statuses {dict(self.by_status)},"
                f" releases {dict(self.by_release)}, errors {dict(self.by_error)}, {self.connections} connections,"
                f" p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms")


@dataclass
class _Client:
    index: int
    quota: int
    responses: list[Response] = field(default_factory=list)
    errors: list[ConnectionFailure] = field(default_factory=list)
    attempts: int = 0
    connections: int = 0


class Traffic:
    """``clients`` keep-alive connections, each sending ``body`` to ``url`` in a loop until the ``with`` block
    ends, ``max_requests`` requests were sent over all clients, or ``max_seconds`` passed.

    ``body``: bytes, or anything JSON-serialisable (sent as ``application/json``). ``headers_for(n)``: extra
    headers for request number ``n`` (unique over all clients: client ``c`` sends numbers ``c``, ``c + clients``,
    ...), e.g. ``lambda n: {"X-User-ID": f"user-{n % 1000}"}``. ``extract(body)``: what to keep of each 2xx
    body (e.g. the prediction), recorded as ``Response.value``; without it bodies are read and dropped.
    ``timeout``: seconds a request may take before it counts as an error. ``error_pause_s``: how long a client
    waits after a connection error before it connects again (a dead server is not hammered).
    """

    def __init__(self, url: str, *, body: Any, clients: int = 8, headers_for: HeadersFor | None = None,
                 extract: Extract | None = None, max_requests: int = 200_000, max_seconds: float = 60.0,
                 timeout: float = 10.0, error_pause_s: float = 0.01, method: str = "POST") -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Traffic needs an http:// URL with a host, got {url!r}")
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"Traffic only sends to loopback addresses (127.0.0.0/8), got {parts.hostname!r}")
        if clients < 1 or max_requests < clients:
            raise ValueError(f"need clients >= 1 and max_requests >= clients, got {clients} and {max_requests}")
        if not 0 < max_seconds <= 600:
            raise ValueError(f"max_seconds must be within (0, 600], got {max_seconds}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.method = method
        self.body = body if isinstance(body, bytes) else orjson.dumps(body)
        self.base_headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        self.headers_for = headers_for
        self.extract = extract
        self.timeout = timeout
        self.error_pause_s = error_pause_s
        self.max_seconds = max_seconds
        self.clients = [_Client(i, max_requests // clients + (i < max_requests % clients)) for i in range(clients)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self._stopped = 0.0

    # -- running -----------------------------------------------------------------------------------------------
    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("this Traffic already ran; make a new one")
        self._started = time.monotonic()
        deadline = self._started + self.max_seconds
        ready = threading.Barrier(len(self.clients) + 1)
        self._threads = [threading.Thread(target=self._run, args=(c, deadline, ready), daemon=True,
                                          name=f"traffic-{c.index}") for c in self.clients]
        for thread in self._threads:
            thread.start()
        ready.wait(timeout=30)  # every client has its thread running before the test goes on

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"traffic clients {alive} did not stop")
        if not self._stopped:
            self._stopped = time.monotonic()

    def wait(self, seconds: float) -> None:
        """Sleep for ``seconds``, or until every client is done (its count or time is up), whichever comes first."""
        until = time.monotonic() + seconds
        while any(t.is_alive() for t in self._threads):
            left = until - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.02))

    def _connect(self, client: _Client) -> http.client.HTTPConnection:
        client.connections += 1
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _run(self, client: _Client, deadline: float, ready: threading.Barrier) -> None:
        ready.wait(timeout=30)
        conn, fresh = self._connect(client), True
        step = len(self.clients)
        try:
            while client.attempts < client.quota and not self._stop.is_set():
                if time.monotonic() >= deadline:
                    break
                n = client.index + client.attempts * step
                client.attempts += 1
                extra = self.headers_for(n) if self.headers_for is not None else None
                headers = {**self.base_headers, **extra} if extra else self.base_headers
                sent = time.monotonic()
                try:
                    if conn.sock is None and not fresh:
                        client.connections += 1  # http.client reconnects by itself after Connection: close
                    fresh = False
                    conn.request(self.method, self.path, body=self.body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException) as exc:
                    client.errors.append(ConnectionFailure(client.index, n, sent, time.monotonic(),
                                                           type(exc).__name__, str(exc)[:200]))
                    conn.close()
                    self._stop.wait(self.error_pause_s)
                    conn, fresh = self._connect(client), True
                    continue
                done = time.monotonic()
                ok = 200 <= answer.status < 300
                value = self.extract(data) if ok and self.extract is not None else None
                client.responses.append(Response(
                    client.index, n, sent, done, answer.status, answer.getheader(VERSION_HEADER),
                    answer.getheader(VARIANT_HEADER), extra, value, b"" if ok else data[:300]))
        finally:
            conn.close()

    # -- results -----------------------------------------------------------------------------------------------
    def result(self) -> Result:
        """What the clients saw so far (call it after the ``with`` block for the whole run)."""
        responses = sorted((r for c in self.clients for r in list(c.responses)), key=lambda r: r.done)
        errors = sorted((e for c in self.clients for e in list(c.errors)), key=lambda e: e.done)
        return Result(tuple(responses), tuple(errors), sum(c.attempts for c in self.clients), self._started,
                      self._stopped or time.monotonic(), sum(c.connections for c in self.clients))
