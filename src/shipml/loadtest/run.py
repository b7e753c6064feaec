"""``run_loadtest``: payloads from the model's signature, the engine, then the report. The CLI is a thin layer
over this function."""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipml.errors import SpecError
from shipml.loadtest.generator import run_plan
from shipml.loadtest.payloads import (
    PROTOCOLS,
    Protocol,
    build_bodies,
    encode_request,
    model_info_from_registry,
    model_info_from_server,
    read_payload_file,
    request_path,
    served_model_name,
)
from shipml.loadtest.plan import Plan, ProgressCallback
from shipml.loadtest.report import LoadReport, RunInfo, build_report
from shipml.loadtest.slo import Objective, parse_slo

#: The open-loop rate when neither a rate nor a concurrency is given.
DEFAULT_RATE = 100.0
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|m|h)?\s*", re.IGNORECASE)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | str, what: str = "duration", allow_zero: bool = False) -> float:
    """Seconds from ``30``, ``30s``, ``500ms``, ``2m`` or ``1h``; positive (or zero with ``allow_zero``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise SpecError(f"cannot read {what} {value!r}: expected a number with an optional unit"
                            " (us, ms, s, m, h), e.g. 30s")
        seconds = float(match[1]) * _UNITS[(match[2] or "s").lower()]
    if not (math.isfinite(seconds) and (seconds > 0 or (allow_zero and seconds == 0))):
        raise SpecError(f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Endpoint:
    """Where the load goes: ``scheme://host:port`` and an optional path prefix."""

    base_url: str
    host: str
    port: int
    host_header: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http":
            raise SpecError(f"the load generator speaks plain http://, got {url!r}"
                            " (test a TLS endpoint through its plain-HTTP side or a local port-forward)")
        if not parts.hostname:
            raise SpecError(f"URL {url!r} has no host")
        if parts.query or parts.fragment:
            raise SpecError(f"URL {url!r} must not have a query or fragment: give the server's base URL")
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise SpecError(f"URL {url!r} has a bad port: {exc}") from None
        prefix = parts.path.rstrip("/")
        return cls(f"http://{parts.netloc}{prefix}", parts.hostname, port, parts.netloc, prefix)


def run_loadtest(url: str, *, model: str | None = None, rate: float | None = None,
                 concurrency: int | None = None, duration: float | str = 30.0,
                 slo: str | Sequence[Objective] | None = None, protocol: Protocol = "simple", rows: int = 1,
                 ref: str | None = None, registry: Any = None, payload: str | Path | None = None,
                 path: str | None = None, token: str | None = None, connections: int = 64,
                 timeout: float | str = 10.0, grace: float | str = 2.0, max_requests: int | None = None,
                 pool: int = 64, seed: int = 0, progress: ProgressCallback | None = None,
                 progress_interval_s: float = 1.0) -> LoadReport:
    """Load ``url`` (a shipml server's base URL) and report latency, throughput, errors and the SLO verdict.

    Open loop at ``rate`` requests/s (default 100), or closed loop with ``concurrency`` requests in flight, for
    ``duration``. Bodies are generated from the signature and example rows of ``model`` as the server
    describes it (``GET /models/NAME``), or of ``ref`` in ``registry`` (read locally), or are the JSON file
    ``payload`` as it is. ``path`` overrides where they are posted (default: the ``protocol``'s route for the
    model). ``token`` is sent as ``Authorization: Bearer``. ``slo`` is checked (see :func:`parse_slo`).
    """
    objectives = parse_slo(slo) if isinstance(slo, str) or slo is None else list(slo)
    if protocol not in PROTOCOLS:
        raise SpecError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    if rate is not None and concurrency is not None:
        raise SpecError("give a rate (open loop) or a concurrency (closed loop), not both")
    if rate is None and concurrency is None:
        rate = DEFAULT_RATE
    endpoint = Endpoint.parse(url)
    seconds = parse_duration(duration)
    bodies, model_name = _bodies(endpoint, model, protocol, rows, ref, registry, payload, path, token, pool, seed)
    route = path if path is not None else request_path(protocol, model_name or "")
    full_path = endpoint.prefix + route
    headers = {"authorization": f"Bearer {token}"} if token else {}
    requests = [encode_request("POST", full_path, endpoint.host_header, body, headers) for body in bodies]
    plan = Plan(endpoint.host, endpoint.port, requests, seconds, rate=rate, concurrency=concurrency,
                connections=connections, timeout_s=parse_duration(timeout, "timeout"),
                grace_s=parse_duration(grace, "grace", allow_zero=True), max_requests=max_requests)
    samples = run_plan(plan, progress, progress_interval_s)
    info = RunInfo(url=endpoint.base_url, path=route, model=model_name, protocol=protocol if payload is None
                   else "payload file", rows=rows, duration_s=seconds, connections=plan.pool_size, rate=rate,
                   concurrency=concurrency, payloads=len(bodies))
    return build_report(info, samples, objectives)


def _bodies(endpoint: Endpoint, model: str | None, protocol: Protocol, rows: int, ref: str | None,
            registry: Any, payload: str | Path | None, path: str | None, token: str | None, pool: int,
            seed: int) -> tuple[list[bytes], str | None]:
    """The request bodies, and the model name they are for (None for a payload file posted to ``path``)."""
    if payload is not None:
        if ref is not None:
            raise SpecError("give --payload or --ref, not both")
        if model is None and path is None:
            model = served_model_name(endpoint.base_url, token)
        return [read_payload_file(payload)], model
    if ref is not None:
        info = model_info_from_registry(ref, registry, served_as=model)
    else:
        info = model_info_from_server(endpoint.base_url, model or served_model_name(endpoint.base_url, token),
                                      token)
    return build_bodies(info, protocol, rows, pool, seed), info.name
