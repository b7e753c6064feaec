"""Reading the prediction log back (see :mod:`shipml.monitoring.log` for the layout and the columns).

Every reader skips temporary files (a name starting with ``.``: a file being written, or one a killed process
left) without a word, and skips a file it cannot read with one warning line naming it (logger
``shipml.monitoring``): a damaged file never fails a read of the others.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipml.monitoring.log import TEMP_PREFIX, path_component

__all__ = ["FEEDBACK_DIR", "find_predictions", "log_files", "log_models", "read_log", "read_parquet_files"]

log = logging.getLogger("shipml.monitoring")

#: The directory beside a model's versions that holds its feedback (never a version: versions are semver).
FEEDBACK_DIR = "feedback"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STAMP = re.compile(r"-(\d{8}T\d{6})-")
#: The time in a file's name (when it was written, to the second) is never earlier than its rows' times: a file
#: named more than this before ``since`` holds only older rows and is skipped unread (a generous margin, for clock
#: steps and rows stamped by another clock).
_NAME_SLACK_S = 3600.0

Moment = float | dt.datetime


def epoch(moment: Moment) -> float:
    """Epoch seconds of a float (as it is) or a datetime (naive ones are UTC)."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    return float(moment)


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(TEMP_PREFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []


def log_models(directory: str | Path) -> dict[str, list[str]]:
    """Model name -> the versions the log holds files of (sorted)."""
    out: dict[str, list[str]] = {}
    for model_dir in _visible_dirs(Path(directory)):
        versions = [v.name for v in _visible_dirs(model_dir)
                    if v.name != FEEDBACK_DIR and any(v.glob("*/*.parquet"))]
        if versions:
            out[model_dir.name] = versions
    return out


def log_files(directory: str | Path, *, model: str | None = None, version: str | None = None,
              since: Moment | None = None, until: Moment | None = None) -> list[Path]:
    """The committed Parquet files of the prediction log, oldest first, pruned by day and by the time in their
    names where ``since``/``until`` allow (rows are still filtered exactly by the readers)."""
    root = Path(directory)
    lo = epoch(since) if since is not None else None
    hi = epoch(until) if until is not None else None
    files: list[Path] = []
    models = [root / path_component(model)] if model is not None else _visible_dirs(root)
    for model_dir in models:
        versions = [model_dir / path_component(version)] if version is not None else _visible_dirs(model_dir)
        for version_dir in versions:
            if version_dir.name == FEEDBACK_DIR:
                continue
            files += _dated_files(version_dir, lo, hi)
    return sorted(files, key=lambda p: p.name)


def _dated_files(folder: Path, lo: float | None, hi: float | None) -> list[Path]:
    out = []
    for day in _visible_dirs(folder):
        if _DATE.match(day.name) and hi is not None:
            start = dt.datetime.strptime(day.name, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
            if start > hi:  # the day of a file is the day of its earliest row
                continue
        try:
            names = sorted(day.iterdir())
        except OSError:
            continue
        for path in names:
            if path.name.startswith(TEMP_PREFIX) or path.suffix != ".parquet" or not path.is_file():
                continue
            if lo is not None:
                found = _STAMP.search(path.name)
                if found is not None:
                    written = dt.datetime.strptime(found.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
                    if written.timestamp() + _NAME_SLACK_S < lo:  # written before since: every row is older
                        continue
            out.append(path)
    return out


def read_parquet_files(paths: Iterable[Path], columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """Each readable file as a table (only ``columns`` that it has, when given); an unreadable one is skipped
    with a warning naming it."""
    for path in paths:
        try:
            if columns is None:
                table = pq.read_table(path)
            else:
                names = pq.read_schema(path).names
                table = pq.read_table(path, columns=[c for c in columns if c in names])
        except FileNotFoundError:  # removed since it was listed
            continue
        except Exception as exc:  # a damaged file, whatever the error: the others are still read
            log.warning("skipped unreadable log file %s (%s: %s)", path, type(exc).__name__, exc)
            continue
        yield table


def concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of several schemas as one: missing columns become nulls, types are widened; a column whose types
    cannot be unified (a prediction that is an integer in one version and text in another) becomes text."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    kinds: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            kinds.setdefault(f.name, set()).add(f.type)
    clash = {name for name, types in kinds.items() if len({t for t in types if t != pa.null()}) > 1}
    fixed = []
    for t in tables:
        out = t
        for name in clash & set(t.column_names):
            i = out.schema.get_field_index(name)
            out = out.set_column(i, name, pc.cast(out.column(i), pa.string()))
        fixed.append(out)
    return pa.concat_tables(fixed, promote_options="permissive")


def _signatures(tables: list[pa.Table]) -> dict[str, object]:
    """model:version -> signature, from the files' metadata (what :func:`join` and reports need)."""
    out: dict[str, object] = {}
    for t in tables:
        meta = t.schema.metadata or {}
        raw = meta.get(b"shipml.signature")
        if raw is None:
            continue
        key = f"{meta.get(b'shipml.model', b'').decode('utf-8', 'replace')}:" \
              f"{meta.get(b'shipml.version', b'').decode('utf-8', 'replace')}"
        if key not in out:
            try:
                out[key] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
    return out


def _time_filter(table: pa.Table, lo: float | None, hi: float | None) -> pa.Table:
    if (lo is None and hi is None) or "time" not in table.column_names or not table.num_rows:
        return table
    micros = pc.cast(table.column("time"), pa.int64())
    mask = None
    if lo is not None:
        mask = pc.greater_equal(micros, round(lo * 1_000_000))
    if hi is not None:
        upper = pc.less(micros, round(hi * 1_000_000))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table.filter(mask)


EMPTY_LOG = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()), ("row", pa.int32()),
    ("endpoint", pa.string()), ("model", pa.string()), ("version", pa.string()), ("variant", pa.string()),
    ("latency_ms", pa.float64()), ("prediction", pa.null()),
])


def read_log(directory: str | Path, *, model: str | None = None, version: str | None = None,
             since: Moment | None = None, until: Moment | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
    """The logged rows in ``[since, until)`` (epoch seconds or datetimes; naive ones are UTC), of one model
    and version when given, sorted by time (then request id and row). ``columns`` limits what is read (a file
    without one of them gives nulls there). The schema's metadata ``shipml.signatures`` maps each
    ``model:version`` read to its signature (JSON)."""
    lo = epoch(since) if since is not None else None
    hi = epoch(until) if until is not None else None
    files = log_files(directory, model=model, version=version, since=lo, until=hi)
    wanted = None if columns is None else list(dict.fromkeys(["time", *columns]))
    tables = [t for t in read_parquet_files(files, wanted)]
    signatures = _signatures(tables)
    tables = [_time_filter(t.replace_schema_metadata(None), lo, hi) for t in tables]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    table = concat(tables) if tables else EMPTY_LOG.empty_table()
    if table.num_rows > 1:
        keys = [(k, "ascending") for k in ("time", "request_id", "row") if k in table.column_names]
        table = table.sort_by(keys)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
        missing = [c for c in columns if c not in table.column_names]
        for name in missing:
            table = table.append_column(name, pa.nulls(table.num_rows))
        table = table.select(list(columns))
    return table.replace_schema_metadata({b"shipml.signatures": orjson.dumps(signatures)})


def find_predictions(directory: str | Path, model: str, request_ids: Iterable[str]) -> pa.Table:
    """The logged rows of ``model`` (any version) whose request id is one of ``request_ids``, oldest first.
    Each file's request ids are read first; the rest of a file only when one of them is there."""
    wanted = pa.array(sorted(set(request_ids)), type=pa.string())
    tables: list[pa.Table] = []
    if len(wanted):
        for path in log_files(directory, model=model):
            ids = next(read_parquet_files([path], ["request_id"]), None)
            if ids is None or "request_id" not in ids.column_names:
                continue
            mask = pc.is_in(ids.column("request_id"), value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            full = next(read_parquet_files([path]), None)
            if full is not None and full.num_rows == ids.num_rows:
                tables.append(full.filter(mask))
    signatures = _signatures(tables)
    tables = [t.replace_schema_metadata(None) for t in tables]
    table = concat(tables) if tables else EMPTY_LOG.empty_table()
    if table.num_rows > 1:
        table = table.sort_by([("time", "ascending"), ("request_id", "ascending"), ("row", "ascending")])
    return table.replace_schema_metadata({b"shipml.signatures": orjson.dumps(signatures)})
