"""Prometheus metrics of one server process, in their own registry (several apps may share a process).

With ``--workers N`` each worker is its own process, and a scrape reaches one of them at random. The runner then
sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: every worker writes its values to files there, and
whichever worker answers a scrape renders the sum over all of them (prometheus_client's multiprocess mode).
Gauges say how they combine: queue depth is summed over live workers, readiness is the minimum.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shipml.batching.batcher import BatchStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        r = self.registry
        self.requests = Counter("shipml_requests", "HTTP requests by route, model, version and status code",
                                ["route", "model", "version", "code"], registry=r)
        self.latency = Histogram("shipml_request_latency_seconds", "Request latency, receive to response",
                                 ["route", "model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("shipml_inference_latency_seconds", "Time of one batched predict call",
                                   ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("shipml_batch_size_rows", "Rows per predict call", ["model", "version"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.rows = Counter("shipml_rows_predicted", "Rows predicted", ["model", "version"], registry=r)
        self.dropped = Counter("shipml_requests_expired",
                               "Requests dropped before inference: deadline passed or caller gone",
                               ["model", "version"], registry=r)
        self.queue_depth = Gauge("shipml_queue_depth", "Requests waiting for a batch", ["model", "version"],
                                 registry=r, multiprocess_mode="livesum")
        self.ready = Gauge("shipml_ready", "1 when every model is loaded and verified", registry=r,
                           multiprocess_mode="livemin")

    def observe_request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        """Count one request and, for model routes, its latency. The labelled children are looked up once per
        label set and kept: ``labels()`` costs more than the increment itself."""
        key = (route, model, version, status)
        children = self._children.get(key)
        if children is None:
            latency = self.latency.labels(route, model, version) if model else None
            children = self._children[key] = (self.requests.labels(route, model, version, str(status)), latency)
        children[0].inc()
        if children[1] is not None:
            children[1].observe(seconds)

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        return BatchObserver(self, model, version)

    @property
    def multiprocess(self) -> bool:
        return self.multiprocess_dir is not None

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        combined = CollectorRegistry()
        MultiProcessCollector(combined, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(combined)


class BatchObserver:
    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self.inference = metrics.inference.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)
        self.rows = metrics.rows.labels(model, version)
        self.dropped = metrics.dropped.labels(model, version)

    def __call__(self, stats: BatchStats) -> None:
        if stats.dropped:
            self.dropped.inc(stats.dropped)
        if stats.rows:
            self.inference.observe(stats.seconds)
            self.batch_size.observe(stats.rows)
            self.rows.inc(stats.rows)
