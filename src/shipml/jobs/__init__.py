"""Batch prediction over files far larger than memory: :func:`predict_file`.

The input (files, a directory or a glob) is cut into deterministic parts; each part is read as Arrow record
batches, checked against the model's signature, scored, and written to a work directory next to the output
(rows that fail the check go to the rejects file with their reason, nothing is dropped). Parts are scored by an
engine: ``local`` (processes on this machine), ``ray`` (Ray Data) or ``dask`` (dask.distributed). When every
part is done the output and rejects files are assembled in input order and renamed into place. A killed job,
re-run with the same arguments, skips the parts already written.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import orjson
import pyarrow as pa

from shipml._paths import absolute
from shipml.errors import ConflictError, SchemaError
from shipml.jobs import sinks, sources, workdir
from shipml.jobs.progress import Progress
from shipml.jobs.report import BatchReport, PartResult
from shipml.jobs.spec import (
    PREDICTION,
    PROBA_PREFIX,
    REJECT_COLUMNS,
    Engine,
    JobSpec,
    OutputFormat,
    PartSpec,
)
from shipml.package.manifest import Manifest, read_manifest
from shipml.package.validation import InputPolicy
from shipml.registry.names import Ref
from shipml.registry.registry import Registry

__all__ = ["BatchReport", "PartResult", "predict_file"]

#: Bumped when the files in a work directory change meaning, so an older run's parts are never re-used.
WORK_FORMAT = 1
DEFAULT_BATCH_SIZE = 16_384
DEFAULT_PART_ROWS = 500_000


def predict_file(
    ref: str | Path,
    input: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    registry: Registry | str | Path | None = None,
    keep_columns: Sequence[str] = (),
    proba: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    engine: Engine = "local",
    address: str | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    rejects: str | Path | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    policy: InputPolicy | None = None,
    trusted: bool | None = None,
    allow_env_mismatch: bool = False,
    quiet: bool = False,
    progress: TextIO | None = None,
    progress_interval: float = 10.0,
    log: str | Path | None = None,
    log_flush_s: float = 5.0,
) -> BatchReport:
    """Score every row of ``input`` (CSV, Parquet or JSON-lines files; a directory or glob of them) with the
    model ``ref`` and write ``output`` (Parquet unless its extension or ``output_format`` says CSV / JSON lines).

    Output columns: ``keep_columns`` (copied from the input), ``prediction``, and with ``proba`` one
    ``proba_<class>`` column per class. Rows that break the signature go to ``rejects`` (default:
    ``<output>.rejects.<ext>``) with ``_file``, ``_row``, ``_column``, ``_rule`` and ``_reason``; when no row
    is rejected there is no rejects file (``report.rejects`` is None). Kept columns keep their type (for CSV
    input, the type all their values spell: see :func:`shipml.jobs.sources.typed_text`).

    ``workers``: processes (local; default: this machine's CPUs) or actors (ray) or worker processes of a local
    Dask cluster; each runs the model single-threaded. ``address``: an existing Ray or Dask cluster.
    ``part_rows``: rows per part, the unit of work and of resuming. Progress goes to ``progress`` (default
    stderr): a bar on a terminal, a line every ``progress_interval`` seconds otherwise, nothing when ``quiet``.

    ``log``: a prediction-log directory (:mod:`shipml.monitoring.log`); every scored row is logged there by the
    process that scores it, with request id ``job-<first 16 hex digits of the job's key>`` (the same when a
    killed job is resumed; ``report.log_request_id``), ``row`` its position in the whole input (the files in
    order, counted as the rejects' ``_row``), endpoint and variant ``batch``.
    """
    started = time.perf_counter()
    if batch_size < 1 or part_rows < 1:
        raise SchemaError("batch_size and part_rows must be at least 1")
    if engine not in ("local", "ray", "dask"):
        raise SchemaError(f"unknown engine {engine!r}: use local, ray or dask")
    model_path, manifest_sha256, manifest = _resolve(ref, registry)
    keep = tuple(dict.fromkeys(keep_columns))
    _check_options(manifest, keep, proba)
    files = sources.list_inputs(input, input_format)
    sources.check_columns(files, manifest.signature, keep)
    out = absolute(output)
    fmt = sinks.output_format_of(out, output_format)
    rejects_path = absolute(rejects) if rejects is not None else sinks.default_rejects_path(out, fmt)
    _refuse_overwriting_inputs(files, [out, rejects_path])
    _refuse_writing_into_the_package(model_path, [out, rejects_path])
    parts = sources.plan_parts(files, part_rows)
    policy = policy or InputPolicy()
    key = _job_key(manifest, files, keep, proba, part_rows, policy)
    log_dir = str(absolute(log)) if log is not None else None
    log_id = f"job-{key[:16]}"
    if log_dir is not None:
        parts = sources.with_first_rows(files, parts)
    work = workdir.work_dir_for(out, key)
    n_workers = workers if workers is not None else (_local_cpus() if engine == "local" else None)
    job = JobSpec(str(model_path), manifest.ref, key, str(work), keep, proba, batch_size, policy, trusted,
                  allow_env_mismatch, manifest_sha256=manifest_sha256, log_dir=log_dir, log_request_id=log_id,
                  log_flush_s=log_flush_s)
    report = BatchReport(manifest.ref, out, rejects_path, fmt, engine, n_workers or 0, parts_total=len(parts),
                         log_dir=log_dir, log_request_id=log_id if log_dir is not None else None)
    with workdir.locked(work):
        workdir.remove_temporary(work)
        sinks.remove_stale(out)
        sinks.remove_stale(rejects_path)
        (work / "job.json").write_bytes(job.to_json())
        done = {i: r for i, r in workdir.finished(work).items() if i < len(parts)}
        todo = [p for p in parts if p.index not in done]
        for result in done.values():
            report.add(result)
        report.parts_skipped = len(done)
        bar = Progress(sum(p.est_rows for p in todo), stream=progress, quiet=quiet, interval=progress_interval)
        bar.start(f"{manifest.ref} on {len(files)} file(s), {len(parts)} part(s)"
                  + (f", {len(done)} already done" if done else "")
                  + f", engine {engine}" + (f" x{n_workers}" if n_workers else ""))
        if todo:
            _run(job, todo, engine, n_workers, address, report, bar)
        bar.finish()
        _assemble(work, parts, report, rejects_path, manifest, keep, proba, fmt)
    workdir.remove(work)
    report.seconds = time.perf_counter() - started
    return report


def _resolve(ref: str | Path, registry: Registry | str | Path | None) -> tuple[Path, str | None, Manifest]:
    """The package directory of ``ref``, pinned (an alias that moves during the job changes nothing), the
    manifest sha256 the registry recorded for it (None for a package directory), and its manifest. Workers
    load with that sha256, so a manifest edited after this point is refused by them too."""
    if isinstance(ref, Path):
        return absolute(ref), None, read_manifest(ref)
    parsed = Ref.parse(ref)
    if parsed.path is not None:
        return absolute(parsed.path), None, read_manifest(parsed.path)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    mv = reg.get(parsed)
    return reg.directory(mv), mv.manifest_sha256, mv.manifest


def _check_options(manifest: Manifest, keep: tuple[str, ...], proba: bool) -> None:
    outputs = manifest.signature.outputs
    if proba and not outputs.probabilities:
        raise SchemaError(f"{manifest.ref} gives no probabilities (task: {outputs.task})")
    produced = _prediction_names(manifest, proba)
    clash = [c for c in keep if c in produced]
    if clash:
        raise SchemaError(f"keep columns {clash} clash with the output's own columns {produced}")


def _prediction_names(manifest: Manifest, proba: bool) -> list[str]:
    outputs = manifest.signature.outputs
    width = int(np.prod(outputs.shape)) if outputs.shape else 0
    names = [f"{PREDICTION}_{j}" for j in range(width)] if width else [PREDICTION]
    if proba:
        names += [f"{PROBA_PREFIX}{c}" for c in outputs.classes or []]
    return names


def _refuse_overwriting_inputs(files: Sequence[sources.InputFile], targets: Sequence[Path]) -> None:
    inputs = {f.path for f in files}
    for target in targets:
        if target.resolve() in inputs:
            raise ConflictError(f"{target} is one of the inputs: choose another output or rejects path")


def _refuse_writing_into_the_package(package: Path, targets: Sequence[Path]) -> None:
    """A package holds only the files its manifest records (any other file refuses every later load of it): the
    output, the rejects and the job's work directory beside them never go inside it."""
    root = package.resolve()
    for target in targets:
        if target.resolve().is_relative_to(root):
            raise ConflictError(f"{target.name} would be written inside the model package {package.name!r}, which"
                                " holds only the files its manifest records: write it elsewhere")


def _job_key(manifest: Manifest, files: Sequence[sources.InputFile], keep: tuple[str, ...], proba: bool,
             part_rows: int, policy: InputPolicy) -> str:
    """A hash of everything that decides the parts and their contents (not the engine, workers or batch size:
    a job killed under one may be finished under another)."""
    data = {
        "work_format": WORK_FORMAT,
        "model": manifest.ref,
        "artifacts": sorted(a.sha256 for a in manifest.artifacts),
        "inputs": [[str(f.path), f.format, f.size, f.mtime_ns] for f in files],
        "keep": list(keep), "proba": proba, "part_rows": part_rows,
        "policy": [policy.out_of_range, policy.unseen_category],
    }
    return hashlib.sha256(orjson.dumps(data)).hexdigest()


def _local_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _run(job: JobSpec, todo: list[PartSpec], engine: Engine, workers: int | None, address: str | None,
         report: BatchReport, bar: Progress) -> None:
    if engine == "local":
        from shipml.jobs.local import run_local

        run_local(job, todo, workers or 1, report.add, bar.advance)
        return

    def on_result(result: PartResult) -> None:
        report.add(result)
        bar.advance(result.rows_read)

    if engine == "ray":
        from shipml.jobs.ray_engine import run_ray

        run_ray(job, todo, workers, address, on_result)
    else:
        from shipml.jobs.dask_engine import run_dask

        run_dask(job, todo, workers, address, on_result)


def _assemble(work: Path, parts: Sequence[PartSpec], report: BatchReport, rejects: Path, manifest: Manifest,
              keep: tuple[str, ...], proba: bool, fmt: OutputFormat) -> None:
    """Rejects first (when a row was rejected), output last: the output under its final name means the whole
    job is done."""
    results = workdir.finished(work)
    offsets: dict[int, int] = {}
    seen: dict[int, int] = {}
    for part in parts:
        offsets[part.index] = seen.get(part.file_index, 0)
        seen[part.file_index] = offsets[part.index] + results[part.index].rows_read
    indexes = [p.index for p in parts]
    if report.rows_rejected:
        sinks.assemble(work, indexes, "rejects", rejects, fmt, _empty_rejects_schema(manifest, keep), offsets)
    else:  # no empty file; and none an earlier run left there, which would describe another run
        rejects.unlink(missing_ok=True)
        report.rejects = None
    sinks.assemble(work, indexes, "output", report.output, fmt, _empty_output_schema(manifest, keep, proba))


def _empty_output_schema(manifest: Manifest, keep: tuple[str, ...], proba: bool) -> pa.Schema:
    """The output's columns when no row was scored at all (otherwise the parts' own schema wins)."""
    outputs = manifest.signature.outputs
    if outputs.classes:
        label = pa.array(outputs.classes).type
    else:
        dtype = np.dtype(outputs.prediction_dtype) if outputs.prediction_dtype != "object" else None
        label = pa.from_numpy_dtype(dtype) if dtype is not None and dtype.kind in "biuf" else pa.string()
    fields = [pa.field(c, pa.string()) for c in keep]
    for name in _prediction_names(manifest, proba):
        fields.append(pa.field(name, pa.float64() if name.startswith(PROBA_PREFIX) else label))
    return pa.schema(fields)


def _empty_rejects_schema(manifest: Manifest, keep: tuple[str, ...]) -> pa.Schema:
    names = list(dict.fromkeys([*manifest.signature.names, *keep]))
    fields = [pa.field(c, pa.string()) for c in names]
    fields += [pa.field(c, pa.int64() if c == "_row" else pa.string()) for c in REJECT_COLUMNS]
    return pa.schema(fields)
