"""Prometheus metrics of one server process, in their own registry (several apps may share a process).

With ``--workers N`` each worker is its own process, and a scrape reaches one of them at random. The runner then
sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: every worker writes its values to files there, and
whichever worker answers a scrape renders the sum over all of them (prometheus_client's multiprocess mode).
Gauges say how they combine: queue depth is summed over live workers, readiness is the minimum.

Per-request figures (requests by code, request latency) are counted on the event loop for every request. In one
process they are plain numbers, turned into Prometheus samples only when scraped (:class:`RequestStats`): an
increment of prometheus_client's locked values costs ~10x more, more than some requests' own work. With several
workers they go through prometheus_client's files, the only way whichever worker answers a scrape sees them all.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from shipml.batching.batcher import BatchStats
from shipml.release.shadow import Disagreement

if TYPE_CHECKING:
    from shipml.monitoring.monitor import Monitor
    from shipml.server.monitor_metrics import MonitorCollector, PrometheusCounters

REQUESTS_HELP = "HTTP requests by route, model, version, variant and status code"
LATENCY_HELP = "Request latency, receive to response"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._children: dict[tuple[str, str, str, str, int], tuple[Any, Any]] = {}
        self._monitor: MonitorCollector | None = None
        r = self.registry
        if self.multiprocess_dir is None:
            self.local: RequestStats | None = RequestStats(LATENCY_BUCKETS)
            r.register(self.local)
        else:
            self.local = None
            self.requests = Counter("shipml_requests", REQUESTS_HELP, ["route", "model", "version", "variant", "code"],
                                    registry=r)
            self.latency = Histogram("shipml_request_latency_seconds", LATENCY_HELP,
                                     ["route", "model", "version", "variant"], buckets=LATENCY_BUCKETS, registry=r)
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
        self.swaps = Counter("shipml_model_swaps", "Changes of what an endpoint serves (alias moved, canary started"
                             " or ended): done, or failed (the new version failed to load or its golden check; the"
                             " old one kept serving)", ["endpoint", "outcome"], registry=r)
        self.canary_aborts = Counter("shipml_canary_aborts", "Canaries this server aborted (a limit broken or a"
                                     " failed load)", ["endpoint"], registry=r)
        self.shadow_requests = Counter("shipml_shadow_requests", "Copies of requests sent to shadow models, by"
                                       " outcome (ok, error, rejected, timeout, not_loaded)",
                                       ["endpoint", "version", "outcome"], registry=r)
        self.shadow_rows = Counter("shipml_shadow_rows", "Rows a shadow model answered", ["endpoint", "version"],
                                   registry=r)
        self.shadow_label_disagreements = Counter(
            "shipml_shadow_label_disagreements", "Rows whose label from the shadow differs from the answer's",
            ["endpoint", "version"], registry=r)
        self.shadow_proba_abs_diff = Counter(
            "shipml_shadow_proba_abs_diff_sum", "Sum over rows of the mean absolute difference between the shadow's"
            " and the answer's class probabilities (divide by shipml_shadow_proba_rows_total for the mean)",
            ["endpoint", "version"], registry=r)
        self.shadow_proba_rows = Counter("shipml_shadow_proba_rows", "Rows compared by probability",
                                         ["endpoint", "version"], registry=r)

    def monitor_counters(self) -> PrometheusCounters:
        """The prediction log's, feedback's and webhook's counters (monitoring on)."""
        from shipml.server.monitor_metrics import PrometheusCounters

        return PrometheusCounters(self.registry)

    def watch(self, monitor: Monitor) -> None:
        """Export the monitor's figures (drift, live performance, alerts) at each scrape."""
        from shipml.server.monitor_metrics import MonitorCollector

        self._monitor = MonitorCollector(monitor)
        if self.multiprocess_dir is None:
            self.registry.register(self._monitor)

    def observe_request(self, route: str, model: str, version: str, variant: str, status: int,
                        seconds: float) -> None:
        """Count one request and, for model routes, its latency."""
        if self.local is not None:
            self.local.observe(route, model, version, variant, status, seconds)
            return
        # The labelled children are looked up once per label set and kept: ``labels()`` costs more than the
        # increment itself.
        key = (route, model, version, variant, status)
        children = self._children.get(key)
        if children is None:
            latency = self.latency.labels(route, model, version, variant) if model else None
            children = self._children[key] = (self.requests.labels(route, model, version, variant, str(status)),
                                              latency)
        children[0].inc()
        if children[1] is not None:
            children[1].observe(seconds)

    def swap(self, endpoint: str, outcome: str) -> None:
        self.swaps.labels(endpoint, outcome).inc()

    def canary_aborted(self, endpoint: str) -> None:
        self.canary_aborts.labels(endpoint).inc()

    def shadow(self, endpoint: str, version: str, outcome: str, disagreement: Disagreement | None) -> None:
        self.shadow_requests.labels(endpoint, version, outcome).inc()
        if disagreement is not None:
            self.shadow_rows.labels(endpoint, version).inc(disagreement.rows)
            self.shadow_label_disagreements.labels(endpoint, version).inc(disagreement.labels_differ)
            if disagreement.proba_rows:
                self.shadow_proba_abs_diff.labels(endpoint, version).inc(disagreement.proba_abs_diff_sum)
                self.shadow_proba_rows.labels(endpoint, version).inc(disagreement.proba_rows)

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
        if self._monitor is not None:  # figures merged over the workers by the monitor itself
            combined.register(self._monitor)
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


class RequestStats:
    """Requests by (route, model, version, variant, code) and request latency by (route, model, version, variant)
    as plain numbers,
    collected into Prometheus samples at scrape time. Updated and collected on the event loop's thread only."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = list(buckets)
        self.requests: dict[tuple[str, str, str, str, int], int] = {}
        self.latency: dict[tuple[str, str, str, str], list[float]] = {}  # per bucket (+Inf last), then the sum

    def observe(self, route: str, model: str, version: str, variant: str, status: int, seconds: float) -> None:
        key = (route, model, version, variant, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if model:
            counts = self.latency.get(key[:4])
            if counts is None:
                counts = self.latency[key[:4]] = [0.0] * (len(self.bounds) + 2)
            counts[bisect.bisect_left(self.bounds, seconds)] += 1
            counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("shipml_requests", REQUESTS_HELP,
                                       labels=["route", "model", "version", "variant", "code"])
        for (route, model, version, variant, status), n in sorted(self.requests.items()):
            requests.add_metric([route, model, version, variant, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("shipml_request_latency_seconds", LATENCY_HELP,
                                        labels=["route", "model", "version", "variant"])
        edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for labels, counts in sorted(self.latency.items()):
            cumulative, total = [], 0.0
            for edge, count in zip(edges, counts[:-1], strict=True):
                total += count
                cumulative.append((edge, total))
            latency.add_metric(list(labels), cumulative, counts[-1])
        yield latency
