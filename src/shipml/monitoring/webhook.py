"""The alert webhook: each alert event POSTed as JSON to the spec's URL, off the caller's thread.

``send`` only appends to a bounded queue and returns (it never blocks, never raises): a receiver that is down,
slow or hanging delays nothing but its own deliveries. One daemon thread delivers the queue in order. A
connection error, a timeout, a 5xx or a 429 is retried up to ``retries`` times with exponential back-off and
jitter (``backoff_s`` x 2^attempt, capped at ``max_backoff_s``, each wait drawn between half and all of it; a
``Retry-After`` in seconds is honoured up to the cap); any other answer outside 2xx (a 4xx, a redirect) is not
retried. Outcomes are counted: ``sent``, ``failed`` (gave up), ``dropped`` (queue full, or still queued at
``close``); ``on_outcome`` (e.g. the ``shipml_alert_webhook_total`` counter) hears each one. Headers of the spec
(an Authorization token, say) are sent but never logged.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson

from shipml.monitoring.alerts import AlertEvent
from shipml.monitoring.spec import WebhookSpec

__all__ = ["Webhook"]

log = logging.getLogger("shipml.monitoring.webhook")

Outcome = Literal["sent", "failed", "dropped"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a detour: urllib would turn the POST into a GET without its body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class Webhook:
    """Delivers alert events to ``spec.url`` (module docstring)."""

    def __init__(self, spec: WebhookSpec, *, max_queue: int = 1000, backoff_s: float = 0.5,
                 max_backoff_s: float = 60.0, on_outcome: Callable[[Outcome], None] | None = None) -> None:
        if max_queue < 1 or not backoff_s >= 0 or not max_backoff_s >= 0:
            raise ValueError("max_queue must be >= 1 and the back-off times >= 0")
        self.spec = spec
        self.max_queue = max_queue
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._on_outcome = on_outcome
        self._queue: deque[bytes] = deque()
        self._lock = threading.Condition()
        self._closing = False
        self._deadline = float("inf")  # monotonic time after which close() gives up on deliveries
        self._stopped = False  # close() has given up: the thread ends
        self._in_flight = False  # an event is being delivered (close() counts it as failed if it gives up)
        self._counts: dict[Outcome, int] = {"sent": 0, "failed": 0, "dropped": 0}
        self._headers = {"Content-Type": "application/json", "User-Agent": "shipml-alerts", **spec.headers}
        self._thread = threading.Thread(target=self._run, name="shipml-webhook", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------------------------
    def send(self, event: AlertEvent | Mapping[str, Any]) -> None:
        """Queue ``event`` for delivery (its :meth:`AlertEvent.to_dict`); never blocks, never raises."""
        try:
            body = orjson.dumps(event.to_dict() if isinstance(event, AlertEvent) else dict(event))
        except (TypeError, orjson.JSONEncodeError):
            log.exception("alert webhook: an event that is not JSON was dropped")
            self._count("dropped")
            return
        with self._lock:
            if self._closing or len(self._queue) >= self.max_queue:
                accepted = False
            else:
                self._queue.append(body)
                self._lock.notify()
                accepted = True
        if not accepted:
            self._count("dropped")

    @property
    def sent(self) -> int:
        return self._counts["sent"]

    @property
    def failed(self) -> int:
        return self._counts["failed"]

    @property
    def dropped(self) -> int:
        return self._counts["dropped"]

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking events; deliver what is queued for up to ``timeout_s`` seconds, then give up: events still
        queued count as dropped, one still being delivered (a hanging receiver) as failed. Returns within
        ``timeout_s`` (plus a moment) whatever the receiver does; the counts are final when it returns."""
        start = time.monotonic()
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = start + max(timeout_s, 0.0)
            self._lock.notify_all()
        self._thread.join(max(self._deadline - time.monotonic(), 0.0))
        with self._lock:
            self._stopped = True
            left = len(self._queue)
            self._queue.clear()
            abandoned, self._in_flight = self._in_flight, False
            self._lock.notify_all()
        self._count("dropped", left)
        if abandoned:
            self._count("failed")

    # -- the delivery thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue or self._stopped:
                    return
                body = self._queue.popleft()
                self._in_flight = True
            delivered = self._deliver(body)
            with self._lock:
                counted, self._in_flight = self._in_flight, False  # close() may have counted it already
            if counted:
                self._count("sent" if delivered else "failed")

    def _deliver(self, body: bytes) -> bool:
        attempt = 0
        while True:
            retry, wait, why = self._post(body)
            if not retry and why is None:
                return True
            if not retry or attempt >= self.spec.retries:
                log.warning("alert webhook %s: giving up after %d attempt(s): %s", self._where(), attempt + 1, why)
                return False
            delay = min(self.max_backoff_s, self.backoff_s * 2.0**attempt) * random.uniform(0.5, 1.0)
            if wait is not None:
                delay = min(max(delay, wait), self.max_backoff_s)
            attempt += 1
            if not self._back_off(delay):
                log.warning("alert webhook %s: closing, undelivered: %s", self._where(), why)
                return False

    def _back_off(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False at once when close()'s deadline comes first."""
        end = time.monotonic() + delay
        with self._lock:
            while True:
                now = time.monotonic()
                if now >= self._deadline or self._stopped:
                    return False
                if now >= end:
                    return True
                self._lock.wait(min(end, self._deadline) - now)

    def _post(self, body: bytes) -> tuple[bool, float | None, str | None]:
        """(retry?, Retry-After seconds, what went wrong — None when delivered)."""
        request = urllib.request.Request(self.spec.url, data=body, headers=self._headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.spec.timeout_s) as response:
                response.read()
                return False, None, None
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _seconds(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            return status >= 500 or status == 429, retry_after, f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, DNS, a bad answer
            return True, None, f"{type(exc).__name__}: {exc}"

    def _where(self) -> str:
        """The URL without credentials or query (a token there stays out of the log)."""
        parts = urllib.parse.urlsplit(self.spec.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def _count(self, outcome: Outcome, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[outcome] += n
        if self._on_outcome is not None:
            try:
                for _ in range(n):
                    self._on_outcome(outcome)
            except Exception:
                log.exception("alert webhook: the outcome callback failed")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not worth parsing for a webhook; the back-off applies
    return seconds if 0 <= seconds < float("inf") else None
