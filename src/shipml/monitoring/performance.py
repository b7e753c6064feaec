"""Live performance of a served model: realised figures over labelled rows, and an estimate before labels arrive.

- :func:`realised` computes accuracy, precision, recall, F1 and ROC AUC (classifiers) or MAE and RMSE
  (regressors) with numpy alone, to the same values scikit-learn gives on the same arrays (scikit-learn is an
  optional extra, so it is not used at run time). A figure that cannot be computed is NaN, never an exception.
- :func:`estimated` is confidence-based performance estimation (the idea of NannyML's CBPE): when the model's
  probabilities are **calibrated** (of the rows given probability 0.8 for class c, 80 % really are c), the
  expected confusion matrix follows from the probabilities alone, and with it the expected accuracy, precision,
  recall, F1 and ROC AUC. The estimate is only as good as that assumption: an over-confident model (most
  boosted trees and SVMs are, uncalibrated) gets an estimate that is too optimistic. NannyML first fits a
  calibrator (isotonic regression) on a labelled reference set and estimates with the calibrated scores; shipml
  does not (the package holds no labelled reference probabilities), so calibrate the model before saving it
  (``CalibratedClassifierCV``) when the estimate matters. The estimate also assumes the relation between inputs
  and label has not changed (concept drift is invisible to it): compare it with the realised figure once
  labels arrive, which is why both are reported side by side.
- :class:`LabelWindow` holds the last N labelled rows (for realised figures), :class:`ScoreWindow` the last N
  served rows (for the estimate). Both are bounded, keep the newest rows by time, and travel between worker
  processes as bytes (``to_bytes`` / ``from_bytes``, strict: anything else is a ``ValueError``).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from shipml.package.signature import to_jsonable

__all__ = ["CLASSIFICATION_METRICS", "ESTIMATED_METRICS", "REGRESSION_METRICS", "LabelWindow", "ScoreWindow",
           "estimated", "realised"]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse")
ESTIMATED_METRICS = tuple(f"estimated_{m}" for m in CLASSIFICATION_METRICS)

NAN = float("nan")


# -- realised ------------------------------------------------------------------------------------------------
def realised(targets: Any, predictions: Any, probabilities: Any, classes: Sequence[Any] | None,
             task: str) -> dict[str, float]:
    """The model's performance on labelled rows, as scikit-learn computes it.

    Classification: ``accuracy``; ``precision``, ``recall``, ``f1`` for the positive class ``classes[1]`` when
    the model has two classes, else macro-averaged over the labels present in targets or predictions (as
    scikit-learn's ``average="macro"``); a ratio with a zero denominator is 0 (scikit-learn's default
    ``zero_division``). ``roc_auc`` from ``probabilities`` (rows x classes, in the order of ``classes``): binary,
    or one-vs-rest macro over the classes that have both positive and negative rows (scikit-learn refuses when a
    class is absent; we average the classes where it is defined); NaN without probabilities or with one class
    only. Regression: ``mae``, ``rmse``. No rows: every figure NaN. Any other task: no figures.
    """
    if task == "regression":
        return _regression(targets, predictions)
    if task != "classification":
        return {}
    t = _labels(targets)
    p = _labels(predictions)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} targets but {len(p)} predictions: they must be aligned row by row")
    if len(t) == 0:
        return dict.fromkeys(CLASSIFICATION_METRICS, NAN)
    out = {"accuracy": float(np.mean(_equal(t, p)))}
    if classes is not None and len(classes) == 2:
        positive = classes[1]
        tp, fp, fn = _binary_counts(_equal(t, positive), _equal(p, positive))
        out.update(precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn))
    else:
        hits, predicted, actual = _per_label_counts(t, p)
        out.update(precision=float(np.mean(_ratios(hits, predicted))),
                   recall=float(np.mean(_ratios(hits, actual))),
                   f1=float(np.mean(_ratios(2 * hits, predicted + actual))))
    out["roc_auc"] = _realised_auc(t, probabilities, classes)
    return out


def _regression(targets: Any, predictions: Any) -> dict[str, float]:
    try:
        t = np.asarray(targets, dtype=np.float64).reshape(-1)
        p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a regressor's targets and predictions must be numbers: {exc}") from None
    if len(t) != len(p):
        raise ValueError(f"{len(t)} targets but {len(p)} predictions: they must be aligned row by row")
    if len(t) == 0:
        return dict.fromkeys(REGRESSION_METRICS, NAN)
    error = t - p
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error * error)))}


def _labels(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1)
    return array


def _equal(values: np.ndarray, label: Any) -> np.ndarray:
    """``values == label`` elementwise, as a bool array (object arrays compare element by element)."""
    return np.asarray(values == label, dtype=bool).reshape(len(values))


def _binary_counts(actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.count_nonzero(actual & predicted))
    return tp, float(np.count_nonzero(predicted)) - tp, float(np.count_nonzero(actual)) - tp


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _ratios(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    out = np.zeros(len(numerators), dtype=np.float64)
    np.divide(numerators, denominators, out=out, where=denominators > 0)
    return out


def _codes(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both label arrays as codes into their sorted union (the labels scikit-learn's macro average runs over)."""
    both = np.concatenate([t, p])
    try:
        _, codes = np.unique(both, return_inverse=True)
    except TypeError:  # labels of mixed types do not sort: order them by their text, as distinct labels
        _, codes = np.unique(np.array([f"{type(v).__name__}:{v}" for v in both.tolist()]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(t)], codes[len(t):], int(codes.max()) + 1


def _per_label_counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tc, pc, k = _codes(t, p)
    tp = np.bincount(tc[tc == pc], minlength=k).astype(np.float64)
    return tp, np.bincount(pc, minlength=k).astype(np.float64), np.bincount(tc, minlength=k).astype(np.float64)


def _probabilities(probabilities: Any, rows: int, classes: Sequence[Any] | None) -> np.ndarray | None:
    if probabilities is None or classes is None or len(classes) < 2:
        return None
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (rows, len(classes)):
        raise ValueError(f"probabilities of shape {proba.shape} do not match {rows} rows x {len(classes)} classes")
    return proba


def _realised_auc(t: np.ndarray, probabilities: Any, classes: Sequence[Any] | None) -> float:
    proba = _probabilities(probabilities, len(t), classes)
    if proba is None or classes is None:
        return NAN
    scored = np.all(np.isfinite(proba), axis=1)  # rows served without probabilities are left out
    t, proba = t[scored], proba[scored]
    columns = [1] if len(classes) == 2 else range(len(classes))
    aucs = [_auc(_equal(t, classes[c]), proba[:, c]) for c in columns]
    defined = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(defined)) if defined else NAN


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), NaN with one class only."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    rank_sum = float(np.sum(average_rank[inverse.reshape(-1)][positive]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# -- estimated -----------------------------------------------------------------------------------------------
def estimated(probabilities: Any, classes: Sequence[Any] | None, predictions: Any) -> dict[str, float]:
    """Expected performance from the model's own probabilities, assuming they are calibrated (module docstring).

    With ``p`` the probability of the positive class on each row, the expected confusion matrix of the model's
    ``predictions`` is: TP = sum of p over rows predicted positive, FP = sum of 1 - p over them, FN = sum of p
    over rows predicted negative, TN = sum of 1 - p over them. Precision, recall and F1 are the same ratios of
    these expectations as :func:`realised` takes of the counts (binary: positive class ``classes[1]``;
    multiclass: macro over every class, each class one-vs-rest). Accuracy is the mean probability of the
    predicted class. ROC AUC is the expected share of (positive, negative) row pairs ordered right by the
    score: the sum over pairs i != j of p_i (1 - p_j) [s_i > s_j] (ties one half) over the sum of p_i (1 - p_j);
    multiclass: one-vs-rest macro. A prediction that is not one of ``classes`` counts as the most probable class.
    Without probabilities or rows, every figure is NaN.
    """
    if probabilities is None or classes is None or len(classes) < 2:
        return dict.fromkeys(ESTIMATED_METRICS, NAN)
    pred = _labels(predictions)
    proba = _probabilities(probabilities, len(pred), classes)
    if proba is None:
        return dict.fromkeys(ESTIMATED_METRICS, NAN)
    scored = np.all(np.isfinite(proba), axis=1)  # rows served without probabilities are left out
    pred, proba = pred[scored], proba[scored]
    if len(pred) == 0:
        return dict.fromkeys(ESTIMATED_METRICS, NAN)
    index = np.full(len(pred), -1, dtype=np.int64)
    for c, label in enumerate(classes):
        index[(index < 0) & _equal(pred, label)] = c
    unknown = index < 0
    index[unknown] = np.argmax(proba[unknown], axis=1)
    out = {"estimated_accuracy": float(np.mean(proba[np.arange(len(pred)), index]))}
    columns = [1] if len(classes) == 2 else list(range(len(classes)))
    figures = np.array([_expected_binary(proba[:, c], index == c) for c in columns])
    for name, column in zip(("precision", "recall", "f1", "roc_auc"), figures.T, strict=True):
        defined = column[~np.isnan(column)]
        out[f"estimated_{name}"] = float(np.mean(defined)) if len(defined) else NAN
    return out


