"""The prediction log: every served (or batch-scored) row as Parquet, written off the request path.

The dataplane hands each merged batch to :meth:`PredictionLog.submit` as a :class:`LogBatch`. ``submit`` only
appends it to a bounded in-memory list (a lock and a list append: a few microseconds, never blocking, never
raising); the log's own daemon thread turns what is waiting into Arrow tables and writes them at each
``flush_interval_s`` (sooner when a file's worth of rows is waiting). The rows of batches waiting *or being
written* count towards ``max_queue_rows`` (every row a batch holds, logged or sampled out), so memory is bounded
by it; a batch that would cross it is dropped and counted
(``on_dropped(model, version, rows, "queue_full")``). A file that cannot be written (unwritable directory, disk
full) drops its rows with reason ``"write_error"``, logs one line per run of failures (not one per batch), and the
next flush tries again.

Layout, one model version (one schema) per file, never a file shared by two processes::

    DIR/<model>/<version>/<YYYY-MM-DD>/part-<UTC yyyymmddThhmmss>-<pid>-<seq>.parquet

The date directory is the UTC day of the file's earliest row; the time in the name is when the file was
written (no row in it is later). Each file is written under a dot-prefixed temporary name in its directory,
fsynced, and renamed: a process killed at any moment leaves only complete files (and perhaps a temporary one,
which readers skip), and loses at most what it had not flushed yet.

Columns: ``time`` (timestamp[us, UTC]), ``request_id``, ``row`` (int32, the row within its request),
``endpoint``, ``model``, ``version``, ``variant`` (strings), ``latency_ms`` (float64), ``input.<name>`` per
signature input (float64 for int and float inputs, null where the input was null or NaN; string; bool;
timestamp[ns, UTC]), ``prediction`` (the prediction's own type: integer, float, bool or string labels; a
fixed-size list for multi-output models), ``proba.<class>`` (float64, one per class, the class as text). Key-value
metadata: ``shipml.model``, ``shipml.version``, ``shipml.signature`` (the signature as JSON).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import itertools
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipml.package.signature import ColumnSpec, Signature, to_jsonable

__all__ = ["LogBatch", "PredictionLog", "batch_table", "class_text", "group_table", "write_parquet_atomic"]

log = logging.getLogger("shipml.monitoring")

OnWritten = Callable[[str, str, int], None]
OnDropped = Callable[[str, str, int, str], None]

INPUT_PREFIX = "input."
PROBA_PREFIX = "proba."
TEMP_PREFIX = "."
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
_sequence = itertools.count()  # per process: with the pid, no two files of any two writers share a name
_sequence_lock = threading.Lock()
_counts_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One merged batch's served rows (made by the dataplane in the worker thread, after prediction).

    ``spans`` gives each request's rows ``[start, stop)`` within the batch (pairs, or an ``(n, 2)`` integer
    array); rows outside every span are not logged (a sampled-out request, say). ``rows``, when given,
    overrides the row numbers the spans imply (one per logged row, in span order): a batch job logs each row's
    position in its input. The arrays are read later by the writer thread: the caller must not change them
    after submitting."""

    time: float
    model: str
    version: str
    inputs: Mapping[str, np.ndarray]
    signature: Signature
    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: Sequence[Any] | None
    request_ids: Sequence[str]
    endpoints: Sequence[str]
    variants: Sequence[str]
    spans: Sequence[tuple[int, int]] | np.ndarray
    latency_s: Sequence[float] | np.ndarray
    rows: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """Rows this batch logs (the rows of its spans)."""
        starts, stops = _bounds(self.spans)
        return int(np.maximum(stops - starts, 0).sum())


