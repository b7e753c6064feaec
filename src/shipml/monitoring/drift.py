"""Drift of live data from the training data: per input feature and for the prediction, from
:class:`~shipml.monitoring.counts.Counts` on a :class:`~shipml.monitoring.reference.Reference`'s slots.

The figures (each over every slot of the feature, null and out-of-range ones included, unless said otherwise):

- ``psi``: population stability index, ``sum((p - q) * ln(p / q))`` over the slots, ``p`` the current share,
  ``q`` the training share; a share below ``EPSILON`` (1e-4) counts as ``EPSILON``, so an empty slot on one side
  gives a large but finite term. Read it as: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
- ``ks`` (numeric): the *binned* Kolmogorov-Smirnov statistic: the largest gap between the training and the
  current cumulative shares of non-null values at the reference bin edges (after each slot: below-range, each
  bin, above-range). It is at most the exact two-sample statistic (which looks between the edges too), and
  equals it when no value falls inside a bin but on its edges; it is not ``scipy.stats.ks_2samp``.
- ``chi2`` and ``cramers_v`` (categorical): Pearson's chi-squared statistic of the 2 x K table (training counts,
  current counts) over the category slots (each top category, other known, unseen, null) that hold any value, and
  Cramér's V = sqrt(chi2 / N), N the rows of both.
- ``null_share`` (now) and ``reference_null_share``; ``out_of_range_share``: rows below the training minimum or
  above its maximum (numeric), rows of unseen categories (categorical); ``unseen_share`` (categorical).

With fewer than ``min_rows`` rows counted, every figure is NaN (``enough`` is False).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.errors import SchemaError
from shipml.monitoring.counts import Counts, Window, columns_from_arrow
from shipml.monitoring.reference import FeatureReference, Kind, Reference

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from shipml.package.loaded import LoadedModel

__all__ = ["EPSILON", "Counts", "DriftReport", "FeatureDrift", "PredictionDrift", "Window", "chi2_cramers_v",
           "columns_from_arrow", "counts_of_files", "drift", "drift_of_table", "ks_binned", "psi"]

EPSILON = 1e-4
NAN = math.nan


# -- the statistics, on two count vectors over the same slots -------------------------------------------------

def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of ``current`` against ``reference`` (counts over the same slots)."""
    r_total, c_total = float(np.sum(reference)), float(np.sum(current))
    if r_total <= 0 or c_total <= 0:
        return NAN
    q = np.maximum(np.asarray(reference, dtype=np.float64) / r_total, EPSILON)
    p = np.maximum(np.asarray(current, dtype=np.float64) / c_total, EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def ks_binned(reference: np.ndarray, current: np.ndarray) -> float:
    """The largest gap between the cumulative shares of two count vectors over ordered slots (module docstring)."""
    r_total, c_total = float(np.sum(reference)), float(np.sum(current))
    if r_total <= 0 or c_total <= 0:
        return NAN
    gap = np.cumsum(reference, dtype=np.float64) / r_total - np.cumsum(current, dtype=np.float64) / c_total
    return float(np.max(np.abs(gap)))


def chi2_cramers_v(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(Pearson's chi-squared, Cramér's V) of the 2 x K table of two count vectors (module docstring)."""
    table = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    n = float(rows.sum())
    if (rows <= 0).any():
        return NAN, NAN
    if table.shape[1] < 2:
        return 0.0, 0.0
    expected = np.outer(rows, table.sum(axis=0)) / n
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    return chi2, math.sqrt(chi2 / n)


# -- reports --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureDrift:
    """One input feature's drift figures (named as the alert rules name them; NaN where one does not apply)."""

    name: str
    kind: Kind
    rows: int
    psi: float
    ks: float
    chi2: float
    cramers_v: float
    null_share: float
    reference_null_share: float
    out_of_range_share: float
    unseen_share: float
    labels: tuple[str, ...] = ()  # the slots, and the training and current shares in each (for plots)
    reference_shares: tuple[float, ...] = ()
    shares: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "rows": self.rows, "psi": _json(self.psi),
                "ks": _json(self.ks), "chi2": _json(self.chi2), "cramers_v": _json(self.cramers_v),
                "null_share": _json(self.null_share), "reference_null_share": _json(self.reference_null_share),
                "out_of_range_share": _json(self.out_of_range_share), "unseen_share": _json(self.unseen_share),
                "bins": {"labels": list(self.labels), "reference": [_json(v) for v in self.reference_shares],
                         "current": [_json(v) for v in self.shares]}}


@dataclass(frozen=True)
class PredictionDrift:
    """The prediction distribution's drift: class shares (classifiers) or mean (regressors) now and in training."""

    kind: Kind
    rows: int
    psi: float
    ks: float
    chi2: float
    shares: dict[str, float]
    reference_shares: dict[str, float]
    mean: float
    reference_mean: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "psi": _json(self.psi), "ks": _json(self.ks),
                "chi2": _json(self.chi2), "shares": {k: _json(v) for k, v in self.shares.items()},
                "reference_shares": {k: _json(v) for k, v in self.reference_shares.items()},
                "mean": _json(self.mean), "reference_mean": _json(self.reference_mean)}


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    rows: int
    min_rows: int
    enough: bool
    features: tuple[FeatureDrift, ...]  # worst first: by PSI, NaN last
    prediction: PredictionDrift | None
    reference_rows: int = 0

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "rows": self.rows, "min_rows": self.min_rows,
                "enough": self.enough, "reference_rows": self.reference_rows,
                "features": [f.to_dict() for f in self.features],
                "prediction": self.prediction.to_dict() if self.prediction is not None else None}


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def drift(reference: Reference, counts: Counts, *, min_rows: int = 1) -> DriftReport:
    """Every feature's drift figures (and the prediction's) from ``counts`` on ``reference``."""
    if counts.reference.fingerprint != reference.fingerprint:
        raise ValueError(f"counts of {counts.reference.model}:{counts.reference.version} are not on the"
                         f" reference of {reference.model}:{reference.version}")
    enough = counts.rows >= min_rows and counts.rows > 0
    features = [_feature_drift(f, counts.feature_counts(i), counts.rows, enough)
                for i, f in enumerate(reference.features)]
    order = sorted(range(len(features)), key=lambda i: (math.isnan(features[i].psi), -_or0(features[i].psi), i))
    prediction = None
    predicted = counts.prediction_counts()
    if reference.prediction is not None and predicted is not None:
        prediction = _prediction_drift(reference.prediction, predicted, counts,
                                       counts.prediction_rows >= min_rows and counts.prediction_rows > 0)
    ref_rows = int(reference.features[0].rows) if reference.features else 0
    return DriftReport(reference.model, reference.version, counts.rows, min_rows, enough,
                       tuple(features[i] for i in order), prediction, ref_rows)