def _expected_binary(p: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float, float]:
    tp = float(np.sum(p[predicted]))
    fp = float(np.sum(1.0 - p[predicted]))
    fn = float(np.sum(p[~predicted]))
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn), _expected_auc(p)


def _expected_auc(p: np.ndarray) -> float:
    q = 1.0 - p
    _, inverse, _ = np.unique(p, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    negatives_at = np.bincount(inverse, weights=q)  # expected negatives at each distinct score
    below = np.cumsum(negatives_at) - negatives_at  # ... at strictly lower scores
    ordered = below[inverse] + 0.5 * (negatives_at[inverse] - q)  # pairs with every other row, self excluded
    denominator = float(np.sum(p) * np.sum(q) - np.sum(p * q))
    return float(np.sum(p * ordered)) / denominator if denominator > 0 else NAN


# -- windows -------------------------------------------------------------------------------------------------
_MAGIC = b"SHIPMLW1"
_HEAD = struct.Struct("<8sII")  # magic, header length, crc32 of everything after this head


class _Window:
    """The newest ``capacity`` rows by time: ``time`` and the named columns (1-D arrays, ``probabilities`` 2-D)."""

    _KIND: ClassVar[str]
    _COLUMNS: ClassVar[tuple[str, ...]]

    def __init__(self, capacity: int, *, task: Literal["classification", "regression"] | str,
                 classes: Sequence[Any] | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"a window's capacity must be an integer >= 1, not {capacity!r}")
        if task not in ("classification", "regression", "other"):
            raise ValueError(f"task must be 'classification', 'regression' or 'other', not {task!r}")
        self.capacity = capacity
        self.task = task
        self.classes: list[Any] | None = None if classes is None else [to_jsonable(c) for c in classes]
        # rows arrive in chunks (one per add), compacted to the newest ``capacity`` by time once they exceed
        # twice that: an add costs O(its rows) amortised, memory stays under 2 x capacity rows (+ one chunk)
        self._chunks: list[_Chunk] = []
        self._held = 0  # rows in the chunks
        self._compacted = _Chunk(np.empty(0, dtype=np.float64),
                                 {name: np.empty(0, dtype=object) for name in self._COLUMNS},
                                 np.empty((0, len(self.classes or ()))) if self._has_proba else None)

    def __len__(self) -> int:
        return min(self._held, self.capacity)

    @property
    def rows(self) -> int:
        return len(self)

    @property
    def times(self) -> np.ndarray:
        """Each held row's time, oldest first."""
        return self._rows().time

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """Each held row's values by column name, oldest first."""
        return dict(self._rows().columns)

    @property
    def probabilities(self) -> np.ndarray | None:
        """Rows x classes (NaN for rows added without), oldest first; None for a model without classes."""
        return self._rows().proba

    @property
    def _has_proba(self) -> bool:
        return self.task == "classification" and self.classes is not None

    def _add(self, time: float | Any, columns: dict[str, Any], probabilities: Any) -> None:
        arrays = {name: _labels(values) for name, values in columns.items()}
        n = len(next(iter(arrays.values())))
        for name, array in arrays.items():
            if len(array) != n:
                raise ValueError(f"{name} has {len(array)} rows, expected {n} (one per row)")
        times = np.broadcast_to(np.asarray(time, dtype=np.float64), (n,)).copy()
        if not np.all(np.isfinite(times)):
            raise ValueError("times must be finite numbers (seconds since the epoch)")
        proba: np.ndarray | None = None
        if self._has_proba:
            k = len(self.classes or ())
            if probabilities is None:  # a row without probabilities: NaN, left out of the figures that need them
                proba = np.full((n, k), np.nan)
            else:
                proba = np.asarray(probabilities, dtype=np.float64)
                if proba.shape != (n, k):
                    raise ValueError(f"probabilities of shape {proba.shape} do not match {n} rows x {k} classes")
        if n:
            self._append(times, arrays, proba)

    def _append(self, times: np.ndarray, arrays: dict[str, np.ndarray], proba: np.ndarray | None) -> None:
        self._chunks.append(_Chunk(times, arrays, proba))
        self._held += len(times)
        if self._held > 2 * self.capacity:
            self._rows()

    def _rows(self) -> _Chunk:
        """The newest ``capacity`` rows by time, oldest first (equal times: the later added is newer)."""
        if self._chunks:
            parts = [self._compacted, *self._chunks]
            time = np.concatenate([p.time for p in parts])
            keep = np.argsort(time, kind="stable")[-self.capacity:]
            columns = {name: _concat([p.columns[name] for p in parts])[keep] for name in self._COLUMNS}
            proba = (None if self._compacted.proba is None
                     else np.concatenate([p.proba for p in parts if p.proba is not None])[keep])
            self._compacted = _Chunk(time[keep], columns, proba)
            self._chunks = []
            self._held = len(keep)
        return self._compacted

    def _newest(self, rows: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"over_rows must be an integer >= 1, not {rows!r}")
        held = self._rows()
        start = 0 if rows is None else max(len(held.time) - rows, 0)
        columns = {name: held.columns[name][start:] for name in self._COLUMNS}
        return columns, None if held.proba is None else held.proba[start:]

    def merge(self, other: _Window) -> None:
        """Add the other window's rows (another worker's), keeping the newest ``capacity`` of both by time."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        if other.task != self.task or other.classes != self.classes:
            raise ValueError(f"cannot merge windows of different models: task {other.task!r} classes "
                             f"{other.classes!r} into task {self.task!r} classes {self.classes!r}")
        if len(other):
            theirs = other._rows()
            self._add(theirs.time, dict(theirs.columns), theirs.proba)

    # -- bytes ---------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The window as bytes for another process (:meth:`from_bytes`); checksummed."""
        body = bytearray()
        arrays: dict[str, Any] = {}
        held = self._rows()
        for name, array in (("time", held.time), *held.columns.items(),
                            *([("probabilities", held.proba)] if held.proba is not None else [])):
            if array.dtype.kind in "fiub":
                raw = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))).tobytes()
                arrays[name] = {"dtype": array.dtype.newbyteorder("<").str, "shape": list(array.shape),
                                "offset": len(body), "size": len(raw)}
                body += raw
            else:
                arrays[name] = {"json": [to_jsonable(v) for v in array.tolist()]}
        header = json.dumps({"kind": self._KIND, "capacity": self.capacity, "task": self.task,
                             "classes": self.classes, "rows": len(held.time), "arrays": arrays},
                            allow_nan=False).encode()
        rest = header + bytes(body)
        return _HEAD.pack(_MAGIC, len(header), zlib.crc32(rest)) + rest

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        """The window :meth:`to_bytes` wrote; any other bytes (corrupt, truncated, another kind) → ValueError."""
        try:
            return cls._decode(bytes(data))
        except Exception as exc:  # whatever is malformed, it is not a window we wrote: one error type
            message = str(exc)
            if not (isinstance(exc, ValueError) and "window" in message):
                message = f"not a shipml {cls._KIND} window: {type(exc).__name__}: {message}"
            raise ValueError(message) from None

    @classmethod
    def _decode(cls, data: bytes) -> Any:
        if len(data) < _HEAD.size:
            raise ValueError(f"not a shipml {cls._KIND} window: {len(data)} bytes is too short")
        magic, header_size, crc = _HEAD.unpack_from(data)
        rest = data[_HEAD.size:]
        if magic != _MAGIC:
            raise ValueError(f"not a shipml {cls._KIND} window (wrong magic bytes)")
        if zlib.crc32(rest) != crc or header_size > len(rest):
            raise ValueError(f"corrupt shipml {cls._KIND} window (checksum mismatch or truncated)")
        header = json.loads(rest[:header_size])
        body = rest[header_size:]
        if not isinstance(header, dict) or header.get("kind") != cls._KIND:
            kind = header.get("kind") if isinstance(header, dict) else None
            raise ValueError(f"these bytes hold a {kind!r} window, not a {cls._KIND!r} one")
        window = cls(header["capacity"], task=header["task"], classes=header["classes"])
        rows = header["rows"]
        arrays = {name: _decode_array(name, spec, body) for name, spec in header["arrays"].items()}
        expected = {"time", *cls._COLUMNS} | ({"probabilities"} if window._has_proba else set())
        if set(arrays) != expected or not isinstance(rows, int) or rows > window.capacity:
            raise ValueError(f"not a shipml {cls._KIND} window: columns {sorted(arrays)}, rows {rows!r}")
        for name, array in arrays.items():
            if len(array) != rows or (name == "probabilities") != (array.ndim == 2):
                raise ValueError(f"not a shipml {cls._KIND} window: {name} has shape {array.shape}, rows {rows}")
        proba = arrays.pop("probabilities", None)
        if proba is not None and proba.shape[1] != len(window.classes or ()):
            raise ValueError(f"not a shipml {cls._KIND} window: probabilities do not match the classes")
        time = arrays.pop("time")
        if rows and not np.all(np.isfinite(time)):
            raise ValueError(f"not a shipml {cls._KIND} window: times are not finite")
        if rows:
            window._append(time.astype(np.float64), arrays, proba)
        return window


