"""The proof that an exported model answers as the registered one does.

Rows: the golden sample, and rows drawn across every input's recorded range (10% beyond it on either side, and
its ends exactly), every known category, nulls where the signature allows them. Both models predict on the same
records: the registered one through shipml's own validation and runtime, the export through the bundle's runner
(the same code as ``predict.py``). Tolerance (:data:`TOLERANCE`): labels exactly; probabilities within
``proba_atol`` = 1e-5 (the export computes in 32-bit floats, whose rounding moves a probability by ~1e-7);
regression values within ``value_atol + value_rtol * max(|value|, value_scale)`` = 1e-5 + 1e-5 * max(|value|,
largest |prediction| on the golden sample): 32-bit floats keep 7 significant digits of every term the model adds
up, so a prediction near 0 made of large terms (a linear model, a forest's sum of leaves) is as exact as its terms,
not as its own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from shipml.errors import ReproducibilityError
from shipml.export.runner import Predictor, compare
from shipml.package.loaded import PERMISSIVE, LoadedModel
from shipml.package.signature import ColumnSpec, to_jsonable

TOLERANCE: dict[str, float] = {"proba_atol": 1e-5, "value_atol": 1e-5, "value_rtol": 1e-5}
DRAWN_ROWS = 3000
NULL_RATE = 0.05
SHOWN_ROWS = 10


class ParityError(ReproducibilityError):
    """The exported model's outputs differ from the registered model's; ``rows`` holds the records that differ
    with both outputs."""

    status: ClassVar[int] = 422

    def __init__(self, message: str, rows: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)


@dataclass
class ParityReport:
    """What was compared and how far apart the two models came (zero differences when it passed)."""

    golden_rows: int
    drawn_rows: int
    tolerance: dict[str, float]
    max_proba_diff: float | None = None
    max_value_diff: float | None = None
    label_agreement: float | None = None
    differing: list[dict[str, Any]] = field(default_factory=list)
    n_differing: int = 0
    task: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"golden_rows": self.golden_rows, "drawn_rows": self.drawn_rows, "tolerance": self.tolerance,
                "max_proba_diff": self.max_proba_diff, "max_value_diff": self.max_value_diff,
                "label_agreement": self.label_agreement, "rows_differing": self.n_differing}


def golden_records(model: LoadedModel) -> list[dict[str, Any]]:
    inputs = model.golden()["inputs"]
    n = len(next(iter(inputs.values()), []))
    return [{name: to_jsonable(values[i]) for name, values in inputs.items()} for i in range(n)]


def drawn_records(columns: Sequence[ColumnSpec], rows: int = DRAWN_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` records across every column's range, with its ends, every category and nulls where allowed."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[Any]] = {}
    for column in columns:
        drawn[column.name] = _draw(column, rows, rng)
    return [{name: values[i] for name, values in drawn.items()} for i in range(rows)]


def _draw(column: ColumnSpec, rows: int, rng: np.random.Generator) -> list[Any]:
    values: list[Any]
    if column.dtype == "string":
        categories = column.categories or ["a", "b"]
        values = [categories[i] for i in rng.integers(0, len(categories), rows)]
        values[: len(categories)] = categories[:rows]  # every category at least once
    elif column.dtype == "bool":
        values = [bool(v) for v in rng.integers(0, 2, rows)]
        values[:2] = [True, False][:rows]
    else:
        low = float(column.min) if isinstance(column.min, int | float) else -1e3
        high = float(column.max) if isinstance(column.max, int | float) else 1e3
        span = (high - low) or max(abs(low), 1.0)
        numbers = rng.uniform(low - 0.1 * span, high + 0.1 * span, rows)
        numbers[:2] = [low, high][:rows]
        values = [int(v) for v in np.round(numbers)] if column.dtype == "int" else [float(v) for v in numbers]
    if column.nullable:
        for i in np.flatnonzero(rng.random(rows) < NULL_RATE):
            values[int(i)] = None
        if rows > 2:
            values[2] = None  # at least once
    return values


def registered_outputs(model: LoadedModel, records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    """The registered model's outputs on ``records``, through shipml's validation and runtime."""
    columns = {c.name: [r[c.name] for r in records] for c in model.signature.inputs}
    checked = model.check(columns, PERMISSIVE)
    checked.raise_for_errors()
    result = model.infer(checked.table, proba=model.has_proba)
    return np.asarray(result.predictions), result.probabilities


def expected(labels: np.ndarray, proba: np.ndarray | None) -> dict[str, Any]:
    """Outputs as the golden file states them (plain JSON values)."""
    out: dict[str, Any] = {"predictions": [to_jsonable(v) for v in labels.reshape(len(labels), -1)[:, 0]]}
    out["probabilities"] = proba.tolist() if proba is not None else None
    return out


def with_scale(tolerance: dict[str, float], golden_predictions: Sequence[Any], task: str) -> dict[str, float]:
    """``tolerance`` with ``value_scale``, the largest |prediction| on the golden sample, for a regressor."""
    if task != "regression":
        return dict(tolerance)
    values = [abs(float(v)) for v in golden_predictions if v is not None and math.isfinite(float(v))]
    return {**tolerance, "value_scale": max(values, default=0.0)}


def measure(model: LoadedModel, predictor: Predictor, records: Sequence[dict[str, Any]], golden_rows: int,
            tolerance: dict[str, float] | None = None) -> ParityReport:
    """Compare both models on ``records`` (the first ``golden_rows`` are the golden sample)."""
    labels, proba = registered_outputs(model, records)
    want = expected(labels, proba)
    tolerance = dict(tolerance or with_scale(TOLERANCE, want["predictions"][:golden_rows], predictor.task))
    got_labels, got_proba = predictor.run(records)
    task = predictor.task
    bad = compare(got_labels, got_proba, want, task, tolerance)
    report = ParityReport(golden_rows, len(records) - golden_rows, tolerance, n_differing=len(bad), task=task)
    if got_proba is not None and proba is not None and proba.shape == got_proba.shape and len(proba):
        report.max_proba_diff = float(np.max(np.abs(proba - got_proba)))
    if task == "regression" and len(records):
        ref = np.asarray([math.nan if v is None else v for v in want["predictions"]], dtype=np.float64)
        report.max_value_diff = float(np.nanmax(np.abs(np.asarray(got_labels, dtype=np.float64) - ref))) \
            if not np.isnan(ref).all() else 0.0
    else:
        same = [g == w for g, w in zip(got_labels.tolist(), want["predictions"], strict=False)]
        report.label_agreement = float(np.mean(same)) if same else 1.0
    for i in bad[:SHOWN_ROWS]:
        report.differing.append({
            "row": i, "source": "golden" if i < golden_rows else "drawn", "record": records[i],
            "registered": {"prediction": want["predictions"][i],
                           **({"probabilities": want["probabilities"][i]} if want["probabilities"] else {})},
            "exported": {"prediction": to_jsonable(got_labels[i]),
                         **({"probabilities": got_proba[i].tolist()} if got_proba is not None else {})},
        })
    return report


def prove(model: LoadedModel, predictor: Predictor, *, rows: int = DRAWN_ROWS, seed: int = 0) -> ParityReport:
    """The parity report; ParityError listing the rows that differ when any does."""
    golden = golden_records(model)
    report = measure(model, predictor, golden + drawn_records(model.signature.inputs, rows, seed), len(golden))
    if report.n_differing:
        shown = "; ".join(
            f"row {d['row']} ({d['source']}) {d['record']}: registered {d['registered']}, exported {d['exported']}"
            for d in report.differing[:3])
        raise ParityError(
            f"the ONNX export of {model.ref} differs from it on {report.n_differing} of"
            f" {report.golden_rows + report.drawn_rows} rows (tolerance {report.tolerance}); export refused."
            f" First: {shown}", report.differing)
    return report
