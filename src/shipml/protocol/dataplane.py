"""The transport-free dataplane: decode → validate → batch → predict → split. No HTTP here.

Per request, only the structure is checked (columns present, no unknown columns, row limit), which is cheap.
The value checks (types, nulls, ranges, categories) run once per merged batch, vectorised, and their verdicts
are split back: a request with a bad row fails alone with its own problems (rows numbered within it), the other
requests of the batch are predicted as usual.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shipml.batching.batcher import AdaptiveBatcher
from shipml.batching.merge import merge_columns, offsets
from shipml.errors import InferenceError, SchemaError, ShipmlError, TooManyRows
from shipml.package.loaded import LoadedModel
from shipml.package.signature import Problem
from shipml.package.validation import (
    InputPolicy,
    check,
    dense_signature,
    raw_columns,
    record_getter,
    record_rows,
    rows_matrix,
)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~1.5 µs more to make, once per request
class Request:
    """One request's input, structurally checked: one raw array per signature column, or (numeric models) one
    float matrix with the columns in signature order, or (numeric models given records) one tuple of values per
    row in signature order, turned into numbers once per batch (``source``: the records, for the general path
    when a value is not a number)."""

    columns: dict[str, Any] | np.ndarray | list[tuple[Any, ...]]
    rows: int
    want_proba: bool = True
    source: Any = None


@dataclass(slots=True)
class Outcome:
    predictions: np.ndarray
    probabilities: np.ndarray | None
    warnings: list[Problem] = field(default_factory=list)


class ModelRunner:
    """One loaded model version behind its own batcher."""

    def __init__(self, model: LoadedModel, *, policy: InputPolicy, max_rows: int, max_batch_size: int,
                 max_latency_ms: float, max_queue: int, on_batch: Any = None) -> None:
        self.model = model
        self.policy = replace(policy, max_problems=1000)
        self.max_rows = max_rows
        self.names = model.signature.names
        self.dense = dense_signature(model.signature)
        self._getter = record_getter(self.names)
        self.compile_status = "pending"  # then set by the server (server/compiled.py)
        self.batcher: AdaptiveBatcher[Request, Outcome] = AdaptiveBatcher(
            self._process, name=model.ref, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
            max_queue=max_queue, on_batch=on_batch)

    # -- per request, on the event loop --------------------------------------------------------------------
    def prepare(self, data: Any, *, want_proba: bool = True) -> Request:
        """Structural checks of one request's input (missing/unknown columns, row limit)."""
        if self.dense:
            dense = self._dense(data)
            if dense is not None:
                if len(dense) > self.max_rows:
                    raise TooManyRows(f"{len(dense)} rows in one request; the limit is {self.max_rows}")
                return Request(dense, len(dense), want_proba, data)
        return self._general(data, want_proba)

    def _general(self, data: Any, want_proba: bool) -> Request:
        raw, rows, extra = raw_columns(data, self.model.signature)
        if rows > self.max_rows:
            raise TooManyRows(f"{rows} rows in one request; the limit is {self.max_rows}")
        problems = [Problem(None, name, "missing_column", "column is missing") for name in self.names
                    if name not in raw]
        if extra and self.policy.extra_columns == "reject":
            problems += [Problem(None, name, "extra_column", "column is not an input of the model")
                         for name in extra]
        if problems:
            raise SchemaError("input does not match the model's signature: " + "; ".join(map(str, problems[:5])),
                              problems)
        return Request({name: raw[name] for name in self.names}, rows, want_proba)

    def _dense(self, data: Any) -> np.ndarray | list[tuple[Any, ...]] | None:
        """The request as value rows (records holding exactly the signature's names) or a float matrix, when it
        plainly is one; the rows become numbers in the batch (one conversion for all its requests)."""
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return record_rows(data, self.names, self._getter)
        if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == len(self.names) \
                and data.dtype.kind in "fiu":
            return data.astype(np.float64, copy=False)
        return None

    async def infer(self, data: Any, *, want_proba: bool = True, deadline: float | None = None) -> Outcome:
        request = self.prepare(data, want_proba=want_proba)
        if request.rows == 0:
            empty = np.empty(0)
            proba = np.empty((0, len(self.model.classes or []))) if want_proba and self.model.has_proba else None
            return Outcome(empty, proba)
        return await self.batcher.submit(request, request.rows, deadline or time.monotonic() + 3600)

    # -- per batch, in the worker thread -------------------------------------------------------------------
    def _process(self, requests: Sequence[Request]) -> list[Outcome | Exception]:
        checked = check(self._merge(requests), self.model.signature, self.policy)
        bounds = offsets([r.rows for r in requests])
        problems = _by_request(checked.problems, bounds)
        if len(requests) > 1 and len(checked.problems) < checked.n_errors + checked.n_warnings:
            # the batch had more problems than are spelled out: some request may have lost its own (rare path)
            problems = [check(self._merge([r]), self.model.signature, self.policy).problems for r in requests]
        outcomes: list[Outcome | Exception | None] = [None] * len(requests)
        good: list[int] = list(range(len(requests)))
        if checked.bad_rows.any():  # which requests hold bad rows: one reduction, not one per request
            running = np.concatenate([[0], np.cumsum(checked.bad_rows, dtype=np.int64)])
            good = []
            for i, (start, stop) in enumerate(bounds):
                bad = int(running[stop] - running[start])
                if bad:
                    outcomes[i] = _schema_error(problems[i], bad)
                else:
                    good.append(i)
        if good:
            want_proba = any(requests[i].want_proba for i in good)
            table = checked.table
            if len(good) < len(requests):
                rows = np.concatenate([np.arange(*bounds[i]) for i in good])
                table = table.take(rows)
            try:
                result = self.model.infer(table, proba=want_proba)
            except Exception as exc:  # the model failed on this batch: each of its requests gets the error
                error = exc if isinstance(exc, ShipmlError) else InferenceError(
                    f"{self.model.ref} failed to predict: {type(exc).__name__}")
                for i in good:
                    outcomes[i] = error
                return [o if o is not None else error for o in outcomes]
            position = 0
            for i in good:
                n = requests[i].rows
                proba = result.probabilities[position:position + n] \
                    if result.probabilities is not None and requests[i].want_proba else None
                warnings = [p for p in problems[i] if p.severity == "warning"]
                outcomes[i] = Outcome(result.predictions[position:position + n], proba, warnings)
                position += n
        return [o if o is not None else InferenceError("no outcome") for o in outcomes]

    def _merge(self, requests: Sequence[Request]) -> Any:
        parts = [r.columns for r in requests]
        if all(isinstance(p, list) for p in parts):  # value rows of every request: one conversion for all
            rows = parts[0] if len(parts) == 1 else [row for p in parts for row in p]
            matrix = rows_matrix(rows, len(self.names))  # type: ignore[arg-type]
            if matrix is not None:
                return matrix
        numeric = [self._numeric(r) for r in requests]
        if all(isinstance(p, np.ndarray) for p in numeric):
            return numeric[0] if len(numeric) == 1 else np.concatenate(numeric)  # type: ignore[arg-type]
        columns = [p if isinstance(p, dict) else {n: p[:, j] for j, n in enumerate(self.names)} for p in numeric]
        return merge_columns(columns, self.names)

    def _numeric(self, request: Request) -> dict[str, Any] | np.ndarray:
        """A request's input as a float matrix, or as raw columns when some value is not a number (the checks
        then name the row, column and rule)."""
        if not isinstance(request.columns, list):
            return request.columns
        matrix = rows_matrix(request.columns, len(self.names))
        if matrix is not None:
            return matrix
        general = self._general(request.source, request.want_proba).columns
        assert isinstance(general, dict)
        return general


def _by_request(problems: list[Problem], bounds: list[tuple[int, int]]) -> list[list[Problem]]:
    """Each request's own row problems, rows numbered within the request."""
    mine: list[list[Problem]] = [[] for _ in bounds]
    if not problems:
        return mine
    starts = np.array([start for start, _ in bounds])
    for p in problems:
        if p.row is not None:
            i = int(np.searchsorted(starts, p.row, side="right")) - 1
            mine[i].append(replace(p, row=p.row - bounds[i][0]))
    return mine


def _schema_error(problems: list[Problem], bad_rows: int) -> SchemaError:
    own = [p for p in problems if p.severity == "error"]
    shown = "; ".join(str(p) for p in own[:5])
    more = f" (and {len(own) - 5} more)" if len(own) > 5 else ""
    return SchemaError(f"input does not match the model's signature: {shown}{more}", own,
                       max(len(own), bad_rows))
