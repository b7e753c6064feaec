"""Scoring one part, the same in every engine: read it, check each batch against the signature, predict on the
rows that pass, and write the scored rows and the rejected ones (with their reasons) to the work directory.

The model is loaded once per process (:func:`model_for`); every part that process scores re-uses it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from shipml.jobs import workdir
from shipml.jobs.report import PartResult
from shipml.jobs.sinks import conform, unify_schemas
from shipml.jobs.sources import PartData, read_part
from shipml.jobs.spec import PREDICTION, PROBA_PREFIX, JobSpec, PartSpec
from shipml.monitoring.log import LogBatch, PredictionLog
from shipml.package.loaded import LoadedModel, Prediction, load_package
from shipml.package.manifest import read_manifest
from shipml.package.signature import Problem
from shipml.package.validation import Table

OnRows = Callable[[int], None]

_lock = threading.Lock()
_models: dict[str, LoadedModel] = {}
_loads: dict[str, int] = {}
_logs: dict[str, PredictionLog] = {}


def model_for(job: JobSpec) -> LoadedModel:
    """The job's model, loaded (and verified) the first time this process needs it, then re-used."""
    with _lock:
        model = _models.get(job.model_path)
        if model is None:
            model = load_package(Path(job.model_path), trusted=job.trusted,
                                 allow_env_mismatch=job.allow_env_mismatch, manifest_sha256=job.manifest_sha256)
            _models.clear()  # one model per process: a new job's model replaces the last one
            _models[job.model_path] = model
            _loads[job.model_path] = _loads.get(job.model_path, 0) + 1
        return model


def lean_imports(job: JobSpec) -> None:
    """For a worker process of the local engine (never a process of the user's: the driver, a notebook), before
    its model loads: a LightGBM model's worker imports LightGBM without its scikit-learn layer
    (``runtimes.lightgbm.import_lean``), so without scikit-learn and the bulk of SciPy: its start-up is ~0.3 s
    shorter and it holds less memory. (pandas is imported all the same: pyarrow's conversions import it.) The
    manifest read here only chooses imports; the load checks it."""
    if "lightgbm" in sys.modules:
        return
    try:
        runtime = read_manifest(Path(job.model_path)).runtime
    except Exception:  # the load says what is wrong with the package
        return
    if runtime.name == "lightgbm":
        from shipml.runtimes.lightgbm import import_lean

        import_lean(pandas=bool(runtime.info.get("pandas_categorical")))


def model_loads(job: JobSpec) -> int:
    """How many times this process has loaded the job's model (1 unless it was forgotten in between)."""
    return _loads.get(job.model_path, 0)


def forget() -> None:
    """Drop the cached model (the in-process engine, at the end of a job), and write and close its log."""
    with _lock:
        _models.clear()
        _loads.clear()
        logs = list(_logs.values())
        _logs.clear()
    for prediction_log in logs:
        prediction_log.close(timeout_s=60.0)


def log_for(job: JobSpec) -> PredictionLog | None:
    """This process's prediction log for the job (None when the job is not logged): one writer per process, so
    every worker writes its own files into the one directory."""
    if job.log_dir is None:
        return None
    with _lock:
        found = _logs.get(job.log_dir)
        if found is None:
            found = _logs[job.log_dir] = PredictionLog(
                job.log_dir, flush_interval_s=job.log_flush_s, max_file_rows=max(100_000, job.batch_size),
                max_queue_rows=4 * max(100_000, job.batch_size))
        return found


