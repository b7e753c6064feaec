"""What the engine is asked to do (:class:`Plan`) and what it records (:class:`Samples`, :class:`Progress`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shipml.errors import SpecError

ERR_CONNECT = -1
ERR_TIMEOUT = -2
ERR_RESET = -3
ERR_PROTOCOL = -4
#: What a negative status means.
ERROR_KINDS = {ERR_CONNECT: "connect", ERR_TIMEOUT: "timeout", ERR_RESET: "reset", ERR_PROTOCOL: "protocol"}
#: Requests recorded at most in one run (about 40 bytes each).
MAX_REQUESTS_LIMIT = 50_000_000
#: Requests a closed-loop run records at most unless told otherwise.
DEFAULT_CLOSED_LOOP_MAX = 2_000_000


@dataclass(frozen=True)
class Plan:
    """What to send, where, how fast and for how long. ``requests`` are whole encoded HTTP requests (see
    :func:`shipml.loadtest.payloads.encode_request`), used in turn."""

    host: str
    port: int
    requests: Sequence[bytes]
    duration_s: float
    rate: float | None = None
    concurrency: int | None = None
    connections: int = 64
    timeout_s: float = 10.0
    grace_s: float = 2.0
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.concurrency is None):
            raise SpecError("give a rate (open loop) or a concurrency (closed loop), not both and not neither")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise SpecError(f"rate must be a positive number of requests per second, got {self.rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecError(f"concurrency must be at least 1, got {self.concurrency}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise SpecError(f"duration must be positive, got {self.duration_s} s")
        if self.connections < 1:
            raise SpecError(f"connections must be at least 1, got {self.connections}")
        if not (self.timeout_s > 0 and self.grace_s >= 0):
            raise SpecError("timeout must be positive and grace not negative")
        if not self.requests:
            raise SpecError("no request to send")
        if self.max_requests is not None and not 1 <= self.max_requests <= MAX_REQUESTS_LIMIT:
            raise SpecError(f"max requests must be between 1 and {MAX_REQUESTS_LIMIT:,}, got {self.max_requests}")
        if self.capacity > MAX_REQUESTS_LIMIT:
            raise SpecError(f"{self.capacity:,} requests is more than one run records ({MAX_REQUESTS_LIMIT:,}):"
                            " lower the rate or the duration")

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def pool_size(self) -> int:
        """Connections kept: ``connections`` in open loop, one per worker in closed loop."""
        return self.connections if self.concurrency is None else self.concurrency

    @property
    def capacity(self) -> int:
        """Requests this run may issue at most (the size of the sample arrays)."""
        if self.rate is not None:
            planned = max(1, math.ceil(self.rate * self.duration_s - 1e-9))
            return min(planned, self.max_requests) if self.max_requests else planned
        return self.max_requests or DEFAULT_CLOSED_LOOP_MAX


@dataclass
class Samples:
    """Per-request records of one run; times in seconds from the start. Only the first ``issued`` count."""

    scheduled: np.ndarray  # when the request was due (open loop) or sent (closed loop)
    sent: np.ndarray  # when its bytes were written (NaN: never sent)
    latency: np.ndarray  # answer (or failure) time minus scheduled time
    status: np.ndarray  # HTTP status, or a negative ERROR_KINDS code
    issued: int
    elapsed_s: float  # start to the end of the run, grace included
    queued: int  # requests that waited for a free connection
    connections_opened: int


@dataclass(frozen=True)
class Progress:
    """A live snapshot, for a progress line."""

    elapsed_s: float
    issued: int
    sent: int
    done: int
    rate: float  # answers per second since the last snapshot
    p99_ms: float | None  # over the answers since the last snapshot
    errors: int  # so far


ProgressCallback = Callable[[Progress], None]