def _decode_array(name: str, spec: Any, body: bytes) -> np.ndarray:
    if not isinstance(spec, dict):
        raise ValueError(f"array {name!r}: bad description")
    if "json" in spec:
        values = spec["json"]
        if not isinstance(values, list):
            raise ValueError(f"array {name!r}: bad values")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    dtype = np.dtype(spec["dtype"])
    if dtype.kind not in "fiub" or dtype.hasobject:
        raise ValueError(f"array {name!r}: unexpected dtype {dtype}")
    offset, size, shape = spec["offset"], spec["size"], tuple(spec["shape"])
    if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 and offset + size <= len(body)
            and all(isinstance(s, int) and s >= 0 for s in shape) and 1 <= len(shape) <= 2
            and math.prod(shape) * dtype.itemsize == size):
        raise ValueError(f"array {name!r}: its shape and size do not match the bytes")
    return np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape).copy()


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    arrays = [a for a in arrays if len(a)] or arrays[:1]
    if all(a.dtype == arrays[0].dtype for a in arrays):
        return np.concatenate(arrays)
    out = np.empty(sum(len(a) for a in arrays), dtype=object)  # mixed dtypes (int and str labels): keep each
    out[:] = [v for a in arrays for v in a.tolist()]
    return out


@dataclass(frozen=True, slots=True)
class _Chunk:
    time: np.ndarray
    columns: dict[str, np.ndarray]
    proba: np.ndarray | None