def _log_batch(log: PredictionLog, model: LoadedModel, job: JobSpec, table: Table, prediction: Prediction,
               rows: np.ndarray, seconds: float) -> None:
    """Hand a scored batch to the log; a batch job waits for room rather than drop rows (nobody waits on it)."""
    n = len(prediction.predictions)
    batch = LogBatch(time.time(), model.name, model.version, table.columns, model.signature,
                     prediction.predictions, prediction.probabilities, model.classes, [job.log_request_id],
                     ["batch"], ["batch"], [(0, n)], [seconds], rows)
    if log.queued_rows + n > log.max_queue_rows:
        log.flush(timeout_s=600.0)
    log.submit(batch)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Keep the model's native thread pools (OpenMP, BLAS) to ``threads``: parallelism comes from workers.
    Without threadpoolctl (it comes with scikit-learn) the pools keep their defaults."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the install
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def limit_process_threads(threads: int) -> None:
    """For a worker process, before the model is loaded: native libraries read these when they start."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def score_part(job: JobSpec, part: PartSpec, on_rows: OnRows | None = None) -> PartResult:
    """Score one part and record it as done (data files first, then its result)."""
    started = time.perf_counter()
    model = model_for(job)
    work = Path(job.work_dir)
    data = read_part(part, model.signature, job.keep_columns, job.batch_size)
    scored = rejected = warnings = 0
    outputs: list[pa.RecordBatch] = []
    rejects: list[pa.RecordBatch] = []
    if data.unparsed:
        rejects.append(_unparsed_rejects(data, part, model, job))
        rejected += len(data.unparsed)
        if on_rows is not None:
            on_rows(len(data.unparsed))
    log = log_for(job)
    for batch, positions in data.batches:
        out, bad, n_warnings = score_batch(model, job, batch, positions, part.path, log, part.first_row)
        warnings += n_warnings
        if out is not None and out.num_rows:
            outputs.append(out)
            scored += out.num_rows
        if bad is not None and bad.num_rows:
            rejects.append(bad)
            rejected += bad.num_rows
        if on_rows is not None:
            on_rows(batch.num_rows)
    if log is not None:  # the part's rows are in the log before the part counts as done
        log.flush(timeout_s=600.0)
    _write_ipc(workdir.output_file(work, part.index), outputs)
    _write_ipc(workdir.rejects_file(work, part.index), _sorted_rejects(rejects))
    result = PartResult(part.index, data.rows, scored, rejected, warnings, time.perf_counter() - started,
                        worker_name(), model_loads(job))
    workdir.write_result(work, result)
    return result


def score_batch(model: LoadedModel, job: JobSpec, batch: pa.RecordBatch, positions: np.ndarray, path: str,
                log: PredictionLog | None = None, first_row: int = 0
                ) -> tuple[pa.RecordBatch | None, pa.RecordBatch | None, int]:
    """(scored rows, rejected rows, warnings) of one batch.

    The check runs twice only when a batch has bad rows: first over the whole batch counting problems without
    spelling them out (no Python object per warning on the hot path), then over the bad rows alone, with every
    problem spelled out for the rejects file."""
    names = model.signature.names
    n = batch.num_rows
    data = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in names}
    policy = replace(job.policy, extra_columns="ignore", max_problems=0)
    checked = model.check(data, policy)
    bad = checked.bad_rows
    n_bad = int(bad.sum())
    good = np.flatnonzero(~bad) if n_bad else None
    out = None
    if n_bad < n:
        table = checked.table if good is None else checked.table.take(good)
        began = time.perf_counter()
        prediction = model.infer(table, proba=job.proba or (log is not None and model.has_proba))
        if log is not None:
            rows = positions if good is None else positions[good]
            _log_batch(log, model, job, table, prediction, max(first_row, 0) + rows,
                       time.perf_counter() - began)
        kept = batch if good is None else batch.take(pa.array(good))
        out = _output_batch(model, job, kept, prediction.predictions, prediction.probabilities)
    rejects = None
    if n_bad:
        rows = np.flatnonzero(bad)
        subset = {name: values[rows] for name, values in data.items()}
        spelled = model.check(subset, replace(policy, max_problems=len(rows) * max(1, len(names)) + 1))
        reasons = _reasons(spelled.problems, np.arange(len(rows)))
        rejects = _reject_batch(batch.take(pa.array(rows)), path, positions[rows], reasons)
    return out, rejects, checked.n_warnings


def _output_batch(model: LoadedModel, job: JobSpec, kept: pa.RecordBatch, predictions: np.ndarray,
                  probabilities: np.ndarray | None) -> pa.RecordBatch:
    arrays: list[pa.Array] = [_kept(model, kept.column(c), c) for c in job.keep_columns]
    names = list(job.keep_columns)
    if predictions.ndim > 1:
        flat = predictions.reshape(len(predictions), -1)
        for j in range(flat.shape[1]):
            arrays.append(pa.array(flat[:, j]))
            names.append(f"{PREDICTION}_{j}")
    else:
        arrays.append(pa.array(predictions))
        names.append(PREDICTION)
    if job.proba and probabilities is not None:
        classes = model.classes or list(range(probabilities.shape[1]))
        for j, label in enumerate(classes):
            arrays.append(pa.array(np.ascontiguousarray(probabilities[:, j], dtype=np.float64)))
            names.append(f"{PROBA_PREFIX}{label}")
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _kept(model: LoadedModel, column: pa.Array, name: str) -> pa.Array:
    """A kept column as the input holds it: a model input the signature calls int, read from text as float64 for
    the check, is an integer column again (when every value is a whole number)."""
    spec = next((c for c in model.signature.inputs if c.name == name), None)
    if spec is None or spec.dtype != "int" or not pa.types.is_floating(column.type):
        return column
    try:
        return column.cast(pa.int64())  # safe cast: refuses a fraction, so such a column stays as it was
    except pa.ArrowInvalid:
        return column


def _reasons(problems: list[Problem], rows: np.ndarray) -> list[tuple[str, str, str]]:
    """(columns, rules, messages) of each bad row, several problems joined with '; '."""
    by_row: dict[int, list[Problem]] = {}
    whole: list[Problem] = []
    for p in problems:
        if p.severity != "error":
            continue
        if p.row is None:
            whole.append(p)
        else:
            by_row.setdefault(p.row, []).append(p)
    out = []
    for row in rows.tolist():
        found = by_row.get(row, []) + whole
        out.append(("; ".join(p.column or "" for p in found), "; ".join(p.rule for p in found),
                    "; ".join(p.message for p in found)))
    return out


def _reject_batch(rows: pa.RecordBatch, path: str, positions: np.ndarray,
                  reasons: list[tuple[str, str, str]]) -> pa.RecordBatch:
    n = rows.num_rows
    extra = {
        "_file": pa.array([path] * n, type=pa.string()),
        "_row": pa.array(positions, type=pa.int64()),
        "_column": pa.array([r[0] for r in reasons], type=pa.string()),
        "_rule": pa.array([r[1] for r in reasons], type=pa.string()),
        "_reason": pa.array([r[2] for r in reasons], type=pa.string()),
    }
    return pa.RecordBatch.from_arrays([*rows.columns, *extra.values()], names=[*rows.schema.names, *extra])


def _unparsed_rejects(data: PartData, part: PartSpec, model: LoadedModel, job: JobSpec) -> pa.RecordBatch:
    """Rows that could not be parsed: their columns are null, the reason holds the line's text."""
    columns = list(dict.fromkeys([*model.signature.names, *job.keep_columns]))
    n = len(data.unparsed)
    nulls = pa.RecordBatch.from_arrays([pa.nulls(n) for _ in columns], names=columns)  # the parsed rows decide types
    reasons = [("", "parse", f"{why}: {_clip(text)}") for _, text, why in data.unparsed]
    return _reject_batch(nulls, part.path, np.array([u[0] for u in data.unparsed], dtype=np.int64), reasons)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sorted_rejects(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Rejects in row order (unparsed lines and checked rows come from separate passes)."""
    if len(batches) <= 1:
        return batches
    table = pa.Table.from_batches([b.cast(_common_schema(batches)) for b in batches]).sort_by("_row")
    batches_out: list[pa.RecordBatch] = table.combine_chunks().to_batches()
    return batches_out


def _common_schema(batches: list[pa.RecordBatch]) -> pa.Schema:
    return unify_schemas([b.schema for b in batches], final=False)


def _write_ipc(final: Path, batches: list[pa.RecordBatch]) -> None:
    """The part's batches as one Arrow IPC file (no file at all when there is nothing to write: one an
    interrupted earlier attempt may have left is removed)."""
    if not batches:
        final.unlink(missing_ok=True)
        return
    schema = _common_schema(batches)
    tmp = workdir.tmp_name(final)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch if batch.schema.equals(schema) else conform(batch, schema))
    workdir.publish(tmp, final)


def run_parts(job: JobSpec, parts: list[PartSpec], on_rows: OnRows | None = None) -> Iterator[PartResult]:
    """Score parts one after the other in this process (the in-process engine)."""
    model_for(job)  # first: a thread limit only reaches the native libraries loaded when it is set
    with thread_limit(job.threads_per_worker):
        for part in parts:
            yield score_part(job, part, on_rows)