class PredictionLog:
    """A directory of Parquet files fed by :meth:`submit` (see the module docstring)."""

    def __init__(self, directory: str | Path, *, flush_interval_s: float = 5.0, max_file_rows: int = 100_000,
                 max_queue_rows: int = 100_000, on_written: OnWritten | None = None,
                 on_dropped: OnDropped | None = None) -> None:
        if not flush_interval_s > 0 or max_file_rows < 1 or max_queue_rows < 1:
            raise ValueError("flush_interval_s must be > 0, max_file_rows and max_queue_rows >= 1")
        self.directory = Path(directory)
        self.flush_interval_s = float(flush_interval_s)
        self.max_file_rows = int(max_file_rows)
        self.max_queue_rows = int(max_queue_rows)
        # the writer starts before the queue is full (a quarter of it), or when a file's rows are there: under
        # load, waiting for a full queue would drop what comes while it writes
        self._wake_rows = max(1, min(self.max_file_rows, self.max_queue_rows // 4))
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending: list[LogBatch] = []
        self._queued_rows = 0  # waiting or being written
        self._submitted = 0  # batches accepted, ever
        self._handled = 0  # batches written or dropped by the writer, ever
        self._closed = False
        self._failing = False
        self.written_rows = 0
        self.dropped_rows: dict[str, int] = {}
        self.files_written = 0
        self._thread = threading.Thread(target=self._run, name="shipml-predlog", daemon=True)
        self._thread.start()
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)

    # -- the caller's side (a server's worker thread) ---------------------------------------------------------

    def submit(self, batch: LogBatch) -> bool:
        """Queue ``batch`` for writing; False when it is dropped (queue full, or the log closed). Never blocks on
        I/O and never raises."""
        try:
            n = len(batch.predictions)  # what the batch holds in memory (its logged rows are at most this)
            with self._lock:
                if self._closed:
                    reason = "closed"
                elif self._queued_rows + n > self.max_queue_rows:
                    reason = "queue_full"
                else:
                    self._pending.append(batch)
                    self._queued_rows += n
                    self._submitted += 1
                    full = self._queued_rows >= self._wake_rows
                    reason = ""
            if reason:
                self._dropped(batch.model, batch.version, batch.n_rows, reason)
                return False
            if full:
                self._wake.set()
            return True
        except Exception:  # never fail a prediction for its log
            return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every batch submitted so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._submitted
        self._wake.set()
        with self._done:
            while self._handled < target and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.5))
                self._wake.set()
            return self._handled >= target

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is waiting and stop the writer thread (at most ``timeout_s``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)
        atexit.unregister(self._atexit)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # -- the writer thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            with self._lock:
                batches, self._pending = self._pending, []
                closing = self._closed
            if batches:
                self._write(batches)
            if closing:
                with self._lock:
                    rest, self._pending = self._pending, []
                if rest:
                    self._write(rest)
                return

    def _write(self, batches: list[LogBatch]) -> None:
        groups: dict[tuple[str, str], list[LogBatch]] = {}
        for b in batches:
            groups.setdefault((b.model, b.version), []).append(b)
        for (model, version), group in groups.items():
            rows = sum(b.n_rows for b in group)
            held = sum(len(b.predictions) for b in group)
            try:
                written = self._write_group(model, version, group)
            except Exception as exc:  # disk full, unwritable directory, an odd value: drop, count, go on
                self._dropped(model, version, rows, "write_error")
                if not self._failing:
                    log.error("prediction log: cannot write %s rows of %s:%s to %s (%s: %s); dropping rows until"
                              " writes succeed again", rows, model, version, self.directory,
                              type(exc).__name__, exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("prediction log: writing to %s again", self.directory)
                self._failing = False
                self.written_rows += written
                if self._on_written is not None:
                    try:
                        self._on_written(model, version, written)
                    except Exception:
                        log.exception("prediction log: on_written failed")
            finally:
                with self._done:
                    self._queued_rows -= held
                    self._handled += len(group)
                    self._done.notify_all()

    def _write_group(self, model: str, version: str, group: list[LogBatch]) -> int:
        table = group_table(group)
        if not table.num_rows:
            return 0
        first = dt.datetime.fromtimestamp(min(b.time for b in group), dt.UTC)
        folder = self.directory / path_component(model) / path_component(version) / first.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        for offset in range(0, table.num_rows, self.max_file_rows):
            part = table.slice(offset, self.max_file_rows)
            write_parquet_atomic(part, folder / part_name())
            self.files_written += 1
        return int(table.num_rows)

    def _dropped(self, model: str, version: str, rows: int, reason: str) -> None:
        with _counts_lock:
            self.dropped_rows[reason] = self.dropped_rows.get(reason, 0) + rows
        if self._on_dropped is not None:
            try:
                self._on_dropped(model, version, rows, reason)
            except Exception:
                log.exception("prediction log: on_dropped failed")


def _closer(ref: weakref.ReferenceType[PredictionLog]) -> Callable[[], None]:
    """At interpreter exit: close the log if it still exists (its daemon thread would die with what waits)."""

    def close() -> None:
        target = ref()
        if target is not None:
            target.close()

    return close


# -- files ----------------------------------------------------------------------------------------------------

def path_component(text: str) -> str:
    """A model name or version as one directory name: itself when it is a plain name (every registry name and
    version is), else a hex spelling that cannot climb out of the log directory."""
    if _SAFE.fullmatch(text) and ".." not in text:
        return text
    return "_x" + text.encode("utf-8", "surrogatepass").hex()


def part_name(now: float | None = None, prefix: str = "part") -> str:
    stamp = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).strftime("%Y%m%dT%H%M%S")
    with _sequence_lock:
        seq = next(_sequence)
    return f"{prefix}-{stamp}-{os.getpid()}-{seq:06d}.parquet"


