"""Metrics of a model on labelled data, computed with scikit-learn.

Classification: accuracy, precision, recall, f1 (binary: the positive class is the last of the model's
classes; multiclass: macro average), roc_auc (binary: from the positive-class probability; multiclass:
one-vs-rest macro) and log_loss (in the model's class order). Regression: rmse, mae, r2. A metric that cannot
be computed on the data given (no probabilities, a single class in the labels, fewer than two rows for r2) is
left out, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipml._optional import import_optional
from shipml.errors import SchemaError, UnsupportedModelError
from shipml.package.loaded import LoadedModel, Prediction
from shipml.package.signature import to_jsonable
from shipml.package.validation import InputPolicy

MetricTask = Literal["classification", "regression"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    task: MetricTask
    higher_is_better: bool


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("accuracy", "classification", True),
    MetricInfo("precision", "classification", True),
    MetricInfo("recall", "classification", True),
    MetricInfo("f1", "classification", True),
    MetricInfo("roc_auc", "classification", True),
    MetricInfo("log_loss", "classification", False),
    MetricInfo("rmse", "regression", False),
    MetricInfo("mae", "regression", False),
    MetricInfo("r2", "regression", True),
)}

#: Which metrics are better when higher (the others are better when lower).
HIGHER_IS_BETTER: dict[str, bool] = {name: info.higher_is_better for name, info in METRICS.items()}

#: What a promotion compares when no requirement names a metric.
DEFAULT_METRIC: dict[MetricTask, str] = {"classification": "accuracy", "regression": "rmse"}


def _sklearn_metrics() -> Any:
    return import_optional("sklearn.metrics", "sklearn", "scikit-learn")


def metric_task(model: LoadedModel) -> MetricTask:
    """The kind of metrics ``model`` is judged by; refused for models that neither classify nor regress."""
    task = model.signature.outputs.task
    if task == "classification":
        return "classification"
    if task == "regression":
        return "regression"
    raise UnsupportedModelError(f"{model.ref} is neither a classifier nor a regressor (task: {task});"
                                " shipml computes metrics for those two only")


def evaluation_policy(model: LoadedModel) -> InputPolicy:
    """The model's own input policy, but extra columns (ids, other labels) in evaluation data are ignored."""
    return replace(model.policy, extra_columns="ignore")


def compute_metrics(model: LoadedModel, X: Any, y: Any) -> dict[str, float]:
    """Metrics of ``model`` on inputs ``X`` against true values ``y`` (see the module docstring).

    ``X`` must fit the model's signature (``SchemaError`` otherwise); columns it does not know are ignored."""
    checked = model.check(X, evaluation_policy(model))
    checked.raise_for_errors()
    truth = np.asarray(y)
    if len(truth) != checked.table.n_rows:
        raise SchemaError(f"{len(truth)} labels for {checked.table.n_rows} rows")
    return metrics_for(model, truth, model.infer(checked.table, proba=True))


def metrics_for(model: LoadedModel, y: np.ndarray, prediction: Prediction) -> dict[str, float]:
    """Metrics from predictions already made (``prediction`` on the same rows as ``y``)."""
    if len(y) == 0:
        raise SchemaError("no labelled rows to compute metrics on")
    if metric_task(model) == "regression":
        return regression_metrics(y, prediction.predictions)
    return classification_metrics(y, prediction.predictions, prediction.probabilities, model.classes)


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    skm = _sklearn_metrics()
    truth = _numeric_labels(y)
    pred = np.asarray(predicted, dtype=np.float64).reshape(len(truth), -1)[:, 0]
    out = {
        "rmse": math.sqrt(float(skm.mean_squared_error(truth, pred))),
        "mae": float(skm.mean_absolute_error(truth, pred)),
    }
    if len(truth) >= 2:  # r2 is undefined on one row
        out["r2"] = float(skm.r2_score(truth, pred))
    return out


def classification_metrics(y: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None,
                           classes: list[Any] | None) -> dict[str, float]:
    skm = _sklearn_metrics()
    labels = list(classes) if classes else _observed_classes(y, predicted)
    truth = encode_labels(y, labels, what="the target")
    pred = encode_labels(predicted, labels, what="the model's predictions")
    k = len(labels)
    binary = k == 2
    averaging: dict[str, Any] = {"average": "binary", "pos_label": k - 1} if binary else {"average": "macro"}
    out = {
        "accuracy": float(skm.accuracy_score(truth, pred)),
        "precision": float(skm.precision_score(truth, pred, zero_division=0, **averaging)),
        "recall": float(skm.recall_score(truth, pred, zero_division=0, **averaging)),
        "f1": float(skm.f1_score(truth, pred, zero_division=0, **averaging)),
    }
    if probabilities is None or probabilities.ndim != 2 or probabilities.shape[1] != k:
        return out
    present = np.unique(truth)
    if len(present) > 1:
        if binary:
            out["roc_auc"] = float(skm.roc_auc_score(truth == k - 1, probabilities[:, k - 1]))
        else:  # one-vs-rest, macro over the classes the labels contain (an absent class has no AUC)
            aucs = [skm.roc_auc_score(truth == c, probabilities[:, c]) for c in present]
            out["roc_auc"] = float(np.mean(aucs))
    clipped = np.clip(probabilities, 1e-15, 1.0)
    normalised = clipped / clipped.sum(axis=1, keepdims=True)
    out["log_loss"] = float(skm.log_loss(truth, normalised, labels=list(range(k))))
    return out


def encode_labels(values: Any, classes: list[Any], *, what: str) -> np.ndarray:
    """Labels as indices into ``classes``. Labels read from a file may come as strings or floats ("1", 1.0)
    for integer classes, "True" for booleans, numbers for string classes: all are matched by value."""
    index: dict[Any, int] = {}
    for i, c in enumerate(classes):
        index.setdefault(_key(c), i)
    raw = np.asarray(values, dtype=object).reshape(-1)
    keys = [_key(v) for v in raw]
    unknown = sorted({str(to_jsonable(v)) for v, k in zip(raw, keys, strict=True) if k not in index})
    if unknown:
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise SchemaError(f"{what} has labels the model does not know: {shown}"
                          f" (the model's classes: {', '.join(map(str, classes))})")
    return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


def _key(value: Any) -> Any:
    """One comparable key per label: numbers by value, everything else by its text."""
    value = to_jsonable(value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return ("bool", value.lower() == "true")
        try:
            return ("num", float(value))
        except ValueError:
            return ("str", value)
    return ("str", str(value))


def _observed_classes(y: np.ndarray, predicted: np.ndarray) -> list[Any]:
    seen = {_key(v): to_jsonable(v) for v in np.concatenate([np.asarray(y, dtype=object).reshape(-1),
                                                            np.asarray(predicted, dtype=object).reshape(-1)])}
    return [seen[k] for k in sorted(seen)]


def _numeric_labels(y: np.ndarray) -> np.ndarray:
    values = pd.to_numeric(pd.Series(np.asarray(y).reshape(-1)), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    if np.isnan(values).any():
        raise SchemaError("the target of a regression model must be numbers with no nulls")
    return values