def _or0(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _feature_drift(feature: FeatureReference, current: np.ndarray, rows: int, enough: bool) -> FeatureDrift:
    ref = feature.reference
    ref_total = float(ref.sum())
    if not enough:
        return FeatureDrift(feature.name, feature.kind, rows, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN,
                            feature.labels, tuple(_shares(ref)), tuple(NAN for _ in ref))
    null_share = current[feature.null_slot] / rows
    ref_null = ref[feature.null_slot] / ref_total if ref_total > 0 else NAN
    if feature.kind == "numeric":
        below, above = feature.out_of_range_slots
        ks = ks_binned(ref[:-1], current[:-1])
        chi2 = cramers_v = unseen = NAN
        out_of_range = (current[below] + current[above]) / rows
    else:
        ks = NAN
        chi2, cramers_v = chi2_cramers_v(ref, current)
        unseen = current[feature.unseen_slot] / rows
        out_of_range = unseen
    return FeatureDrift(feature.name, feature.kind, rows, psi(ref, current), ks, chi2, cramers_v,
                        float(null_share), float(ref_null), float(out_of_range), float(unseen), feature.labels,
                        tuple(_shares(ref)), tuple(_shares(current)))


def _shares(counts: np.ndarray) -> list[float]:
    total = float(counts.sum())
    return [float(v) / total if total > 0 else NAN for v in counts]


def _prediction_drift(feature: FeatureReference, current: np.ndarray, counts: Counts,
                      enough: bool) -> PredictionDrift:
    ref = feature.reference
    rows = counts.prediction_rows
    if feature.kind == "numeric":
        if not enough:
            return PredictionDrift("numeric", rows, NAN, NAN, NAN, {}, {}, NAN, feature.mean)
        return PredictionDrift("numeric", rows, psi(ref, current), ks_binned(ref[:-1], current[:-1]), NAN, {}, {},
                               counts.prediction_mean, feature.mean)
    reference_shares = dict(zip(feature.categories, _shares(ref), strict=False))
    if not enough:
        return PredictionDrift("categorical", rows, NAN, NAN, NAN, {}, reference_shares, NAN, NAN)
    shares = dict(zip(feature.categories, _shares(current), strict=False))
    chi2, _ = chi2_cramers_v(ref, current)
    return PredictionDrift("categorical", rows, psi(ref, current), NAN, chi2, shares, reference_shares, NAN, NAN)


# -- files ----------------------------------------------------------------------------------------------------

def drift_of_table(reference: Reference, table: pa.Table | pd.DataFrame, predictions: np.ndarray | None = None,
                   *, min_rows: int = 1) -> DriftReport:
    """Drift of a whole table (a batch job's input, rows read from a file): its columns named as the model's
    inputs (others are ignored), ``predictions`` the model's on its rows (optional)."""
    return drift(reference, counts_of_table(reference, table, predictions), min_rows=min_rows)


def counts_of_table(reference: Reference, table: pa.Table | pd.DataFrame,
                    predictions: np.ndarray | None = None) -> Counts:
    counts = Counts(reference)
    counts.add(table_columns(reference, table), predictions)
    return counts


def table_columns(reference: Reference, table: Any) -> dict[str, np.ndarray]:
    """The model's input columns of an Arrow table / record batch or a DataFrame, as the signature check makes
    them; a missing column is a SchemaError naming it."""
    if hasattr(table, "schema") and hasattr(table, "column") and not hasattr(table, "iloc"):
        return columns_from_arrow(reference, table)
    import pandas as pd

    from shipml.package.validation import InputPolicy, check

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a pyarrow Table or a pandas DataFrame, got {type(table).__name__}")
    names = [str(c) for c in table.columns]
    missing = [n for n in reference.signature.names if n not in names]
    if missing:
        raise SchemaError(f"no column {', '.join(map(repr, missing))} in the data (the model takes "
                          f"{reference.signature.names})")
    policy = InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore", max_problems=0)
    columns: Mapping[str, np.ndarray] = check(table, reference.signature, policy).table.columns
    return dict(columns)


def counts_of_files(reference: Reference, data: str | Path, *, model: LoadedModel | None = None,
                    batch_rows: int = 65_536) -> tuple[Counts, int]:
    """Count the rows of ``data`` (a CSV, Parquet or JSON-lines file, a directory or a glob of them; read in
    batches of ``batch_rows``: memory stays at about one batch) on ``reference``; with ``model``, also its
    predictions on the rows that pass its signature check. Returns the counts and how many lines could not be
    parsed at all (skipped). A missing column or an unreadable file is a SchemaError naming it."""
    import pyarrow as pa

    from shipml.jobs.sources import file_columns, list_inputs, plan_parts, read_part
    from shipml.package.loaded import one_line

    counts = Counts(reference)
    unparsed = 0
    files = list_inputs(str(data))
    current = files[0].path
    try:
        for file in files:  # before reading any row: a file without a model input is refused by name
            current = file.path
            names = file_columns(file)
            missing = [n for n in reference.signature.names if names is not None and n not in names]
            if missing:
                raise SchemaError(f"{file.path.name} has no column {', '.join(map(repr, missing))} (the model"
                                  f" takes {', '.join(reference.signature.names)})")
        for part in plan_parts(files, part_rows=1 << 20):
            current = Path(part.path)
            got = read_part(part, reference.signature, [], batch_rows)
            for batch, _positions in got.batches:
                counts.add(columns_from_arrow(reference, batch), None)
                if model is not None:
                    counts.add_predictions(_predictions(model, batch))
            unparsed += len(got.unparsed)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read {current.name}: {one_line(exc)}") from exc
    return counts, unparsed


def _predictions(model: LoadedModel, batch: pa.RecordBatch) -> np.ndarray:
    """The model's predictions on the rows of ``batch`` that pass its signature check (the others are not
    predicted, as the server would refuse them)."""
    from shipml.package.validation import InputPolicy

    policy = InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore", max_problems=0)
    checked = model.check(batch.to_pandas(), policy)
    good = np.flatnonzero(~checked.bad_rows)
    if not len(good):
        return np.empty(0)
    table = checked.table if len(good) == checked.table.n_rows else checked.table.take(good)
    return np.asarray(model.infer(table, proba=False).predictions)