def write_parquet_atomic(table: pa.Table, final: Path) -> None:
    """``table`` as the Parquet file ``final``: written under a dot-prefixed name beside it, fsynced, renamed, the
    directory fsynced. A crash leaves either the whole file or none (and maybe the temporary one)."""
    from shipml.jobs.workdir import fsync_dir

    tmp = final.with_name(f"{TEMP_PREFIX}{final.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            # snappy, and dictionaries only for the few-valued text columns: zstd with dictionaries everywhere
            # cost 4-10x more CPU per row (~3-7 us, in a server's process) for files no smaller on real inputs
            dictionary = [f.name for f in table.schema if pa.types.is_string(f.type) and f.name != "request_id"]
            # statistics only for the time (min/max of the others help no reader, and cost ~20% of the encoding)
            pq.write_table(table, f, compression="snappy", use_dictionary=dictionary,
                           write_statistics=["time"] if "time" in table.column_names else True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


# -- one batch as an Arrow table -----------------------------------------------------------------------------

def class_text(label: Any) -> str:
    """A class label as the text of its ``proba.<class>`` column (and of drift/report labels)."""
    return str(to_jsonable(label))


def batch_table(batch: LogBatch) -> pa.Table:
    """The log rows of one batch (see the module docstring for the columns)."""
    return group_table([batch])


class _Pieces:
    """The parts of many batches' log rows, gathered cheaply per batch and joined once (a numpy concatenate per
    column): the writer's cost per batch is a few list appends, whatever the number of batches per flush."""

    def __init__(self, first: LogBatch) -> None:
        self.signature = first.signature
        self.classes = first.classes
        self.times: list[float] = []
        self.time_rows: list[int] = []
        self.request_ids: list[str] = []
        self.endpoints: list[str] = []
        self.variants: list[str] = []
        self.latency: list[np.ndarray] = []
        self.request_rows: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.inputs: dict[str, list[np.ndarray]] = {c.name: [] for c in first.signature.inputs}
        self.predictions: list[np.ndarray] = []
        self.probabilities: list[np.ndarray] = []

    def add(self, batch: LogBatch) -> None:
        total = len(batch.predictions)
        spans = batch.spans
        if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == total:
            take = None  # the usual case of a batch job: one whole request
            lengths = np.array([total], dtype=np.int64)
            within = np.arange(total, dtype=np.int64)
        else:
            starts, stops = _bounds(spans)
            lengths = np.maximum(stops - starts, 0)
            n = int(lengths.sum())
            within = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            first_rows = np.repeat(starts, lengths) + within
            whole = n == total and bool(np.all(first_rows == np.arange(total)))
            take = None if whole else first_rows
        n = int(lengths.sum())
        if batch.rows is not None:
            within = np.asarray(batch.rows, dtype=np.int64)
            if len(within) != n:
                raise ValueError(f"LogBatch.rows has {len(within)} values for {n} logged rows")
        self.times.append(batch.time)
        self.time_rows.append(n)
        self.request_ids.extend(batch.request_ids)
        self.endpoints.extend(batch.endpoints)
        self.variants.extend(batch.variants)
        self.latency.append(np.asarray(batch.latency_s, dtype=np.float64).reshape(-1))
        self.request_rows.append(lengths)
        self.rows.append(within)
        for name, parts in self.inputs.items():
            values = batch.inputs[name]
            parts.append(values if take is None else np.asarray(values)[take])
        self.predictions.append(batch.predictions if take is None else batch.predictions[take])
        if batch.probabilities is not None:
            proba = np.asarray(batch.probabilities, dtype=np.float64)
            proba = proba.reshape(len(proba), -1)
            self.probabilities.append(proba if take is None else proba[take])

    def table(self, model: str, version: str) -> pa.Table:
        counts = np.concatenate(self.request_rows)
        n = int(counts.sum())

        def per_request(values: list[Any], kind: pa.DataType, unique: bool = False) -> pa.Array:
            if len(values) == 1 or (not unique and len(set(values)) == 1):
                return pa.repeat(pa.scalar(values[0], kind), n)
            if len(values) == n:  # a row per request (single-row requests): nothing to repeat
                return pa.array(values, type=kind)
            return pa.array(np.repeat(np.asarray(values, dtype=object), counts), type=kind)

        micros = np.round(np.asarray(self.times, dtype=np.float64) * 1_000_000).astype(np.int64)
        columns: dict[str, pa.Array] = {
            "time": pa.array(np.repeat(micros, self.time_rows), type=pa.timestamp("us", tz="UTC")),
            "request_id": per_request(self.request_ids, pa.string(), unique=True),
            "row": pa.array(np.concatenate(self.rows), type=pa.int32()),
            "endpoint": per_request(self.endpoints, pa.string()),
            "model": pa.repeat(pa.scalar(model, pa.string()), n),
            "version": pa.repeat(pa.scalar(version, pa.string()), n),
            "variant": per_request(self.variants, pa.string()),
            "latency_ms": pa.array(np.repeat(np.concatenate(self.latency) * 1000.0, counts)),
        }
        for spec in self.signature.inputs:
            parts = self.inputs[spec.name]
            values = parts[0] if len(parts) == 1 else np.concatenate([np.asarray(p) for p in parts])
            columns[INPUT_PREFIX + spec.name] = input_array(np.asarray(values), spec)
        predictions = self.predictions[0] if len(self.predictions) == 1 else np.concatenate(self.predictions)
        columns["prediction"] = prediction_array(predictions)
        if self.probabilities:
            proba = self.probabilities[0] if len(self.probabilities) == 1 else np.concatenate(self.probabilities)
            classes = list(self.classes) if self.classes is not None else list(range(proba.shape[1]))
            for j, label in enumerate(classes[: proba.shape[1]]):
                columns[PROBA_PREFIX + class_text(label)] = pa.array(np.ascontiguousarray(proba[:, j]))
        meta = {b"shipml.model": model.encode("utf-8", "surrogatepass"),
                b"shipml.version": version.encode("utf-8", "surrogatepass"),
                b"shipml.signature": self.signature.model_dump_json().encode()}
        return pa.table(columns).replace_schema_metadata(meta)


def _bounds(spans: Sequence[tuple[int, int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spans' starts and stops, as integer arrays (from pairs or from an (n, 2) array)."""
    bounds = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def group_table(batches: Sequence[LogBatch]) -> pa.Table:
    """The log rows of batches of one model version, as one table (batches with and without probabilities, or
    with another signature object, are gathered apart and their tables joined)."""
    kinds: dict[tuple[int, bool, int], _Pieces] = {}
    for batch in batches:
        key = (id(batch.signature), batch.probabilities is None, len(batch.classes or ()))
        pieces = kinds.get(key)
        if pieces is None:
            pieces = kinds[key] = _Pieces(batch)
        pieces.add(batch)
    first = batches[0]
    tables = [p.table(first.model, first.version) for p in kinds.values()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def input_array(values: np.ndarray, spec: ColumnSpec) -> pa.Array:
    """One checked input column (see ``package/validation.py``) as the log's Arrow type."""
    if spec.dtype in ("int", "float"):
        numbers = np.asarray(values, dtype=np.float64)
        if not np.isnan(numbers).any():  # the usual case: one quick pass instead of a null mask built per value
            return pa.array(numbers, type=pa.float64())
        return pa.array(numbers, type=pa.float64(), from_pandas=True)  # NaN: null
    if spec.dtype == "bool":
        if values.dtype == bool:
            return pa.array(values, type=pa.bool_())
        return pa.array(values, type=pa.bool_(), from_pandas=True)
    if spec.dtype == "datetime":
        stamps = np.asarray(values).astype("datetime64[ns]")
        return pa.array(stamps, type=pa.timestamp("ns"), from_pandas=True).cast(pa.timestamp("ns", tz="UTC"))
    return text_array(values)


def text_array(values: np.ndarray) -> pa.Array:
    """An object array of strings (None for null) as Arrow strings; text Parquet cannot hold (lone surrogates,
    from JSON escapes) is written with replacement characters instead of failing the whole batch."""
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        fixed = [None if v is None or (isinstance(v, float) and math.isnan(v)) else
                 str(v).encode("utf-8", "replace").decode("utf-8") for v in values.tolist()]
        return pa.array(fixed, type=pa.string())


def prediction_array(predictions: np.ndarray) -> pa.Array:
    """Predictions in their own type: numbers and booleans as they are, labels as strings (or as the type all of
    them share), several outputs per row as a fixed-size list."""
    values = np.asarray(predictions)
    if values.ndim > 1:
        width = int(np.prod(values.shape[1:]))
        flat = prediction_array(values.reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, width)
    if values.dtype.kind in "biuf":
        return pa.array(values)
    if values.dtype.kind in "US":
        return text_array(values.astype(object))
    if values.dtype.kind == "M":
        return pa.array(values.astype("datetime64[ns]"), type=pa.timestamp("ns"))
    items = [to_jsonable(v) for v in values.tolist()]
    try:
        array = pa.array(items)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is None or not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
                             or pa.types.is_boolean(array.type) or pa.types.is_string(array.type)
                             or pa.types.is_null(array.type)):
        return text_array(np.asarray([None if v is None else str(v) for v in items], dtype=object))
    if pa.types.is_string(array.type):
        return text_array(np.asarray(items, dtype=object))
    return array
