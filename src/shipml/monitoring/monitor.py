"""The monitor of one server process: it watches every model version the process serves.

The dataplane hands it each predicted batch (:meth:`Monitor.observe`, in the worker thread: one list append, no
wake-up). Its own thread takes what has gathered every ``TICK_S`` and, per batch, adds the rows to the model's drift
window (counts on the reference's bins: no rows kept), its recent scores (for the estimated performance) and the
index of recent predictions by request id (to join ground truth to), and hands the batch to the prediction log
(which writes in a thread of its own). Every ``evaluate_interval_s`` it publishes its state for the other workers
and, in the one worker that leads, evaluates the alert rules. Nothing here can fail or slow a prediction: a full
intake drops batches (counted) rather than grow.

Feedback (:meth:`Monitor.feedback`) is joined to the index on the caller's thread; ids not in memory are looked up
in the log on disk (another worker's, or an older prediction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shipml.batching.merge import offsets
from shipml.errors import ShipmlError
from shipml.monitoring.alerts import AlertEvaluator, AlertEvent, AlertKey, Figures
from shipml.monitoring.counts import Counts, Window
from shipml.monitoring.drift import DriftReport, drift
from shipml.monitoring.exchange import Exchange
from shipml.monitoring.feedback import FeedbackLog, Label, join, labels_table
from shipml.monitoring.log import (
    PROBA_PREFIX,
    LogBatch,
    PredictionLog,
    class_text,
    path_component,
    prediction_array,
)
from shipml.monitoring.performance import LabelWindow, ScoreWindow
from shipml.monitoring.reference import Reference
from shipml.monitoring.spec import MonitoringSpec
from shipml.monitoring.webhook import Webhook
from shipml.package.loaded import LoadedModel
from shipml.package.validation import Table
from shipml.protocol.dataplane import Request, Tag

__all__ = ["FeedbackResult", "Monitor", "MonitorCounters"]

_W = TypeVar("_W", LabelWindow, ScoreWindow)

log = logging.getLogger("shipml.monitoring")

TICK_S = 0.05
#: The tag of a request predicted without one (no request context): not in the feedback index, latency 0.
_UNTAGGED = ("", "", "", 0.0)
#: Batches waiting for the monitor's thread, at most (each is one merged batch: many requests under load).
MAX_PENDING = 10_000


class MonitorCounters(Protocol):
    """Where the monitor counts what it does (the server's Prometheus metrics)."""

    def logged(self, model: str, version: str, rows: int) -> None: ...

    def dropped(self, model: str, version: str, rows: int, reason: str) -> None: ...

    def feedback(self, model: str, version: str, outcome: str, rows: int) -> None: ...

    def webhook(self, outcome: str) -> None: ...


@dataclass(slots=True)
class _Served:
    model: LoadedModel
    table: Table
    spans: list[tuple[int, int]]
    tags: list[Tag | None]  # each request's
    results: list[Any] | None  # each request's answer; None when ``whole`` holds them all
    whole: tuple[np.ndarray, np.ndarray | None] | None  # the batch's answer, when one predict call gave it
    done: float  # time.monotonic()
    wall: float  # time.time()


@dataclass(eq=False)
class Watched:
    """One model version under watch."""

    model: LoadedModel
    reference: Reference | None
    window: Window | None
    scores: ScoreWindow
    labels: LabelWindow
    endpoints: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.model.name}:{self.model.version}"


@dataclass(frozen=True)
class FeedbackResult:
    received: int
    matched: int
    unmatched: int
    unmatched_ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "matched": self.matched, "unmatched": self.unmatched,
                "unmatched_ids": self.unmatched_ids}


