"""What ``shipml monitor`` reports on one served model over a period: a typed :class:`Report` (data only; it is
printed as JSON by ``--json`` and drawn as one HTML page by :mod:`shipml.monitoring.report_html`).

    Report
      summary figures: rows, requests, time range, versions, realised and estimated performance
      features        ranked worst first (by PSI, NaN last): drift figures + reference vs current distribution
      prediction      the prediction distribution's drift figures + reference vs current distribution
      series          per time bucket: volume, latency percentiles, prediction shares (or mean), realised and
                      estimated performance, the PSI of each feature
      alerts          the alert events the server recorded in ``DIR/<model>/alerts.jsonl`` within the period

:func:`shipml.monitoring.report_collect.collect` builds it from the prediction log, the feedback log, the alert
events and the model's reference profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ALERTS_FILE", "Distribution", "FeatureReport", "PredictionReport", "Report", "Series", "jsonable"]

#: The file, under ``DIR/<model>/``, where the server appends one ``AlertEvent.to_dict()`` JSON object a line.
ALERTS_FILE = "alerts.jsonl"


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float made None and tuples made lists (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Distribution:
    """Reference and current shares on the same bins: for a numeric column the reference's bins (below the
    training minimum, the training bins, above the training maximum, null), for a categorical one each known
    category, the other known categories, unseen ones, null. ``reference`` and ``current`` are shares (each
    sums to 1, or all 0 when there is no row); ``edges`` are a numeric column's bin edges (its finite ones)."""

    kind: Literal["numeric", "categorical"]
    labels: tuple[str, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.reference) == len(self.current):
            raise ValueError(f"a distribution needs one reference and one current share per bin: "
                             f"{len(self.labels)} labels, {len(self.reference)} and {len(self.current)} shares")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": list(self.labels), "reference": jsonable(self.reference),
                "current": jsonable(self.current), "edges": jsonable(self.edges)}


@dataclass(frozen=True, slots=True)
class FeatureReport:
    """One input feature: its drift figures over the whole period (named as the alert metrics: psi, ks, chi2,
    cramers_v, null_share, reference_null_share, out_of_range_share, unseen_share; NaN where one does not apply)
    and its distribution."""

    name: str
    kind: Literal["numeric", "categorical"]
    rows: int
    figures: Mapping[str, float]
    distribution: Distribution
    dtype: str = ""  # the signature's: int, float, bool, string, datetime (bin edges in epoch seconds)

    @property
    def psi(self) -> float:
        return float(self.figures.get("psi", math.nan))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "rows": self.rows,
                "figures": jsonable(self.figures), "distribution": self.distribution.to_dict()}


@dataclass(frozen=True, slots=True)
class PredictionReport:
    """The model's predictions: drift figures (psi; ks for a regressor, chi2 for a classifier) and the reference
    vs current distribution (class shares, or the regression output's bins)."""

    kind: Literal["numeric", "categorical"]
    figures: Mapping[str, float]
    distribution: Distribution

    @property
    def psi(self) -> float:
        return float(self.figures.get("psi", math.nan))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "figures": jsonable(self.figures), "distribution": self.distribution.to_dict()}


@dataclass(frozen=True, slots=True)
class Series:
    """Figures per time bucket: bucket ``i`` covers ``[starts[i], starts[i] + width_s)`` (epoch seconds, UTC).
    Every sequence has one value per bucket; NaN where a bucket has nothing to measure (no request, no label)."""

    starts: tuple[float, ...] = ()
    width_s: float = 3600.0
    rows: tuple[int, ...] = ()
    requests: tuple[int, ...] = ()
    rows_by_version: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    latency_ms: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # "p50", "p90", "p99"
    #: classifier: class label -> share of the bucket's predictions; regressor: "mean", "p10", "p90"
    prediction: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    labelled: tuple[int, ...] = ()
    realised: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    estimated: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: feature -> PSI of the trailing window ending with each bucket (at least ``psi_window_rows`` rows)
    psi: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    psi_window_rows: int = 0
    #: realised and estimated figures of each bucket cover the trailing buckets holding this many labelled rows
    performance_window_rows: int = 0

    def __post_init__(self) -> None:
        n = len(self.starts)
        if not self.width_s > 0:
            raise ValueError(f"a time bucket must last more than 0 seconds, not {self.width_s!r}")
        columns: dict[str, Sequence[Any]] = {"rows": self.rows, "requests": self.requests,
                                             "labelled": self.labelled}
        for group in ("rows_by_version", "latency_ms", "prediction", "realised", "estimated", "psi"):
            for key, values in getattr(self, group).items():
                columns[f"{group}[{key}]"] = values
        wrong = [f"{name} ({len(v)})" for name, v in columns.items() if len(v) != n]
        if wrong:
            raise ValueError(f"every series needs one value per time bucket ({n}): {', '.join(wrong)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable({
            "starts": self.starts, "width_s": self.width_s, "rows": self.rows, "requests": self.requests,
            "rows_by_version": self.rows_by_version, "latency_ms": self.latency_ms,
            "prediction": self.prediction, "labelled": self.labelled, "realised": self.realised,
            "estimated": self.estimated, "psi": self.psi, "psi_window_rows": self.psi_window_rows,
            "performance_window_rows": self.performance_window_rows})
        return out


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``shipml monitor`` shows about ``model`` over ``[since, until]`` (epoch seconds; None: open).

    ``versions`` are the versions seen in the log over the period; drift is measured against the reference
    profile of ``reference_version`` on that version's rows (another version was trained on other data), while
    volume, latency, predictions and performance cover every version. ``realised`` holds the metrics on the
    rows that have feedback (``labelled_rows`` of them), ``estimated`` the confidence-based estimate over every
    row of a classifier that gives probabilities. ``notes`` say what could not be measured, and why."""

    model: str
    ref: str
    task: Literal["classification", "regression"]
    reference_version: str
    versions: tuple[str, ...] = ()
    classes: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    generated_at: float = 0.0
    rows: int = 0
    requests: int = 0
    first_time: float | None = None
    last_time: float | None = None
    drift_rows: int = 0
    labelled_rows: int = 0
    unmatched_labels: int = 0
    realised: Mapping[str, float] = field(default_factory=dict)
    estimated: Mapping[str, float] = field(default_factory=dict)
    features: tuple[FeatureReport, ...] = ()
    prediction: PredictionReport | None = None
    series: Series = field(default_factory=Series)
    alerts: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()

    def feature(self, name: str) -> FeatureReport:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in the report of {self.model}")

    def worst(self, n: int = 5) -> tuple[FeatureReport, ...]:
        """The ``n`` features that drift most (the features are ranked already: by PSI, NaN last)."""
        return self.features[:n]

    def fired(self) -> tuple[Mapping[str, Any], ...]:
        """The alert events that fired (state "firing") over the period, oldest first."""
        return tuple(a for a in self.alerts if a.get("state") == "firing")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "ref": self.ref, "task": self.task, "reference_version": self.reference_version,
            "versions": list(self.versions), "classes": None if self.classes is None else list(self.classes),
            "since": jsonable(self.since), "until": jsonable(self.until), "generated_at": self.generated_at,
            "rows": self.rows, "requests": self.requests, "first_time": jsonable(self.first_time),
            "last_time": jsonable(self.last_time), "drift_rows": self.drift_rows,
            "labelled_rows": self.labelled_rows, "unmatched_labels": self.unmatched_labels,
            "realised": jsonable(self.realised), "estimated": jsonable(self.estimated),
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "series": self.series.to_dict(), "alerts": [jsonable(a) for a in self.alerts],
            "notes": list(self.notes),
        }
