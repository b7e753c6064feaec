"""Reference profile of the training sample and of the model's predictions on it: the baseline that drift
monitoring compares live traffic against. Plain JSON, computed once at save time.

A numeric profile (an int, float or datetime input, a regression's prediction, each class probability) holds
``bins``: the exact training counts of its finite values on edges at the training deciles (unique, ascending;
``np.histogram`` semantics: each bin holds ``[left, right)``, the last one ``[left, right]``). Profiles written
before version 2 have only ``histogram`` (10 equal-width bins); :mod:`shipml.monitoring.reference` falls back to
it, so packages saved then keep loading.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shipml.package.signature import ColumnSpec, Signature, to_jsonable

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
HISTOGRAM_BINS = 10
TOP_CATEGORIES = 50
DECILES = np.linspace(0.0, 1.0, 11)
#: 2: numeric profiles have decile ``bins`` (1: only the equal-width ``histogram``).
PROFILE_VERSION = 2


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"kind": "numeric", "count": n, "null_rate": float(np.isnan(values).mean()) if n else 0.0}
    if len(finite) == 0:
        return out
    qs = np.quantile(finite, QUANTILES)
    lo, hi = float(finite.min()), float(finite.max())
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    bin_edges, bin_counts = decile_bins(finite)
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=lo,
        max=hi,
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        bins={"edges": [float(e) for e in bin_edges], "counts": [int(c) for c in bin_counts]},
    )
    return out


def decile_bins(finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of finite values on their deciles: unique ascending edges from the minimum to the maximum
    (a constant column has the one bin ``[v, v]``), exact counts with ``np.histogram`` semantics."""
    lo, hi = float(finite.min()), float(finite.max())
    with np.errstate(over="ignore", invalid="ignore"):  # deciles of values near the float limits may overflow
        inner = np.quantile(finite, DECILES[1:-1])
    inner = inner[np.isfinite(inner) & (inner > lo) & (inner < hi)]
    edges = np.unique(np.concatenate([[lo], inner, [hi]]))
    if len(edges) == 1:
        edges = np.array([lo, hi])
    counts, _ = np.histogram(finite, bins=edges)
    return edges, counts


def categorical_profile(values: Any) -> dict[str, Any]:
    s = pd.Series(values, dtype=object)
    n = len(s)
    null = s.isna()
    freq = s[~null].astype(str).value_counts(normalize=False)
    top = freq.iloc[:TOP_CATEGORIES]
    present = int((~null).sum())
    return {
        "kind": "categorical",
        "count": n,
        "null_rate": float(null.mean()) if n else 0.0,
        "distinct": len(freq),
        "frequencies": {str(k): float(v) / present for k, v in top.items()} if present else {},
        "other": float(freq.iloc[TOP_CATEGORIES:].sum()) / present if present else 0.0,
    }


_TICKS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def feature_profile(spec: ColumnSpec, column: pd.Series) -> dict[str, Any]:
    if spec.dtype in ("int", "float"):
        return numeric_profile(pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    if spec.dtype == "datetime":
        stamps = pd.to_datetime(column, errors="coerce")
        # ticks of the column's own unit (pandas 3 makes microseconds by default, not nanoseconds), UTC for an aware one
        ticks = stamps.astype("int64").to_numpy(dtype=np.float64)
        seconds = ticks / _TICKS_PER_SECOND[stamps.dt.unit]
        seconds[stamps.isna().to_numpy()] = np.nan
        return {**numeric_profile(seconds), "unit": "epoch_seconds"}
    return categorical_profile(column)


def build_profile(frame: pd.DataFrame, signature: Signature, predictions: np.ndarray,
                  probabilities: np.ndarray | None) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": len(frame),
        "features": {spec.name: feature_profile(spec, frame[spec.name]) for spec in signature.inputs},
    }
    if signature.outputs.task == "classification" or predictions.dtype.kind not in "fc":
        profile["predictions"] = categorical_profile(predictions.reshape(len(predictions), -1)[:, 0])
    else:
        profile["predictions"] = numeric_profile(predictions.reshape(len(predictions), -1)[:, 0])
    if probabilities is not None and signature.outputs.classes:
        profile["probabilities"] = {
            str(to_jsonable(c)): numeric_profile(probabilities[:, i])
            for i, c in enumerate(signature.outputs.classes)
        }
    return profile
