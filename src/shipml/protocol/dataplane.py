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
from shipml.package.validation import InputPolicy, check, raw_columns


@dataclass(frozen=True)
class Request:
    """One request's input, structurally checked: one raw array per signature column."""

    columns: dict[str, Any]
    rows: int
    want_proba: bool = True


@dataclass(frozen=True)
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
        self.batcher: AdaptiveBatcher[Request, Outcome] = AdaptiveBatcher(
            self._process, name=model.ref, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
            max_queue=max_queue, on_batch=on_batch)

    # -- per request, on the event loop --------------------------------------------------------------------
    def prepare(self, data: Any, *, want_proba: bool = True) -> Request:
        """Structural checks of one request's input (missing/unknown columns, row limit)."""
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

    async def infer(self, data: Any, *, want_proba: bool = True, deadline: float | None = None) -> Outcome:
        request = self.prepare(data, want_proba=want_proba)
        if request.rows == 0:
            empty = np.empty(0)
            return Outcome(empty, np.empty((0, len(self.model.classes or []))) if want_proba else None)
        return await self.batcher.submit(request, request.rows, deadline or time.monotonic() + 3600)

    # -- per batch, in the worker thread -------------------------------------------------------------------
    def _process(self, requests: Sequence[Request]) -> list[Outcome | Exception]:
        merged = merge_columns([r.columns for r in requests], self.names)
        checked = check(merged, self.model.signature, self.policy)
        bounds = offsets([r.rows for r in requests])
        outcomes: list[Outcome | Exception | None] = [None] * len(requests)
        good: list[int] = []
        for i, (start, stop) in enumerate(bounds):
            if checked.bad_rows[start:stop].any():
                outcomes[i] = _schema_error(checked.problems, start, stop, int(checked.bad_rows[start:stop].sum()))
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
                start, stop = bounds[i]
                warnings = [_rebase(p, start) for p in checked.problems if p.severity == "warning"
                            and p.row is not None and start <= p.row < stop]
                outcomes[i] = Outcome(result.predictions[position:position + n], proba, warnings)
                position += n
        return [o if o is not None else InferenceError("no outcome") for o in outcomes]




def _rebase(p: Problem, start: int) -> Problem:
    return replace(p, row=p.row - start) if p.row is not None else p


def _schema_error(problems: list[Problem], start: int, stop: int, bad_rows: int) -> SchemaError:
    own = [_rebase(p, start) for p in problems
           if p.severity == "error" and p.row is not None and start <= p.row < stop]
    shown = "; ".join(str(p) for p in own[:5])
    more = f" (and {len(own) - 5} more)" if len(own) > 5 else ""
    return SchemaError(f"input does not match the model's signature: {shown}{more}", own,
                       max(len(own), bad_rows))
