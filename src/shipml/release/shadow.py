"""How much a shadow model's answers differ from the primary's on the same rows.

A shadow answers after the client has its response, and its outputs may be anything (another model kind, fewer
rows, other classes, garbage): :func:`compare` counts what it can compare and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Disagreement", "compare"]

_NUMERIC = frozenset("biufc")


@dataclass(frozen=True, slots=True)
class Disagreement:
    """The difference between a primary's and a shadow's answers to one request."""

    rows: int  # rows both answered (the shorter of the two predictions)
    labels_differ: int  # rows whose predicted label differs
    proba_abs_diff_sum: float  # sum over rows of mean |p_primary - p_shadow| over classes (0 if no probabilities)
    proba_rows: int  # rows where both had finite probabilities of the same classes


def compare(primary_pred: Any, primary_proba: Any, shadow_pred: Any, shadow_proba: Any, *,
            primary_classes: Sequence[Any] | None = None,
            shadow_classes: Sequence[Any] | None = None) -> Disagreement:
    """The disagreement between two models' answers to the same rows. Predictions are compared row by row (a
    row of a multi-output prediction differs when any of its values does; NaN equals NaN); probabilities when
    both have them with as many columns, and, when both ``*_classes`` are given, the same classes (the shadow's
    columns are put in the primary's class order). Rows past the shorter answer, and probability rows holding a
    value that is not finite, are not counted. Never raises: what cannot be compared is not counted."""
    a, b = _table(primary_pred), _table(shadow_pred)
    rows = differ = 0
    if a is not None and b is not None:
        rows = min(a.shape[0], b.shape[0])
        differ = rows - int(np.count_nonzero(_same_rows(a[:rows], b[:rows]))) if rows else 0
    total, proba_rows = _proba_diff(primary_proba, shadow_proba, primary_classes, shadow_classes)
    return Disagreement(rows=rows, labels_differ=differ, proba_abs_diff_sum=total, proba_rows=proba_rows)


def _table(values: Any) -> np.ndarray | None:
    """``values`` as a 2-d array, one row per row (a 1-d array: one column), or None when it is no array."""
    if values is None:
        return None
    try:
        array = np.asarray(values)
        if array.ndim == 0:
            return array.reshape(1, 1)
        return array.reshape(array.shape[0], math.prod(array.shape[1:]))
    except Exception:  # ragged nesting, an object numpy refuses: nothing to compare
        return None


def _same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One bool per row: whether the two rows hold the same values."""
    if a.shape[1] != b.shape[1]:
        return np.zeros(a.shape[0], dtype=bool)
    if a.shape[1] == 0:
        return np.ones(a.shape[0], dtype=bool)
    kinds = a.dtype.kind + b.dtype.kind
    try:
        if set(kinds) <= _NUMERIC:
            equal = np.asarray(a == b)
            if a.dtype.kind in "fc" and b.dtype.kind in "fc":  # NaN is no label, but the same no label
                equal |= np.isnan(a) & np.isnan(b)
            rows: np.ndarray = np.logical_and.reduce(equal, axis=1)
            return rows
        if a.dtype.kind == b.dtype.kind and a.dtype.kind in "USMm":
            equal = np.asarray(a == b)
            if equal.shape == a.shape and equal.dtype == bool:
                if a.dtype.kind in "Mm":
                    equal |= np.isnat(a) & np.isnat(b)
                same: np.ndarray = np.logical_and.reduce(equal, axis=1)
                return same
    except Exception:  # a comparison numpy has no loop for: compare value by value below
        pass
    return np.fromiter((all(_same(x, y) for x, y in zip(ra, rb, strict=True))
                        for ra, rb in zip(a.tolist(), b.tolist(), strict=True)), dtype=bool, count=a.shape[0])


def _same(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if type(x) is not type(y) and not (isinstance(x, int | float) and isinstance(y, int | float)):
        return False  # 1 and "1": different labels
    try:
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return bool(x == y)
    except Exception:
        return False


def _proba_diff(primary: Any, shadow: Any, primary_classes: Sequence[Any] | None,
                shadow_classes: Sequence[Any] | None) -> tuple[float, int]:
    p, q = _numbers(primary), _numbers(shadow)
    if p is None or q is None or p.shape[1] != q.shape[1] or p.shape[1] == 0:
        return 0.0, 0
    if primary_classes is not None and shadow_classes is not None:
        order = _column_order(primary_classes, shadow_classes, p.shape[1])
        if order is None:
            return 0.0, 0
        q = q[:, order]
    rows = min(p.shape[0], q.shape[0])
    with np.errstate(all="ignore"):  # huge values overflow to inf: those rows are left out below
        diff = np.add.reduce(np.abs(p[:rows] - q[:rows]), axis=1) / p.shape[1]
    finite = diff[np.isfinite(diff)]
    return float(np.add.reduce(finite)), int(finite.shape[0])


def _numbers(values: Any) -> np.ndarray | None:
    table = _table(values)
    if table is None or table.dtype.kind not in "biuf":
        return None
    return table.astype(np.float64)


def _column_order(primary: Sequence[Any], shadow: Sequence[Any], width: int) -> list[int] | None:
    """The shadow's column of each of the primary's classes, or None when they are not the same classes."""
    try:
        ours, theirs = [_label(c) for c in primary], [_label(c) for c in shadow]
        if len(ours) != width or len(theirs) != width or len(set(theirs)) != width:
            return None
        where = {c: i for i, c in enumerate(theirs)}
        order = [where[c] for c in ours]
    except (KeyError, TypeError):  # a class the shadow does not have, or a class that cannot be a key
        return None
    return order


def _label(value: Any) -> Any:
    """A class label as a dict key: numpy scalars as Python values (so np.int64(1) and 1 are one class)."""
    return value.item() if isinstance(value, np.generic) else value
