"""Collecting a :class:`~shipml.monitoring.report.Report` from the prediction log of one model: the rows of the
period (only the files its days can hold, only the columns the report needs), the feedback joined to them, the
drift of the reference version's rows against its training profile, per time bucket series, and the alert events
the server appended to ``DIR/<model>/alerts.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shipml.errors import IntegrityError, InvalidNameError, NotFoundError
from shipml.monitoring.counts import Counts, columns_from_arrow
from shipml.monitoring.drift import drift
from shipml.monitoring.feedback import Joined, join, read_feedback
from shipml.monitoring.log import INPUT_PREFIX, PROBA_PREFIX, path_component
from shipml.monitoring.logread import log_models, read_log
from shipml.monitoring.performance import estimated, realised
from shipml.monitoring.reference import Reference, as_float
from shipml.monitoring.report import ALERTS_FILE, Distribution, FeatureReport, PredictionReport, Report, Series
from shipml.package.artefacts import Artefacts
from shipml.package.manifest import PROFILE
from shipml.registry.names import Ref, Version
from shipml.registry.registry import ModelVersion, Registry

__all__ = ["BUCKET_WIDTHS", "PERFORMANCE_WINDOW_ROWS", "PSI_WINDOW_ROWS", "bucket_width", "collect", "monitor",
           "read_alerts", "reference_of"]


# -- collecting -------------------------------------------------------------------------------------------------
#: Nice time bucket widths (seconds): the narrowest that gives at most ``max_buckets`` buckets is used.
BUCKET_WIDTHS = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0,
                 86400.0, 2 * 86400.0, 7 * 86400.0, 30 * 86400.0)
#: The PSI over time of a bucket is measured over the trailing window that ends with it and holds at least this
#: many rows (the bucket alone, when it has them): PSI over a few dozen rows is mostly noise (an empty bin alone
#: adds ~0.6), so with little traffic a bucket's figure covers the buckets before it too. Fewer rows in all: NaN.
PSI_WINDOW_ROWS = 200
#: Realised (and, over the same buckets, estimated) performance over time is measured over the trailing window of
#: buckets that holds at least this many labelled rows: accuracy over a dozen labels says little.
PERFORMANCE_WINDOW_ROWS = 100
#: The newest alert events kept from alerts.jsonl.
MAX_ALERTS = 1000
LATENCY_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
DRIFT_FIGURES = ("psi", "ks", "chi2", "cramers_v", "null_share", "reference_null_share", "out_of_range_share",
                 "unseen_share")


def bucket_width(first: float, last: float, max_buckets: int) -> float:
    """The narrowest of :data:`BUCKET_WIDTHS` that cuts ``[first, last]`` into at most ``max_buckets`` buckets."""
    for width in BUCKET_WIDTHS:
        if math.floor(last / width) - math.floor(first / width) + 1 <= max_buckets:
            return width
    return BUCKET_WIDTHS[-1]


def collect(directory: str | Path, reference: Reference, *, ref: str | None = None, version: str | None = None,
            since: float | None = None, until: float | None = None, now: float | None = None,
            max_buckets: int = 48, min_rows: int = 1) -> Report:
    """The report of ``reference.model`` from the prediction log in ``directory`` over ``[since, until)`` (epoch
    seconds; None: open): rows of ``version`` only when given, else of every logged version. Drift is measured
    on the rows of ``reference.version`` against ``reference``; feedback (``DIR/<model>/feedback``) is joined to
    the rows by request id; alert events come from ``DIR/<model>/alerts.jsonl``. Reads only the columns it
    needs, and only the files the period can hold."""
    model = reference.model
    classes = tuple(reference.classes) if reference.classes is not None else None
    task: Literal["classification", "regression"] = (
        "classification" if reference.signature.outputs.task == "classification" else "regression")
    proba_columns = [PROBA_PREFIX + c for c in classes] if classes is not None else []
    columns = ["time", "request_id", "row", "version", "latency_ms", "prediction", *proba_columns,
               *(INPUT_PREFIX + f.name for f in reference.features)]
    table = read_log(directory, model=model, version=version, since=since, until=until, columns=columns)
    notes: list[str] = []
    times = _epoch_seconds(table.column("time"))
    n = len(times)
    version_col = table.column("version")
    versions = tuple(sorted((str(v) for v in pc.unique(version_col).to_pylist() if v is not None),
                            key=_version_key)) if n else ()
    if n == 0:
        notes.append("no prediction of this model was logged over the period")
    probabilities = _probabilities(table, proba_columns)
    if classes is not None and probabilities is None and n:
        notes.append("the log holds no probabilities: performance cannot be estimated before labels arrive")
    predictions = _values(table.column("prediction"))

    width = bucket_width(float(times[0]), float(times[-1]), max_buckets) if n else 3600.0
    first_bucket = math.floor(times[0] / width) * width if n else 0.0
    count = int((times[-1] - first_bucket) // width) + 1 if n else 0
    starts = tuple(first_bucket + width * i for i in range(count))
    cuts = np.searchsorted(times, [*starts, first_bucket + width * count], side="left")
    if n:
        cuts[-1] = n
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(cuts)]
    of_version = {v: _mask(version_col, v) for v in versions}

    drift_part = _drift(reference, table, of_version.get(reference.version, np.zeros(n, dtype=bool)), times,
                        starts, width, min_rows)
    if drift_part.rows == 0 and n:
        notes.append(f"no row of version {reference.version} (the reference) was logged over the period: "
                     "no drift figures")
    joined = _feedback(directory, model, table, since, notes)
    realised_all: dict[str, float] = {}
    labelled = np.zeros(count, dtype=np.int64)
    bucket_of = np.empty(0, dtype=np.int64)
    if joined is not None and joined.matched:
        realised_all = realised(joined.targets, joined.predictions, joined.probabilities, joined.classes, task)
        bucket_of = np.clip(((joined.times - first_bucket) // width).astype(np.int64), 0, max(count - 1, 0))
        labelled = np.bincount(bucket_of, minlength=count)
    windows = _performance_windows(labelled)
    realised_series: dict[str, tuple[float, ...]] = {}
    if joined is not None and joined.matched:
        figures = []
        for first, last in windows:
            rows = np.flatnonzero((bucket_of >= first) & (bucket_of <= last))
            figures.append(realised(joined.targets[rows], joined.predictions[rows],
                                    None if joined.probabilities is None else joined.probabilities[rows],
                                    joined.classes, task) if len(rows) else {})
        realised_series = {m: tuple(f.get(m, math.nan) for f in figures) for m in realised_all}
    estimated_all: dict[str, float] = {}
    estimated_series: dict[str, tuple[float, ...]] = {}
    if classes is not None and probabilities is not None and n:
        estimated_all = estimated(probabilities, list(classes), predictions)
        spans = [slice(slices[first].start, slices[last].stop) for first, last in windows]
        figures = [estimated(probabilities[s], list(classes), predictions[s]) for s in spans]
        estimated_series = {m: tuple(f.get(m, math.nan) for f in figures) for m in estimated_all}

    first_rows = _int(table.column("row")) == 0
    latency = _float(table.column("latency_ms"))
    series = Series(
        starts=starts, width_s=width, rows=tuple(s.stop - s.start for s in slices),
        requests=tuple(int(np.count_nonzero(first_rows[s])) for s in slices),
        rows_by_version={v: tuple(int(np.count_nonzero(m[s])) for s in slices) for v, m in of_version.items()},
        latency_ms=_latency(latency, first_rows, slices),
        prediction=_prediction_series(reference, predictions, slices, task),
        labelled=tuple(int(v) for v in labelled), realised=realised_series, estimated=estimated_series,
        psi=drift_part.psi,
        psi_window_rows=PSI_WINDOW_ROWS if drift_part.psi else 0,
        performance_window_rows=PERFORMANCE_WINDOW_ROWS if int(labelled.sum()) else 0)
    return Report(
        model=model, ref=ref or model, task=task, reference_version=reference.version, versions=versions,
        classes=classes, since=since, until=until, generated_at=time.time() if now is None else now, rows=n,
        requests=int(np.count_nonzero(first_rows)), first_time=float(times[0]) if n else None,
        last_time=float(times[-1]) if n else None, drift_rows=drift_part.rows,
        labelled_rows=joined.matched if joined is not None else 0,
        unmatched_labels=joined.unmatched if joined is not None else 0,
        realised=realised_all, estimated=estimated_all, features=drift_part.features,
        prediction=drift_part.prediction, series=series,
        alerts=read_alerts(directory, model, version=version, since=since, until=until, notes=notes),
        notes=tuple(notes))


@dataclass(frozen=True, slots=True)
class _DriftPart:
    rows: int = 0
    features: tuple[FeatureReport, ...] = ()
    prediction: PredictionReport | None = None
    psi: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


def _drift(reference: Reference, table: pa.Table, mine: np.ndarray, times: np.ndarray, starts: Sequence[float],
           width: float, min_rows: int) -> _DriftPart:
    """Drift of the reference version's rows: over the whole period, and each time bucket's PSI per feature."""
    if not mine.any():
        return _DriftPart()
    own = table.filter(pa.array(mine))
    own_times = times[mine]
    columns = columns_from_arrow(reference, own, prefix=INPUT_PREFIX)
    predictions = _values(own.column("prediction")) if reference.prediction is not None else None
    cuts = np.searchsorted(own_times, [*starts, starts[-1] + width], side="left")
    cuts[-1] = len(own_times)
    parts = []
    for a, b in itertools.pairwise(cuts):
        part = Counts(reference)
        part.add({k: v[a:b] for k, v in columns.items()}, None if predictions is None else predictions[a:b])
        parts.append(part)
    total = Counts(reference)
    for part in parts:
        total.merge(part)
    psi: dict[str, list[float]] = {f.name: [] for f in reference.features}
    for i in range(len(parts)):
        for f in drift(reference, _trailing(parts, i), min_rows=PSI_WINDOW_ROWS).features:
            psi[f.name].append(f.psi)
    report = drift(reference, total, min_rows=min_rows)
    features = tuple(
        FeatureReport(name=f.name, kind=f.kind, rows=f.rows, dtype=reference.feature(f.name).dtype,
                      figures={k: float(getattr(f, k)) for k in DRIFT_FIGURES},
                      distribution=Distribution(f.kind, tuple(f.labels), tuple(f.reference_shares), tuple(f.shares),
                                                tuple(float(e) for e in reference.feature(f.name).edges)))
        for f in report.features)
    prediction = None
    pref, counted = reference.prediction, total.prediction_counts()
    if report.prediction is not None and pref is not None and counted is not None:
        p = report.prediction
        figures = {"psi": p.psi, "ks": p.ks, "chi2": p.chi2, "mean": p.mean, "reference_mean": p.reference_mean}
        prediction = PredictionReport(pref.kind, figures, Distribution(
            pref.kind, tuple(pref.labels), _shares(pref.reference), _shares(counted),
            tuple(float(e) for e in pref.edges)))
    return _DriftPart(int(total.rows), features, prediction, {k: tuple(v) for k, v in psi.items()})


def _performance_windows(labelled: np.ndarray) -> list[tuple[int, int]]:
    """Per bucket ``i``: the buckets ``(first, i)`` whose labelled rows its performance is measured over: back
    from ``i`` until they hold PERFORMANCE_WINDOW_ROWS labelled rows (or the first bucket). No label at all: the
    bucket alone (the estimate needs no label)."""
    if not int(labelled.sum()):
        return [(i, i) for i in range(len(labelled))]
    before = np.concatenate([[0], np.cumsum(labelled)])  # before[i]: labelled rows in buckets < i
    windows = []
    for last in range(len(labelled)):
        # the window starts at the last bucket j with before[j] <= need
        need = before[last + 1] - PERFORMANCE_WINDOW_ROWS
        first = max(int(np.searchsorted(before, need, side="right")) - 1, 0)
        windows.append((min(first, last), last))
    return windows


def _trailing(parts: Sequence[Counts], last: int) -> Counts:
    """The counts of bucket ``last`` and as many buckets before it as it takes to reach PSI_WINDOW_ROWS rows."""
    window = parts[last].copy()
    first = last
    while window.rows < PSI_WINDOW_ROWS and first > 0:
        first -= 1
        window.merge(parts[first])
    return window


def _shares(counts: np.ndarray) -> tuple[float, ...]:
    total = float(np.sum(counts))
    return tuple(float(v) / total if total > 0 else math.nan for v in counts)


def _feedback(directory: str | Path, model: str, table: pa.Table, since: float | None,
              notes: list[str]) -> Joined | None:
    labels = read_feedback(directory, model, since=since)
    if not labels.num_rows:
        notes.append("no feedback (ground truth) was received over the period: realised performance is unknown")
        return None
    joined = join(table, labels)
    if joined.unmatched:
        notes.append(f"{joined.unmatched} label(s) match no prediction logged over the period")
    if joined.invalid:
        notes.append(f"{joined.invalid} label(s) cannot be read as the model's predictions (left out)")
    return joined


def _latency(latency: np.ndarray, first_rows: np.ndarray, slices: Sequence[slice]) -> dict[str, tuple[float, ...]]:
    """Per bucket, the percentiles of the requests' latency (one value per request: its first row's)."""
    out: dict[str, list[float]] = {k: [] for k in LATENCY_PERCENTILES}
    for s in slices:
        values = latency[s][first_rows[s]]
        values = values[np.isfinite(values)]
        got = np.percentile(values, list(LATENCY_PERCENTILES.values())) if len(values) else \
            [math.nan] * len(LATENCY_PERCENTILES)
        for key, value in zip(LATENCY_PERCENTILES, got, strict=True):
            out[key].append(float(value))
    return {k: tuple(v) for k, v in out.items()}


def _prediction_series(reference: Reference, predictions: np.ndarray, slices: Sequence[slice],
                       task: str) -> dict[str, tuple[float, ...]]:
    """Per bucket: each class's share of the predictions (classifier), or their mean, 10th and 90th percentile."""
    if predictions.ndim != 1 or not slices:
        return {}
    pref = reference.prediction
    if task == "classification":
        if pref is None or pref.kind != "categorical":
            return {}
        counts = np.array([pref.count(predictions[s]) for s in slices], dtype=np.float64)
        rows = counts.sum(axis=1)
        shares = np.divide(counts, rows[:, None], out=np.full_like(counts, math.nan), where=rows[:, None] > 0)
        out = {label: tuple(float(v) for v in shares[:, i]) for i, label in enumerate(pref.categories)}
        rest = shares[:, len(pref.categories):].sum(axis=1)
        if np.nansum(rest) > 0:
            out["(other)"] = tuple(float(v) for v in rest)
        return out
    values = as_float(predictions, False)
    series: dict[str, list[float]] = {"mean": [], "p10": [], "p90": []}
    for s in slices:
        part = values[s]
        part = part[np.isfinite(part)]
        mean, p10, p90 = (float(part.mean()), *np.percentile(part, [10, 90])) if len(part) else (math.nan,) * 3
        series["mean"].append(mean)
        series["p10"].append(float(p10))
        series["p90"].append(float(p90))
    return {k: tuple(v) for k, v in series.items()}


