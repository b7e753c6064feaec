"""Reports built by hand, for the renderer's tests (the collector's tests build theirs from a real log)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from shipml.monitoring.report import Distribution, FeatureReport, PredictionReport, Report, Series
from shipml.monitoring.report_html import bin_labels

START = 1_780_000_000.0  # 2026-05-28


def _shares(rng: np.random.Generator, n: int) -> tuple[float, ...]:
    raw = rng.random(n) + 0.05
    return tuple(float(v) for v in raw / raw.sum())


def numeric_feature(name: str, psi: float, rng: np.random.Generator) -> FeatureReport:
    edges = tuple(float(v) for v in np.linspace(-2.0, 2.0, 8))
    labels = tuple(bin_labels(edges))
    figures = {"psi": psi, "ks": psi / 3, "chi2": math.nan, "cramers_v": math.nan, "null_share": 0.0,
               "reference_null_share": 0.0, "out_of_range_share": 0.01, "unseen_share": math.nan}
    return FeatureReport(name=name, kind="numeric", rows=500, figures=figures,
                         distribution=Distribution("numeric", labels, _shares(rng, len(labels)),
                                                   _shares(rng, len(labels)), edges))


def categorical_feature(name: str, categories: Sequence[str], psi: float,
                        rng: np.random.Generator) -> FeatureReport:
    labels = (*categories, "other known", "unseen", "null")
    figures = {"psi": psi, "ks": math.nan, "chi2": 12.5, "cramers_v": 0.2, "null_share": 0.0,
               "reference_null_share": 0.0, "out_of_range_share": math.nan, "unseen_share": 0.02}
    return FeatureReport(name=name, kind="categorical", rows=500, figures=figures,
                         distribution=Distribution("categorical", labels, _shares(rng, len(labels)),
                                                   _shares(rng, len(labels))))


def sample_report(*, model: str = "churn", features: Sequence[str] = ("x0", "x1", "x2"),
                  categories: Sequence[str] = ("basic", "plus", "pro"), version: str = "1.0.0",
                  buckets: int = 12, alerts: bool = True, task: str = "classification", seed: int = 0) -> Report:
    """A report with every section filled: the last feature is categorical; the first drifts most."""
    rng = np.random.default_rng(seed)
    reports = [numeric_feature(name, 1.5 / (i + 1), rng) for i, name in enumerate(features[:-1])]
    if features:
        reports.append(categorical_feature(features[-1], categories, 0.01, rng))
    starts = tuple(START + 3600.0 * i for i in range(buckets))
    wave = tuple(float(v) for v in np.linspace(0.9, 0.7, buckets))
    classes = ("0", "1") if task == "classification" else None
    if task == "classification":
        prediction_series = {"0": wave, "1": tuple(1 - v for v in wave)}
        prediction = PredictionReport("categorical", {"psi": 0.3, "chi2": 40.0},
                                      Distribution("categorical", ("0", "1"), (0.8, 0.2), (0.65, 0.35)))
        realised = {"accuracy": 0.81, "roc_auc": 0.88}
        estimated = {"estimated_accuracy": 0.84, "estimated_roc_auc": 0.9}
    else:
        prediction_series = {"mean": wave, "p10": tuple(v - 0.2 for v in wave), "p90": tuple(v + 0.2 for v in wave)}
        edges = (0.0, 0.5, 1.0)
        prediction = PredictionReport("numeric", {"psi": 0.05, "ks": 0.02},
                                      Distribution("numeric", tuple(bin_labels(edges)), (0.0, 0.5, 0.5, 0.0, 0.0),
                                                   (0.1, 0.4, 0.4, 0.1, 0.0), edges))
        realised = {"mae": 0.3, "rmse": 0.4}
        estimated = {}
    labelled = tuple(int(v) for v in rng.integers(0, 40, buckets))
    series = Series(
        starts=starts, width_s=3600.0, rows=tuple([100] * buckets), requests=tuple([90] * buckets),
        rows_by_version={version: tuple([100] * buckets)},
        latency_ms={"p50": tuple([2.0] * buckets), "p90": tuple([4.0] * buckets), "p99": tuple([9.0] * buckets)},
        prediction=prediction_series, labelled=labelled,
        realised={k: tuple(v if n else math.nan for n in labelled) for k, v in realised.items()},
        estimated={k: wave for k in estimated},
        psi={f.name: tuple(float(v) for v in np.linspace(0.0, f.psi, buckets)) for f in reports})
    events = ({"alert": "input-drift", "state": "firing", "severity": "warning", "endpoint": model, "model": model,
               "version": version, "feature": features[0] if features else None, "label": None, "metric": "psi",
               "value": 1.5, "condition": "psi > 0.2", "since": START + 3600 * 6, "at": START + 3600 * 6.5},)
    return Report(model=model, ref=model, task=task,  # type: ignore[arg-type]
                  reference_version=version, versions=(version,), classes=classes, since=START,
                  until=START + 3600.0 * buckets, generated_at=START + 3600.0 * buckets, rows=100 * buckets,
                  requests=90 * buckets, first_time=START, last_time=START + 3600.0 * buckets - 1,
                  drift_rows=100 * buckets, labelled_rows=sum(labelled), realised=realised, estimated=estimated,
                  features=tuple(reports), prediction=prediction, series=series,
                  alerts=events if alerts else (), notes=("a note",))
