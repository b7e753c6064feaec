"""Per-request metrics kept as plain numbers (one process) expose exactly what prometheus_client's own Counter
and Histogram expose for the same observations, and the multiprocess path still writes prometheus_client's files."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from shipml.server.metrics import LATENCY_BUCKETS, ServerMetrics

OBSERVED = [("predict", "churn", "1.0.0", "stable", 200, s)
            for s in (0.0001, 0.0005, 0.0005001, 0.001, 0.003, 0.7, 11.0)]
OBSERVED += [("predict", "churn", "1.0.0", "stable", 422, 0.002), ("v2_infer", "churn", "1.1.0", "canary", 200, 0.02),
             ("predict", "churn", "1.1.0", "canary", 200, 0.003),
             ("/healthz", "", "", "", 200, 0.0001), ("unknown", "", "", "", 404, 0.0002)]


def samples(text: str, names: tuple[str, ...]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(names) and not sample.name.endswith("_created"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def reference() -> str:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    requests = Counter("shipml_requests", "r", ["route", "model", "version", "variant", "code"], registry=registry)
    latency = Histogram("shipml_request_latency_seconds", "l", ["route", "model", "version", "variant"],
                        buckets=LATENCY_BUCKETS, registry=registry)
    for route, model, version, variant, status, seconds in OBSERVED:
        requests.labels(route, model, version, variant, str(status)).inc()
        if model:
            latency.labels(route, model, version, variant).observe(seconds)
    return generate_latest(registry).decode()


def test_plain_number_metrics_expose_what_prometheus_client_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = ServerMetrics()
    assert metrics.local is not None
    for observation in OBSERVED:
        metrics.observe_request(*observation)
    names = ("shipml_requests", "shipml_request_latency_seconds")
    got = samples(metrics.render().decode(), names)
    assert got == samples(reference(), names)
    assert got[("shipml_request_latency_seconds_bucket",
                (("le", "0.0005"), ("model", "churn"), ("route", "predict"), ("variant", "stable"),
                 ("version", "1.0.0")))] == 2
