"""Judging a running canary by its recent requests: error rate and p99 latency over a sliding window.

The server keeps one :class:`CanaryWatch` per running canary and feeds it every request the canary was asked to
answer (on the event loop, so recording is O(1): a ring buffer and a running error count). The p99 is recomputed
at most every :data:`P99_EVERY` records (and on :attr:`CanaryWatch.summary`), so a verdict costs a comparison.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

__all__ = ["P99_EVERY", "CanaryWatch", "WatchLimits"]

P99_EVERY = 20  # records between two computations of the p99


class WatchLimits(Protocol):
    """What a watch judges by (``shipml.registry.releases.CanaryLimits`` has these fields)."""

    @property
    def max_error_rate(self) -> float: ...  # share of the window's requests that failed, 0 <= x < 1

    @property
    def max_p99_ms(self) -> float | None: ...  # p99 latency over the window, > 0; None: not judged

    @property
    def min_requests(self) -> int: ...  # requests seen before anything is judged, >= 1

    @property
    def window(self) -> int: ...  # how many recent requests are judged, >= min_requests


class CanaryWatch:
    """A sliding window over a canary's last ``limits.window`` requests."""

    __slots__ = ("_errors", "_failed", "_limits", "_next", "_p99", "_p99_at", "_seconds", "_seen", "_window")

    def __init__(self, limits: WatchLimits) -> None:
        _check(limits)
        self._limits = limits
        self._window = int(limits.window)
        self._failed = bytearray(self._window)  # 1 where the request in that slot failed
        self._seconds = [0.0] * self._window
        self._next = 0  # the slot the next record goes to
        self._seen = 0  # requests recorded in all
        self._errors = 0  # failures in the window
        self._p99 = 0.0  # seconds, as of _p99_at records
        self._p99_at = 0

    @property
    def limits(self) -> WatchLimits:
        return self._limits

    def record(self, ok: bool, seconds: float) -> None:
        """One canary request: ``ok`` when the canary answered it, ``seconds`` how long it took (until it failed)."""
        slot = self._next
        failed = 0 if ok else 1
        if self._seen >= self._window:
            self._errors -= self._failed[slot]
        self._failed[slot] = failed
        self._errors += failed
        self._seconds[slot] = math.inf if math.isnan(seconds) else seconds  # NaN: counted as slow
        self._seen += 1
        self._next = slot + 1 if slot + 1 < self._window else 0

    @property
    def requests(self) -> int:
        """Requests in the window."""
        return min(self._seen, self._window)

    def verdict(self) -> str | None:
        """``None`` while the canary is within its limits, or has not yet had ``min_requests`` requests; else the
        reason to abort it."""
        n = self.requests
        limits = self._limits
        if n < limits.min_requests:
            return None
        rate = self._errors / n
        if rate > limits.max_error_rate:
            shown, limit = _distinct(rate * 100, limits.max_error_rate * 100)
            return f"error rate {shown}% over the canary's last {n} requests is above the limit {limit}%"
        if limits.max_p99_ms is not None:
            if self._seen - self._p99_at >= P99_EVERY or self._p99_at < limits.min_requests:
                self._refresh_p99()
            p99_ms = self._p99 * 1000.0
            if p99_ms > limits.max_p99_ms:
                shown, limit = _distinct(p99_ms, limits.max_p99_ms)
                if float(f"{limits.max_p99_ms:g}") == limits.max_p99_ms:
                    limit = f"{limits.max_p99_ms:g}"
                return f"p99 latency {shown} ms over the canary's last {n} requests is above the limit {limit} ms"
        return None

    @property
    def summary(self) -> dict[str, float | int]:
        """The window as numbers: requests, errors, error_rate, p99_ms; and seen (requests recorded in all)."""
        n = self.requests
        if self._p99_at != self._seen:
            self._refresh_p99()
        return {"requests": n, "errors": self._errors, "error_rate": self._errors / n if n else 0.0,
                "p99_ms": self._p99 * 1000.0, "seen": self._seen}

    def _refresh_p99(self) -> None:
        n = self.requests
        self._p99_at = self._seen
        if n == 0:
            self._p99 = 0.0
            return
        values = self._seconds if n == self._window else self._seconds[:n]
        above = n - math.ceil(0.99 * n) + 1  # nearest rank: the ceil(0.99 n)-th smallest is this-th largest
        self._p99 = heapq.nlargest(above, values)[-1]


def _check(limits: WatchLimits) -> None:
    window, least = limits.window, limits.min_requests
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number >= 1, not {window!r}")
    if isinstance(least, bool) or not isinstance(least, int) or not 1 <= least <= window:
        raise ValueError(f"min_requests must be a whole number from 1 to window ({window}), not {least!r}")
    if not 0.0 <= limits.max_error_rate < 1.0:
        raise ValueError(f"max_error_rate must be >= 0 and < 1, not {limits.max_error_rate!r}")
    if limits.max_p99_ms is not None and not 0.0 < limits.max_p99_ms < math.inf:
        raise ValueError(f"max_p99_ms must be a number > 0, not {limits.max_p99_ms!r}")


def _distinct(value: float, limit: float) -> tuple[str, str]:
    """``value`` and ``limit`` written with one decimal, or more when one decimal would show them equal."""
    digits = 1
    while digits < 9 and f"{value:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f}", f"{limit:.{digits}f}"
