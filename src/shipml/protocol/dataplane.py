"""The transport-free dataplane: decode → validate → batch → predict → split. No HTTP here.

Per request, only the structure is checked (columns present, no unknown columns, row limit), which is cheap.
The value checks (types, nulls, ranges, categories) run once per merged batch, vectorised, and their verdicts
are split back: a request with a bad row fails alone with its own problems (rows numbered within it), the other
requests of the batch are predicted as usual.

Nothing one request holds may fail another. Should the checks of a merged batch raise all the same (a gap in
them), each request is checked alone and one that cannot be checked gets its own 422; should the model raise on
the rows of several requests, they are predicted in halves down to the request(s) it cannot predict. Both cost
nothing while all goes well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np

from shipml.batching.batcher import AdaptiveBatcher, BatchStats
from shipml.batching.merge import merge_columns, offsets
from shipml.errors import InferenceError, SchemaError, ShipmlError, TooManyRows
from shipml.package.columns import raw_columns, record_getter, record_rows, rows_matrix
from shipml.package.loaded import LoadedModel
from shipml.package.signature import Problem, Signature
from shipml.package.validation import InputPolicy, Table, check, dense_signature
from shipml.protocol.records import DecodedRecords, RecordsDecoder

log = logging.getLogger("shipml.dataplane")


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
    model: ModelRunner | None = None  # the runner that predicts it, when not the batch's own (see ``infer``)
    tag: Tag | None = None  # who asked, for the batch sink (monitoring): set only when the runner has a sink


#: A request as the batch sink sees it: (request id, endpoint, variant, monotonic time the request arrived).
Tag = tuple[str, str, str, float]


class BatchSink(Protocol):
    """Gets each predicted batch, in the worker thread, right after the model answered: the checked input
    ``table``, each answered request's row ``spans`` in it, the requests, and each request's answer (an exception
    for a request the model failed); ``whole``: the batch's answer when one predict call gave it (each request's
    is a slice of it). Must return at once (append to a list): it runs on the prediction path."""

    def observe(self, model: LoadedModel, table: Table, spans: list[tuple[int, int]],
                requests: Sequence[Request], results: list[Any],
                whole: tuple[np.ndarray, np.ndarray | None] | None = None) -> None: ...


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
        #: reads a JSON body of records of this model's inputs straight into rows (None: not a numeric model)
        self.decoder = RecordsDecoder(self.names) if self.dense else None
        self._getter = record_getter(self.names)
        self.compile_status = "pending"  # then set by the server (server/compiled.py)
        self.active = 0  # requests holding this runner now (the model repository unloads it only at zero)
        self.batcher: AdaptiveBatcher[Request, Outcome] = AdaptiveBatcher(
            self._process, name=model.ref, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
            max_queue=max_queue, on_batch=None if on_batch is None else self._observed)
        self._observer = on_batch  # this runner's batch metrics: its own batches, and its rides in another's
        self._rides: list[tuple[ModelRunner, BatchStats]] = []  # riders' shares of the batch just processed
        self.monitor: BatchSink | None = None  # gets every predicted batch (monitoring), when set

    # -- per request, on the event loop --------------------------------------------------------------------
    def prepare(self, data: Any, *, want_proba: bool = True) -> Request:
        """Structural checks of one request's input (missing/unknown columns, row limit)."""
        if type(data) is DecodedRecords:  # of this model's inputs (``infer`` turned others back into records)
            if len(data.rows) > self.max_rows:
                raise TooManyRows(f"{len(data.rows)} rows in one request; the limit is {self.max_rows}")
            return Request(data.rows, len(data.rows), want_proba, data)
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

    async def infer(self, data: Any, *, want_proba: bool = True, deadline: float | None = None,
                    via: ModelRunner | None = None, tag: Tag | None = None) -> Outcome:
        """The answer to one request. ``via``: another runner, whose inputs have this one's names and types, that
        checks and predicts it in this runner's batches (see ``_process_riders``): how a canary or an A/B variant
        shares the stable model's batches and worker thread instead of halving the batches. ``tag``: who asked,
        for the monitoring sink of the runner that predicts it."""
        if type(data) is DecodedRecords and (self.decoder is None or data.names != self.decoder.names):
            data = data.records()  # decoded for another model's inputs (a swap between decoding and now)
        try:
            request = self.prepare(data, want_proba=want_proba)
        except SchemaError as exc:
            if any(p.rule in _STRUCTURAL for p in exc.problems):  # rare: the values' problems too, off the loop
                raise await self.batcher.call(partial(self._every_problem, data, exc)) from None
            raise
        if request.rows == 0:
            model = (via or self).model
            empty = np.empty(0)
            proba = np.empty((0, len(model.classes or []))) if want_proba and model.has_proba else None
            return Outcome(empty, proba)
        if via is not None and via is not self:
            request.model = via
        request.tag = tag
        return await self.batcher.submit(request, request.rows, deadline or time.monotonic() + 3600)

    def _every_problem(self, data: Any, structural: SchemaError) -> SchemaError:
        """The 422 of a request with missing or unknown columns, with the problems of the columns it has."""
        try:
            checked = check(data, self.model.signature, self.policy)
        except Exception:  # the structural problems alone, then
            return structural
        errors = [p for p in checked.problems if p.severity == "error"]
        return _schema_error(errors, checked.n_errors)

    # -- per batch, in the worker thread -------------------------------------------------------------------
    def _process(self, requests: Sequence[Request]) -> list[Outcome | Exception]:
        if any(r.model is not None and r.model is not self for r in requests):
            return self._process_riders(requests)
        try:
            checked = check(self._merge(requests), self.model.signature, self.policy)
        except Exception as exc:  # a value the checks could not handle: find whose it is, fail that one alone
            return self._isolate(requests, exc)
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
                table = table.take(np.concatenate([np.arange(*bounds[i]) for i in good]))
            spans = offsets([requests[i].rows for i in good])
            results, whole = self._answers(table, spans, want_proba)
            if self.monitor is not None:
                self.monitor.observe(self.model, table, spans,
                                     requests if len(good) == len(requests) else [requests[i] for i in good],
                                     results, whole)
            for i, result in zip(good, results, strict=True):
                if isinstance(result, Exception):
                    outcomes[i] = result
                    continue
                predictions, probabilities = result
                warnings = [p for p in problems[i] if p.severity == "warning"]
                outcomes[i] = Outcome(predictions, probabilities if requests[i].want_proba else None, warnings)
        return [o if o is not None else InferenceError("no outcome") for o in outcomes]

    def _process_riders(self, requests: Sequence[Request]) -> list[Outcome | Exception]:
        """A batch holding requests for other runners (a canary, A/B variants: ``infer(via=...)``): each
        runner checks its own requests against its own signature and input policy, and predicts them, in this
        one hand-off to the worker thread."""
        outcomes: list[Outcome | Exception | None] = [None] * len(requests)
        for runner, members in _by_model(self, requests):
            started = time.monotonic()
            for i, outcome in zip(members, runner._process([requests[i] for i in members]), strict=True):
                outcomes[i] = outcome
            if runner is not self:  # its share of the batch goes to its own metrics (see _observed)
                rows = sum(requests[i].rows for i in members)
                self._rides.append((runner, BatchStats(rows, len(members), 0, time.monotonic() - started)))
        return [o if o is not None else InferenceError("no outcome") for o in outcomes]

    def _observed(self, stats: BatchStats) -> None:
        """A batch of this runner's batcher, done: each rider's share is reported as the rider's, the rest as
        this runner's (on the event loop, after the worker thread has recorded the shares)."""
        rides, self._rides = self._rides, []
        for runner, share in rides:
            if runner._observer is not None:
                runner._observer(share)
            stats = BatchStats(stats.rows - share.rows, stats.requests - share.requests, stats.dropped,
                               max(0.0, stats.seconds - share.seconds))
        if self._observer is not None:
            self._observer(stats)

    def _predict(self, table: Table, spans: list[tuple[int, int]], proba: bool) -> list[_Answer | Exception]:
        return self._answers(table, spans, proba)[0]

    def _answers(self, table: Table, spans: list[tuple[int, int]],
                 proba: bool) -> tuple[list[_Answer | Exception], _Answer | None]:
        """The model's answer for each span of rows (one request's) of ``table``: one predict call for all of
        them (its whole answer is returned too). When it raises and there are several, the two halves are
        predicted apart, and so on down: only the request(s) the model cannot predict fail, every other gets the
        answer it gets alone (and there is no whole answer)."""
        try:
            result = self.model.infer(table, proba=proba)
        except Exception as exc:
            if len(spans) == 1:
                return [self._failure(exc)], None
            half = len(spans) // 2
            first, second = spans[:half], spans[half:]
            cut = first[-1][1]
            return (self._predict(table.take(np.arange(0, cut)), first, proba)
                    + self._predict(table.take(np.arange(cut, table.n_rows)), _shift(second, cut), proba)), None
        predictions, probabilities = result.predictions, result.probabilities
        whole = (predictions, probabilities)
        if len(spans) == 1:
            return [whole], whole
        if probabilities is None:
            return [(predictions[start:stop], None) for start, stop in spans], whole
        return [(predictions[start:stop], probabilities[start:stop]) for start, stop in spans], whole

    def _failure(self, exc: Exception) -> Exception:
        """What the requests of a failed predict call get: a ShipmlError as it is, anything else an
        InferenceError caused by it (its type, message and traceback reach the operator's log, never the
        client: a 5xx says only "internal error")."""
        if isinstance(exc, ShipmlError):
            return exc
        error = InferenceError(f"{self.model.ref} failed to predict: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    def _isolate(self, requests: Sequence[Request], exc: Exception) -> list[Outcome | Exception]:
        """The batch could not be checked (``exc``): check each request alone; one that cannot be checked either
        fails with its own 422, the others are processed as usual."""
        outcomes: list[Outcome | Exception | None] = [None] * len(requests)
        fine: list[int] = []
        for i, request in enumerate(requests):
            try:
                check(self._merge([request]), self.model.signature, self.policy)
            except Exception as own:
                outcomes[i] = self._unreadable(request, own)
            else:
                fine.append(i)
        if len(requests) == 1 and fine:  # checked alone it passed, then failed: give up on it (no retry loop)
            return [self._unreadable(requests[0], exc)]
        if len(fine) == len(requests):  # each passes alone, yet not together: process each alone
            log.warning("%s: a batch of %d requests could not be checked together (%s: %s); checking each"
                        " alone", self.model.ref, len(requests), type(exc).__name__, exc)
            return [self._process([r])[0] for r in requests]
        if fine:
            for i, outcome in zip(fine, self._process([requests[i] for i in fine]), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else InferenceError("no outcome") for o in outcomes]

    def _unreadable(self, request: Request, exc: Exception) -> SchemaError:
        """The 422 of a request whose input the checks could not handle, naming the columns at fault where a
        column checked alone fails too. The operator's log gets the exception: the checks have a gap."""
        log.warning("%s: a request's input could not be checked; refused with 422", self.model.ref, exc_info=exc)
        columns: list[str] = []
        try:
            raw = self._numeric(request)
            if isinstance(raw, dict):
                for spec in self.model.signature.inputs:
                    try:
                        check({spec.name: raw[spec.name]}, self._alone(spec.name), self.policy)
                    except Exception:
                        columns.append(spec.name)
        except Exception:
            pass
        problems = [Problem(None, name, "type", f"values could not be read as {self._alone(name).inputs[0].dtype}")
                    for name in columns] or [Problem(None, None, "type", "input could not be read")]
        return SchemaError("input does not match the model's signature: " + "; ".join(map(str, problems[:5])),
                           problems)

    def _alone(self, name: str) -> Signature:
        """The model's signature reduced to one input column."""
        signature = self.model.signature
        return signature.model_copy(update={"inputs": [signature.column(name)]})

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
        source = request.source.records() if type(request.source) is DecodedRecords else request.source
        general = self._general(source, request.want_proba).columns
        assert isinstance(general, dict)
        return general


_STRUCTURAL = frozenset({"missing_column", "extra_column"})
#: One request's share of a predict call: (predictions, probabilities). A tuple: made once per request per batch.
_Answer = tuple[np.ndarray, np.ndarray | None]


def _by_model(own: ModelRunner, requests: Sequence[Request]) -> list[tuple[ModelRunner, list[int]]]:
    """The requests grouped by the runner that predicts them (``own`` first), in order."""
    groups: dict[ModelRunner, list[int]] = {own: []}
    for i, request in enumerate(requests):
        groups.setdefault(request.model or own, []).append(i)
    return [(runner, members) for runner, members in groups.items() if members]


def _shift(spans: list[tuple[int, int]], by: int) -> list[tuple[int, int]]:
    return [(start - by, stop - by) for start, stop in spans]


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