class LabelWindow(_Window):
    """The last ``capacity`` labelled rows (newest by time): targets, the model's predictions, its probabilities.

    ``task`` and ``classes`` are the model's (the signature's outputs): they say which figures
    :meth:`metrics` computes. Memory: ``capacity`` rows, whatever the traffic.
    """

    _KIND = "labels"
    _COLUMNS = ("targets", "predictions")

    def add(self, time: float | Any, targets: Any, predictions: Any, probabilities: Any = None) -> None:
        """Add labelled rows; ``time`` (seconds since the epoch) is one number for all rows or one per row."""
        self._add(time, {"targets": targets, "predictions": predictions}, probabilities)

    def metrics(self, over_rows: int | None = None) -> dict[str, float]:
        """:func:`realised` over the newest ``over_rows`` rows (all rows held: ``None``)."""
        columns, proba = self._newest(over_rows)
        return realised(columns["targets"], columns["predictions"], proba, self.classes, self.task)


class ScoreWindow(_Window):
    """The last ``capacity`` served rows (newest by time), labelled or not: the model's predictions and
    probabilities, for :func:`estimated`."""

    _KIND = "scores"
    _COLUMNS = ("predictions",)

    def add(self, time: float | Any, predictions: Any, probabilities: Any = None) -> None:
        self._add(time, {"predictions": predictions}, probabilities)

    def metrics(self, over_rows: int | None = None) -> dict[str, float]:
        """:func:`estimated` over the newest ``over_rows`` rows; a model without probabilities: no figures."""
        if self.task != "classification":
            return {}
        columns, proba = self._newest(over_rows)
        return estimated(proba, self.classes, columns["predictions"])