@dataclass(slots=True)
class _Chunk:
    """The predictions of one tick's batches of one model version, and whose they are: the feedback index. The
    lookup by request id is built the first time feedback looks here (most chunks are never looked in: nothing
    is done per request on the serving side)."""

    watched: Watched
    predictions: np.ndarray
    probabilities: np.ndarray | None
    ids: Sequence[str]  # each request's id ("": untagged)
    spans: np.ndarray | None  # each request's rows [start, stop) in the arrays, (n, 2) (None: row i is request i)
    lookup: dict[str, int] | None = None

    @property
    def rows(self) -> int:
        return len(self.predictions)

    def find(self, request_id: str) -> tuple[int, int] | None:
        """The rows of ``request_id``'s newest prediction in this chunk, if it has one."""
        if self.lookup is None:
            self.lookup = dict(zip(self.ids, range(len(self.ids)), strict=True))  # the later wins
            self.lookup.pop("", None)
        i = self.lookup.get(request_id)
        if i is None:
            return None
        if self.spans is None:
            return i, i + 1
        return int(self.spans[i, 0]), int(self.spans[i, 1])


class Monitor:
    def __init__(self, spec: MonitoringSpec, counters: MonitorCounters, *, exchange_dir: Path | None = None,
                 clock: Any = time.time) -> None:
        self.spec = spec
        self.counters = counters
        self.clock = clock
        self.directory = Path(spec.log.dir) if spec.log.dir else None
        self.log = None if self.directory is None else PredictionLog(
            self.directory, flush_interval_s=spec.log.flush_interval_s, max_file_rows=spec.log.max_file_rows,
            max_queue_rows=spec.log.max_queue_rows, on_written=counters.logged, on_dropped=counters.dropped)
        self.feedback_log = None if self.directory is None else FeedbackLog(self.directory)
        self.exchange = None if exchange_dir is None else Exchange(exchange_dir)
        self.evaluator = AlertEvaluator(spec.alerts, default_over_rows=spec.performance.window_rows)
        self.webhook = None if spec.webhook is None else Webhook(spec.webhook, on_outcome=counters.webhook)
        self._watched: dict[str, Watched] = {}
        self._pending: list[_Served] = []
        self._chunks: deque[_Chunk] = deque()  # recent predictions, oldest first (the feedback index)
        self._index_rows = 0
        self._index_lock = threading.Lock()
        self._drain_lock = threading.Lock()  # the monitor's thread and catch_up() take batches in one at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_evaluation = 0.0
        self._peer_alerts: list[dict[str, Any]] = []

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shipml-monitor", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Take in what is pending, write the log out, stop (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._drain()
        if self.log is not None:
            self.log.close(timeout_s)
        if self.webhook is not None:
            self.webhook.close(timeout_s)
        if self.exchange is not None:
            self.exchange.close()

    def watch(self, model: LoadedModel) -> None:
        key = f"{model.name}:{model.version}"
        if key in self._watched:
            return
        reference: Reference | None = None
        try:
            reference = Reference.from_model(model)
        except ShipmlError as exc:  # a package without a training profile: no drift
            log.warning("%s: no drift monitoring (%s)", model.ref, exc)
        window = None if reference is None else Window(reference, self.spec.drift.window_s)
        task = model.signature.outputs.task
        capacity = self.spec.performance.window_rows
        self._watched[key] = Watched(model, reference, window, ScoreWindow(capacity, task=task, classes=model.classes),
                                     LabelWindow(capacity, task=task, classes=model.classes))

    def unwatch(self, model: LoadedModel) -> None:
        self._watched.pop(f"{model.name}:{model.version}", None)

    # -- the dataplane's sink (worker thread) ---------------------------------------------------------------
    def observe(self, model: LoadedModel, table: Table, spans: list[tuple[int, int]], requests: Sequence[Request],
                results: list[Any], whole: tuple[np.ndarray, np.ndarray | None] | None = None) -> None:
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            self.counters.dropped(model.name, model.version, table.n_rows, "queue_full")
            return
        # only the tags are kept (the requests and the answers' slices are let go here, while in the cache)
        pending.append(_Served(model, table, spans, [r.tag for r in requests], None if whole is not None else results,
                               whole, time.monotonic(), self.clock()))

    # -- the monitor's thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self._drain()
                now = self.clock()
                if now - self._last_evaluation >= self.spec.evaluate_interval_s:
                    self._last_evaluation = now
                    self._evaluate(now)
            except Exception:  # the monitor must outlive any bug of its own; the log says what broke
                log.exception("the monitor failed to process a batch")

    def catch_up(self) -> None:
        """Take in the batches predicted since the last tick now (before answering feedback or a figure: a label
        sent right after its prediction finds it)."""
        self._drain()

    def _drain(self) -> None:
        """Take in what gathered since the last tick: per model version, all its batches as one (one window
        update, one log batch: the fixed costs are paid per tick, not per batch)."""
        with self._drain_lock:
            self._take_in()

    def _take_in(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[int, list[_Served]] = {}
        for served in pending:
            groups.setdefault(id(served.model), []).append(served)
        for group in groups.values():
            model = group[0].model
            watched = self._watched.get(f"{model.name}:{model.version}")
            if watched is not None:
                self._ingest(watched, group)

    def _ingest(self, watched: Watched, group: list[_Served]) -> None:
        matrices: list[np.ndarray] = []
        tables: list[Table] = []
        predictions: list[np.ndarray] = []
        probabilities: list[np.ndarray | None] = []
        spans: list[np.ndarray | None] = []  # per batch, each request's rows in the tick's arrays (None: one each)
        tags: list[Any] = []
        done: list[float] = []
        requests: list[int] = []
        firsts: list[int] = []  # per batch, its first row in the tick's arrays
        rows = 0
        for served in group:
            batch_tags, own_spans, table = served.tags, served.spans, served.table
            whole, results = served.whole, served.results  # whole: one predict call answered every request
            if results is not None and any(isinstance(result, BaseException) for result in results):
                # rare: keep the answered ones
                answered = [i for i, result in enumerate(results) if not isinstance(result, BaseException)]
                if not answered:
                    continue
                table = table.take(np.concatenate([np.arange(*own_spans[i]) for i in answered]))
                results = [results[i] for i in answered]
                batch_tags = [batch_tags[i] for i in answered]
                own_spans = list(offsets([own_spans[i][1] - own_spans[i][0] for i in answered]))
            tables.append(table)
            if table.dense is not None:
                matrices.append(table.dense)
            if whole is not None:  # one array per batch, not one per request
                predictions.append(whole[0])
                probabilities.append(whole[1])
            elif results is not None:
                predictions.extend([result[0] for result in results])
                probabilities.extend([result[1] for result in results])
            spans.append(None if table.n_rows == len(batch_tags) else np.asarray(own_spans, dtype=np.int64) + rows)
            firsts.append(rows)
            rows += table.n_rows
            tags.extend(batch_tags)
            done.append(served.done)
            requests.append(len(batch_tags))
        if not rows:
            return
        now = group[-1].wall
        names = watched.model.signature.names
        matrix: np.ndarray | None = None
        if len(matrices) == len(tables):  # numeric models: one matrix
            matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
            columns = Table.from_matrix(matrix, names).columns
        else:
            columns = {name: np.concatenate([t.columns[name] for t in tables]) for name in names}
        predicted = predictions[0] if len(predictions) == 1 else np.concatenate(predictions)
        proba = None if any(p is None for p in probabilities) else (
            probabilities[0] if len(probabilities) == 1 else np.concatenate(probabilities))  # type: ignore[arg-type]
        if watched.window is not None:
            watched.window.add(columns, predicted, now, matrix=matrix, names=names)
        watched.scores.add(now, predicted, proba)
        request_spans = None if all(part is None for part in spans) else np.concatenate(
            [_single_rows(first, k) if part is None else part
             for part, first, k in zip(spans, firsts, requests, strict=True)])
        # the tags' fields as columns: one pass in C, not one Python step per request and field
        untagged = None in tags
        ids, endpoints, variants, starts = zip(*[_UNTAGGED if t is None else t for t in tags] if untagged else tags,
                                               strict=True)
        latency = np.repeat(np.asarray(done), requests) - np.fromiter(starts, dtype=np.float64, count=len(starts))
        if untagged:
            latency[[i for i, tag in enumerate(tags) if tag is None]] = 0.0
        self._remember(watched, ids, endpoints, request_spans, predicted, proba)
        if self.log is not None:
            spans_now = _single_rows(0, len(ids)) if request_spans is None else request_spans
            self._log(watched, now, columns, spans_now, ids, endpoints, variants, latency, predicted, proba)

    def _remember(self, watched: Watched, ids: Sequence[str], endpoints: Sequence[str], spans: np.ndarray | None,
                  predictions: np.ndarray, probabilities: np.ndarray | None) -> None:
        """Keep the tick's predictions for feedback: one chunk, the newest ``index_rows`` rows in all (whole
        chunks are let go, oldest first; the newest is always kept)."""
        named = set(endpoints)
        named.discard("")
        watched.endpoints.update(named)
        chunk = _Chunk(watched, predictions, probabilities, ids, spans)
        limit = self.spec.performance.index_rows
        with self._index_lock:
            chunks = self._chunks
            chunks.append(chunk)
            self._index_rows += chunk.rows
            while self._index_rows - chunks[0].rows >= limit and len(chunks) > 1:
                self._index_rows -= chunks.popleft().rows

    def _find(self, request_id: str) -> tuple[_Chunk, int, int] | None:
        """The newest prediction held in memory for ``request_id`` (caller holds the index lock)."""
        for chunk in reversed(self._chunks):
            found = chunk.find(request_id)
            if found is not None:
                return chunk, found[0], found[1]
        return None

    def _log(self, watched: Watched, now: float, columns: dict[str, np.ndarray], spans: np.ndarray,
             ids: Sequence[str], endpoints: Sequence[str], variants: Sequence[str], latency: np.ndarray,
             predictions: np.ndarray, probabilities: np.ndarray | None) -> None:
        assert self.log is not None
        sample = self.spec.log.sample
        if sample < 1.0:  # a sampled-out request's rows stay out of the batch's spans: they are not written
            keep = np.flatnonzero(np.random.random(len(ids)) < sample)
            if not len(keep):
                return
            spans, latency = spans[keep], latency[keep]
            ids, endpoints, variants = ([values[i] for i in keep.tolist()] for values in (ids, endpoints, variants))
        model = watched.model
        self.log.submit(LogBatch(
            time=now, model=model.name, version=model.version, inputs=columns, signature=model.signature,
            predictions=predictions, probabilities=probabilities, classes=model.classes, request_ids=ids,
            endpoints=endpoints, variants=variants, spans=spans, latency_s=latency))

    # -- alerts -------------------------------------------------------------------------------------------
    def _evaluate(self, now: float) -> None:
        if self.exchange is not None:
            self.exchange.publish({w.key: self._blobs(w, now) for w in list(self._watched.values())},
                                  [a.to_dict() for a in self.evaluator.active()])
            if not self.exchange.lead():
                return
        for watched in list(self._watched.values()):
            labels, scores = self._labels(watched), self._scores(watched)
            performance = {**labels.metrics(), **scores.metrics()}
            figures = Figures(drift=self.drift(watched, now), performance=performance, labelled_rows=len(labels),
                              labels=labels, scores=scores)
            for endpoint in sorted(watched.endpoints) or [""]:
                key = AlertKey(endpoint, watched.model.name, watched.model.version)
                for event in self.evaluator.evaluate(now, key, figures):
                    self._announce(event)

    def _announce(self, event: AlertEvent) -> None:
        body = event.to_dict()
        log.warning("alert %s %s: %s", body["alert"], body["state"], orjson.dumps(body).decode())
        if self.directory is not None:
            path = self.directory / path_component(str(body["model"])) / "alerts.jsonl"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as out:
                    out.write(orjson.dumps(body) + b"\n")
            except OSError as exc:
                log.warning("cannot record the alert in %s: %s", path, exc.strerror or exc)
        if self.webhook is not None:
            self.webhook.send(event)

    def active_alerts(self) -> list[dict[str, Any]]:
        """The alerts firing now (the leading worker's, wherever asked)."""
        own = [a.to_dict() for a in self.evaluator.active()]
        if own or self.exchange is None:
            return own
        for peer in self.exchange.peers():
            if peer.alerts:
                return peer.alerts
        return []

    # -- figures (any thread) ------------------------------------------------------------------------------
    def watched(self) -> list[Watched]:
        return list(self._watched.values())

    def find(self, model: LoadedModel) -> Watched | None:
        return self._watched.get(f"{model.name}:{model.version}")

    def _blobs(self, watched: Watched, now: float) -> dict[str, bytes]:
        blobs = {"scores": watched.scores.to_bytes(), "labels": watched.labels.to_bytes()}
        if watched.window is not None:
            blobs["counts"] = watched.window.counts(now).to_bytes()
        return blobs

    def _peer_blobs(self, watched: Watched, name: str) -> Iterable[bytes]:
        if self.exchange is None:
            return
        for peer in self.exchange.peers():
            blob = peer.models.get(watched.key, {}).get(name)
            if blob is not None:
                yield blob

    def counts(self, watched: Watched, now: float | None = None) -> Counts | None:
        if watched.window is None or watched.reference is None:
            return None
        counts = watched.window.counts(self.clock() if now is None else now)
        for blob in self._peer_blobs(watched, "counts"):
            try:
                counts.merge(Counts.from_bytes(watched.reference, blob))
            except ValueError as exc:
                log.warning("%s: skipping another worker's drift counts: %s", watched.key, exc)
        return counts

    def drift(self, watched: Watched, now: float | None = None) -> DriftReport | None:
        counts = self.counts(watched, now)
        if counts is None or watched.reference is None:
            return None
        return drift(watched.reference, counts, min_rows=self.spec.drift.min_rows)

    def _labels(self, watched: Watched) -> LabelWindow:
        return self._merged(watched, "labels", watched.labels)

    def _scores(self, watched: Watched) -> ScoreWindow:
        return self._merged(watched, "scores", watched.scores)

    def _merged(self, watched: Watched, name: str, own: _W) -> _W:
        """``own`` window merged with the same window of the other live workers (``own`` itself when alone)."""
        blobs = list(self._peer_blobs(watched, name))
        if not blobs:
            return own
        kind = type(own)
        merged: _W = kind.from_bytes(own.to_bytes())
        for blob in blobs:
            try:
                merged.merge(kind.from_bytes(blob))
            except ValueError as exc:
                log.warning("%s: skipping another worker's %s: %s", watched.key, name, exc)
        return merged

    def labelled_rows(self, watched: Watched) -> int:
        return len(self._labels(watched))

    def performance(self, watched: Watched, over_rows: int | None = None) -> dict[str, float]:
        """Realised figures over the last labelled rows, and the estimate from the recent scores."""
        figures = dict(self._labels(watched).metrics(over_rows))
        figures.update(self._scores(watched).metrics())
        return figures

    # -- feedback (caller's thread) ------------------------------------------------------------------------
    def feedback(self, labels: Sequence[Label], models: Sequence[LoadedModel]) -> FeedbackResult:
        """Join ground-truth labels to the predictions they are for (of ``models``: the endpoint's), add them to
        each version's labelled window, and store them in the feedback log. Predictions this process holds in
        memory are joined at once; the others are looked up in the prediction log on disk."""
        self.catch_up()
        now = self.clock()
        by_key = {f"{m.name}:{m.version}": m for m in models}
        hits: dict[str, list[tuple[str, _Chunk, int, int]]] = {}
        with self._index_lock:
            for request_id in dict.fromkeys(label.request_id for label in labels):
                entry = self._find(request_id)
                if entry is not None and entry[0].watched.key in by_key:
                    hits.setdefault(entry[0].watched.key, []).append((request_id, *entry))
        tables: list[tuple[Watched, pa.Table]] = [
            (entries[0][1].watched, _predictions_table(entries[0][1].watched.model, entries, now))
            for entries in hits.values()]
        found = {entry[0] for entries in hits.values() for entry in entries}
        missing = [label.request_id for label in labels if label.request_id not in found]
        if missing and self.directory is not None:
            tables += self._logged(missing, models)
        given = labels_table(labels, now)
        matched: set[str] = set()
        for watched, table in tables:
            joined = join(table, given)
            if joined.matched:
                watched.labels.add(now, joined.targets, joined.predictions, joined.probabilities)
                self.counters.feedback(watched.model.name, watched.model.version, "matched", joined.matched)
                matched.update(str(r) for r in joined.request_ids)
        unmatched = [label for label in labels if label.request_id not in matched]
        if unmatched:
            front = models[0] if models else None
            self.counters.feedback(front.name if front else "", front.version if front else "", "unmatched",
                                   len(unmatched))
        if self.feedback_log is not None and models:
            try:
                self.feedback_log.append(models[0].name, labels, now)
            except OSError as exc:
                log.warning("cannot store feedback for %s: %s", models[0].name, exc.strerror or exc)
        misses = list(dict.fromkeys(label.request_id for label in unmatched))
        return FeedbackResult(len(labels), len(labels) - len(unmatched), len(unmatched), misses[:20])

    def _logged(self, request_ids: list[str], models: Sequence[LoadedModel]) -> list[tuple[Watched, pa.Table]]:
        """The logged predictions of ``request_ids`` by the watched versions of ``models``."""
        from shipml.monitoring.logread import find_predictions

        assert self.directory is not None
        out: list[tuple[Watched, pa.Table]] = []
        for name in dict.fromkeys(m.name for m in models):
            table = find_predictions(self.directory, name, request_ids)
            if table.num_rows == 0 or "version" not in table.column_names:
                continue
            for model in models:
                watched = self.find(model)
                if model.name != name or watched is None:
                    continue
                own = table.filter(pc.equal(table.column("version"), model.version))
                if own.num_rows:
                    out.append((watched, own))
        return out


def _single_rows(first: int, requests: int) -> np.ndarray:
    """The spans of ``requests`` one-row requests whose rows start at ``first``, as an (n, 2) array."""
    starts = np.arange(first, first + requests, dtype=np.int64)
    return np.column_stack((starts, starts + 1))


def _predictions_table(model: LoadedModel, entries: list[tuple[str, _Chunk, int, int]], now: float) -> pa.Table:
    """Predictions held in memory, as the prediction log's columns :func:`join` reads."""
    ids = [rid for rid, _, lo, hi in entries for _ in range(hi - lo)]
    rows = np.concatenate([np.arange(hi - lo) for _, _, lo, hi in entries])
    predictions = np.concatenate([chunk.predictions[lo:hi] for _, chunk, lo, hi in entries])
    columns: dict[str, Any] = {
        "request_id": pa.array(ids, type=pa.string()), "row": pa.array(rows, type=pa.int32()),
        "time": pa.array(np.full(len(ids), round(now * 1e6), dtype=np.int64), type=pa.timestamp("us", tz="UTC")),
        "version": pa.array([model.version] * len(ids), type=pa.string()),
        "prediction": prediction_array(predictions)}
    if model.classes is not None and all(chunk.probabilities is not None for _, chunk, _, _ in entries):
        matrix = np.concatenate([chunk.probabilities[lo:hi] for _, chunk, lo, hi in entries
                                 if chunk.probabilities is not None])
        for j, label in enumerate(model.classes):
            columns[PROBA_PREFIX + class_text(label)] = pa.array(np.ascontiguousarray(matrix[:, j]))
    signatures = {f"{model.name}:{model.version}": model.signature.model_dump(mode="json")}
    return pa.table(columns).replace_schema_metadata({b"shipml.signatures": orjson.dumps(signatures)})