def read_alerts(directory: str | Path, model: str, *, version: str | None = None, since: float | None = None,
                until: float | None = None, notes: list[str] | None = None) -> tuple[dict[str, Any], ...]:
    """The alert events of ``model`` (of ``version`` when given) that the server appended to
    ``DIR/<model>/alerts.jsonl`` with their ``at`` in ``[since, until)``: the newest :data:`MAX_ALERTS`, oldest
    first. A line that is not such an event is skipped and counted in ``notes``."""
    path = Path(directory) / path_component(model) / ALERTS_FILE
    kept: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
    bad = 0
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return ()
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            at = _moment(event.get("at")) if isinstance(event, dict) else None
            if at is None or not isinstance(event.get("alert"), str) or event.get("state") not in STATES:
                bad += 1
                continue
            if event.get("model", model) != model or (version is not None and event.get("version") != version):
                continue
            if (since is not None and at < since) or (until is not None and at >= until):
                continue
            kept.append(event)
    if bad and notes is not None:
        notes.append(f"{bad} line(s) of {ALERTS_FILE} are not alert events (skipped)")
    return tuple(kept)


STATES = ("firing", "resolved")


def _moment(value: Any) -> float | None:
    """Epoch seconds of an event time: a number, or RFC 3339 text (AlertEvent.to_dict writes ``...Z``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)).timestamp()
    return None


# -- Arrow columns ------------------------------------------------------------------------------------------------
def _mask(column: pa.ChunkedArray, value: str) -> np.ndarray:
    equal = pc.fill_null(pc.equal(column, pa.scalar(value, pa.string())), False)
    return np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)


def _epoch_seconds(column: pa.ChunkedArray) -> np.ndarray:
    if not len(column) or pa.types.is_null(column.type):
        return np.empty(0)
    micros = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(micros.to_numpy(), dtype=np.float64) / 1e6


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy: integers and booleans without nulls as they are (a class 1 stays 1, not 1.0), other
    numbers as float64 (NaN for null), anything else as objects (None for null)."""
    if (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)) and not column.null_count:
        return np.asarray(column.to_numpy())
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        filled = pc.fill_null(pc.cast(column, pa.float64()), math.nan)
        return np.asarray(filled.to_numpy(), dtype=np.float64)
    if pa.types.is_null(column.type):
        return np.full(len(column), None, dtype=object)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


