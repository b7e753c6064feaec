"""The monitor's figures in ``/metrics``.

Counts (rows logged and dropped, feedback rows, webhook deliveries) are prometheus_client counters: with several
workers they go through its files like every other counter. Drift, live performance and active alerts are
computed when scraped, from the monitor's windows merged over the live workers (monitoring/exchange.py): a
gauge per figure, labelled by model, version and feature (or metric, or class label).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shipml.monitoring.rules import DRIFT_METRICS

if TYPE_CHECKING:
    from shipml.monitoring.monitor import Monitor

__all__ = ["MonitorCollector", "PrometheusCounters"]

_DRIFT_HELP = {
    "psi": "Population stability index of the feature over the drift window, against the training profile",
    "ks": "Kolmogorov-Smirnov statistic (largest CDF gap at the reference bin edges) of a numeric feature",
    "chi2": "Chi-squared statistic of a categorical feature's categories (unseen and null included)",
    "cramers_v": "Cramer's V of a categorical feature against the training profile (0 same, 1 disjoint)",
    "null_share": "Share of nulls in the feature over the drift window",
    "out_of_range_share": "Share of the feature's values outside the training range over the drift window",
    "unseen_share": "Share of categories never seen in training over the drift window",
}


class PrometheusCounters:
    """The monitor's counters (``MonitorCounters``) as Prometheus counters of the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.logged_rows = Counter("shipml_monitor_logged_rows", "Predicted rows written to the prediction log",
                                   ["model", "version"], registry=r)
        self.dropped_rows = Counter("shipml_monitor_dropped_rows", "Predicted rows the prediction log dropped:"
                                    " queue_full (the writer is behind) or write_error (the disk failed)",
                                    ["model", "version", "reason"], registry=r)
        self.feedback_rows = Counter("shipml_feedback_rows", "Ground-truth labels received, by whether they"
                                     " matched a prediction", ["model", "version", "outcome"], registry=r)
        self.webhook_total = Counter("shipml_alert_webhook", "Alert notifications to the webhook, by outcome"
                                     " (sent, failed after its retries, dropped: the queue was full)",
                                     ["outcome"], registry=r)

    def logged(self, model: str, version: str, rows: int) -> None:
        self.logged_rows.labels(model, version).inc(rows)

    def dropped(self, model: str, version: str, rows: int, reason: str) -> None:
        self.dropped_rows.labels(model, version, reason).inc(rows)

    def feedback(self, model: str, version: str, outcome: str, rows: int) -> None:
        self.feedback_rows.labels(model, version, outcome).inc(rows)

    def webhook(self, outcome: str) -> None:
        self.webhook_total.labels(outcome).inc()


class MonitorCollector:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        drift = {m: GaugeMetricFamily(f"shipml_drift_{m}", _DRIFT_HELP[m], labels=["model", "version", "feature"])
                 for m in DRIFT_METRICS}
        window_rows = GaugeMetricFamily("shipml_drift_window_rows", "Served rows in the drift window",
                                        labels=["model", "version"])
        prediction_psi = GaugeMetricFamily("shipml_prediction_psi", "Population stability index of the"
                                           " predictions over the drift window", labels=["model", "version"])
        share = GaugeMetricFamily("shipml_prediction_share", "Share of each predicted class over the drift window",
                                  labels=["model", "version", "label"])
        mean = GaugeMetricFamily("shipml_prediction_mean", "Mean prediction of a regressor over the drift window",
                                 labels=["model", "version"])
        realised = GaugeMetricFamily("shipml_model_performance", "Live performance over the last labelled rows",
                                     labels=["model", "version", "metric"])
        estimated = GaugeMetricFamily("shipml_model_performance_estimated", "Performance estimated from the"
                                      " model's own probabilities over the last served rows (assumes calibration)",
                                      labels=["model", "version", "metric"])
        labelled = GaugeMetricFamily("shipml_labelled_rows", "Labelled rows in the live performance window",
                                     labels=["model", "version"])
        for watched in monitor.watched():
            labels = [watched.model.name, watched.model.version]
            report = monitor.drift(watched)
            if report is not None:
                window_rows.add_metric(labels, report.rows)
                for feature in report.features:
                    for metric, family in drift.items():
                        value = getattr(feature, metric)
                        if _finite(value):
                            family.add_metric([*labels, feature.name], value)
                p = report.prediction
                if p is not None:
                    if _finite(p.psi):
                        prediction_psi.add_metric(labels, p.psi)
                    for label, value in p.shares.items():
                        share.add_metric([*labels, label], value)
                    if _finite(p.mean):
                        mean.add_metric(labels, p.mean)
            for metric, value in monitor.performance(watched).items():
                if not _finite(value):
                    continue
                if metric.startswith("estimated_"):
                    estimated.add_metric([*labels, metric.removeprefix("estimated_")], value)
                else:
                    realised.add_metric([*labels, metric], value)
            labelled.add_metric(labels, monitor.labelled_rows(watched))
        yield from drift.values()
        yield from (window_rows, prediction_psi, share, mean, realised, estimated, labelled)
        active = GaugeMetricFamily("shipml_alert_active", "1 while the alert fires",
                                   labels=["alert", "severity", "endpoint", "model", "version", "feature", "label"])
        for alert in monitor.active_alerts():
            active.add_metric([str(alert.get(k) or "") for k in ("alert", "severity", "endpoint", "model", "version",
                                                                 "feature", "label")], 1)
        yield active


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