def _float(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(column.type):
        return np.full(len(column), math.nan)
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), math.nan).to_numpy(), dtype=np.float64)


def _int(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(column.type):
        return np.full(len(column), -1, dtype=np.int64)
    return np.asarray(pc.fill_null(pc.cast(column, pa.int64()), -1).to_numpy(), dtype=np.int64)


def _probabilities(table: pa.Table, columns: Sequence[str]) -> np.ndarray | None:
    """rows x classes, or None when the log holds none of them (rows served without them: NaN)."""
    if not columns or not table.num_rows or all(pa.types.is_null(table.column(c).type) for c in columns):
        return None
    return np.column_stack([_float(table.column(c)) for c in columns])


def _version_key(text: str) -> tuple[int, int, int, str]:
    try:
        v = Version.parse(text)
    except InvalidNameError:
        return (2**31, 0, 0, text)
    return (v.major, v.minor, v.patch, "")


# -- from a registry reference ------------------------------------------------------------------------------------
def monitor(registry: Registry, ref: str, directory: str | Path, *, since: float | None = None,
            until: float | None = None, now: float | None = None, max_buckets: int = 48) -> Report:
    """The report of ``ref`` (``name``, ``name:1.2.0`` or ``name@alias``) from the log in ``directory``.

    ``name:version`` and ``name@alias`` report that version's rows only. A plain ``name`` reports every version
    the log holds over the period; drift is then measured for the newest of them (against its own profile)."""
    if not Path(directory).is_dir():
        raise NotFoundError(f"no prediction log at {directory} (the directory given to serve --log)")
    parsed = Ref.parse(ref)
    if parsed.path is not None or parsed.name is None:
        raise InvalidNameError(f"{ref!r} is a path: name a registered model (NAME, NAME:VERSION or NAME@ALIAS)")
    name = parsed.name
    logged = log_models(directory).get(path_component(name), [])
    if not logged:
        held = ", ".join(sorted(log_models(directory))) or "nothing"
        raise NotFoundError(f"the log at {directory} holds no prediction of {name!r} (it holds: {held})")
    pinned = parsed.version is not None or parsed.alias is not None
    if pinned:
        chosen = registry.get(parsed)
    else:
        known = {v.version for v in registry.versions(name)}
        candidates = sorted((v for v in logged if v in known), key=_version_key)
        if not candidates:
            raise NotFoundError(f"the log holds versions {', '.join(logged)} of {name!r}, none of them in {registry}")
        chosen = registry.get(Ref(name=name, version=candidates[-1]))
    reference = reference_of(chosen, registry.directory(chosen))
    return collect(directory, reference, ref=str(parsed), version=chosen.version if pinned else None,
                   since=since, until=until, now=now, max_buckets=max_buckets)


def reference_of(version: ModelVersion, directory: Path | None = None) -> Reference:
    """The drift reference of a stored version: its manifest and its profile, the profile's bytes checked
    against the sha256 its manifest records (no model is loaded). ``directory``: where the version's files are
    (``Registry.directory``: an object registry's cache); default: the version's own path."""
    manifest = version.manifest
    entries = {a.path: a for a in manifest.artifacts}
    try:
        profile = orjson.loads(Artefacts(directory or version.path, entries, (), manifest.ref).read_bytes(PROFILE))
    except (IntegrityError, orjson.JSONDecodeError):
        profile = None
    return Reference.from_manifest(manifest, profile)
