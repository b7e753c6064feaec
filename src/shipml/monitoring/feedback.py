"""Ground truth: labels that arrive after the predictions, stored beside the prediction log and joined to it.

- :func:`parse_feedback` reads a JSON body (one object, a list of them, or ``{"feedback": [...]}``); every
  problem is named with its item index and rule (:class:`~shipml.errors.SchemaError`, a 4xx).
- :func:`read_labels` reads a CSV or Parquet file with columns ``request_id``, ``target`` (``row`` optional).
- :class:`FeedbackLog` stores labels as atomic Parquet files under ``DIR/<model>/feedback/<date>/``;
  :func:`read_feedback` reads them back.
- :func:`join` matches labels to logged predictions by request id (and row).

A label is stored as text (``target``) with its number (``target_num``, float64, NaN when it is not one) and
its JSON kind (``target_kind``: str, int, float or bool), so any label round-trips. Labels are matched to a
classifier's classes by value, whatever their type: the text ``"1"``, the number ``1``, ``1.0`` and ``true``
all match the class ``1``; ``"yes"`` matches ``"yes"``; ``True`` matches ``True``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shipml.errors import BadRequest, PayloadTooLarge, SchemaError
from shipml.monitoring.log import PROBA_PREFIX, part_name, path_component, write_parquet_atomic
from shipml.monitoring.logread import FEEDBACK_DIR, Moment, _dated_files, concat, epoch, read_parquet_files
from shipml.package.signature import Problem, to_jsonable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FeedbackLog", "Joined", "Label", "join", "labels_table", "parse_feedback", "read_feedback",
           "read_labels"]

MAX_ID_CHARS = 128
MAX_TARGET_CHARS = 1000
_FIELDS = ("request_id", "target", "row")
_NUMBER = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"

LABELS_SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()), ("row", pa.int32()),
    ("target", pa.string()), ("target_num", pa.float64()), ("target_kind", pa.string()),
])


@dataclass(frozen=True, slots=True)
class Label:
    """One label: for a whole request (``row`` None: every row of it) or for one row of it."""

    request_id: str
    row: int | None
    target: Any


# -- parsing a JSON body --------------------------------------------------------------------------------------

class _Problems:
    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, item: int, column: str | None, rule: str, message: str) -> None:
        self.found.append(Problem(item, column, rule, message))

    def raise_any(self) -> None:
        if not self.found:
            return
        shown = "; ".join(f"item {p.row}: {p.column + ': ' if p.column else ''}{p.message} [{p.rule}]"
                          for p in self.found[:5])
        more = f" (and {len(self.found) - 5} more)" if len(self.found) > 5 else ""
        raise SchemaError(f"invalid feedback: {shown}{more}", self.found[:100], len(self.found))


def parse_feedback(payload: Any, *, max_items: int = 10_000) -> list[Label]:
    """The labels of a feedback body (see the module docstring); raises a 4xx error naming every bad item."""
    if isinstance(payload, Mapping) and "feedback" in payload:
        extra = [k for k in payload if k != "feedback"]
        if extra:
            raise BadRequest(f"feedback body has unknown fields {sorted(map(str, extra))}: give only 'feedback'")
        items = payload["feedback"]
        if not isinstance(items, list):
            raise BadRequest("'feedback' must be a list of {\"request_id\": ..., \"target\": ...} objects")
    elif isinstance(payload, Mapping):
        items = [payload]
    elif isinstance(payload, list):
        items = payload
    else:
        raise BadRequest("feedback must be an object {\"request_id\": ..., \"target\": ...}, a list of them, or"
                         " {\"feedback\": [...]}")
    if not items:
        raise BadRequest("feedback holds no items")
    if len(items) > max_items:
        raise PayloadTooLarge(f"feedback holds {len(items)} items, at most {max_items} are taken in one request")
    problems = _Problems()
    labels: list[Label] = []
    for i, item in enumerate(items):
        labels += _item(i, item, problems)
    problems.raise_any()
    if len(labels) > max_items:
        raise PayloadTooLarge(f"feedback holds {len(labels)} labels, at most {max_items} are taken in one request")
    return labels


def _item(i: int, item: Any, problems: _Problems) -> list[Label]:
    if not isinstance(item, Mapping):
        problems.add(i, None, "type", f"must be an object with request_id and target, not {_kind(item)}")
        return []
    before = len(problems.found)
    for key in item:
        if key not in _FIELDS:
            problems.add(i, str(key)[:40], "unknown_field", "unknown field (expected request_id, target, row)")
    request_id = item.get("request_id")
    if "request_id" not in item:
        problems.add(i, "request_id", "missing", "is missing")
    elif not isinstance(request_id, str):
        problems.add(i, "request_id", "type", f"must be a string, not {_kind(request_id)}")
    elif not 1 <= len(request_id) <= MAX_ID_CHARS or not request_id.isprintable():
        problems.add(i, "request_id", "format", f"must be 1-{MAX_ID_CHARS} printable characters")
    row = item.get("row")
    if row is not None and (not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < 2**31):
        problems.add(i, "row", "row", "must be a whole number >= 0 (the row within the request)")
    if "target" not in item:
        problems.add(i, "target", "missing", "is missing")
        return []
    target = item["target"]
    if isinstance(target, list):
        if row is not None:
            problems.add(i, "target", "list_with_row", "a list target labels every row of the request: give"
                         " either a list target or a row, not both")
        elif not target:
            problems.add(i, "target", "empty", "an empty list labels nothing")
        for j, value in enumerate(target):
            why = _bad_scalar(value)
            if why is not None:
                problems.add(i, f"target[{j}]", why[0], why[1])
        if len(problems.found) > before:
            return []
        return [Label(str(request_id), j, value) for j, value in enumerate(target)]
    why = _bad_scalar(target)
    if why is not None:
        problems.add(i, "target", why[0], why[1])
    if len(problems.found) > before:
        return []
    return [Label(str(request_id), row, target)]


def _bad_scalar(value: Any) -> tuple[str, str] | None:
    """(rule, message) when ``value`` cannot be a label, else None."""
    if value is None:
        return "null", "is null: give the label"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "range", "is a number beyond the range of a double"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("finite", "must be a finite number")
    if isinstance(value, str):
        if not value:
            return "empty", "is an empty string"
        if len(value) > MAX_TARGET_CHARS:
            return "length", f"is longer than {MAX_TARGET_CHARS} characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text", "holds characters that are not valid Unicode text"
        return None
    return "type", f"must be a label (string, number or boolean) or a list of them, not {_kind(value)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


# -- labels as a table ----------------------------------------------------------------------------------------

def _cells(value: Any) -> tuple[str, float, str]:
    """(text, number or NaN, kind) of a label value."""
    value = to_jsonable(value)
    if isinstance(value, bool):
        return ("true" if value else "false"), float(value), "bool"
    if isinstance(value, int):
        return str(value), float(value), "int"
    if isinstance(value, float):
        return repr(value), value, "float"
    text = str(value)
    return text, _number(text), "str"


def _number(text: str) -> float:
    if re.match(_NUMBER, text):
        try:
            number = float(text)
        except (ValueError, OverflowError):
            return math.nan
        return number if math.isfinite(number) else math.nan
    return math.nan


def labels_table(labels: Sequence[Label], time: float) -> pa.Table:
    """Labels as the stored table (columns ``time, request_id, row, target, target_num, target_kind``)."""
    cells = [_cells(label.target) for label in labels]
    n = len(labels)
    return pa.table({
        "time": pa.array(np.full(n, round(time * 1_000_000), dtype=np.int64), type=pa.timestamp("us", tz="UTC")),
        "request_id": pa.array([label.request_id for label in labels], type=pa.string()),
        "row": pa.array([label.row for label in labels], type=pa.int32()),
        "target": pa.array([c[0] for c in cells], type=pa.string()),
        "target_num": pa.array([c[1] for c in cells], type=pa.float64()),
        "target_kind": pa.array([c[2] for c in cells], type=pa.string()),
    }, schema=LABELS_SCHEMA)


def read_labels(path: str | Path) -> pa.Table:
    """The labels of a CSV or Parquet file with columns ``request_id`` and ``target`` (``row`` optional), as the
    stored table (its ``time`` is set when stored). Every problem is named with the file's row."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SchemaError(f"cannot tell the format of {path.name}: name it .csv or .parquet")
    if not path.is_file():
        raise SchemaError(f"no such labels file: {path}")
    try:
        if suffix == ".csv":
            import pyarrow.csv as pa_csv

            names = _header(path)
            table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                column_types={c: pa.string() for c in names}, strings_can_be_null=True,
                include_columns=[c for c in _FIELDS if c in names]))
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in _FIELDS if c in names])
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise SchemaError(f"cannot read {path.name} as {suffix.lstrip('.').upper()}: {exc}") from exc
    missing = [c for c in ("request_id", "target") if c not in names]
    if missing:
        raise SchemaError(f"{path.name} has no column {', '.join(map(repr, missing))} (it has {names}): a labels"
                          " file needs request_id and target, and may have row")
    return _normalise(table, path.name)


def _header(path: Path) -> list[str]:
    import pyarrow.csv as pa_csv

    with path.open("rb") as f:
        first = f.readline(1 << 20)
    return pa_csv.read_csv(pa.py_buffer(first + b"\n")).column_names if first.strip() else []


def _normalise(table: pa.Table, name: str) -> pa.Table:
    n = table.num_rows
    ids = pc.cast(table.column("request_id"), pa.string())
    bad_ids = pc.or_kleene(pc.is_null(ids), pc.or_kleene(pc.less(pc.utf8_length(ids), 1),
                                             pc.greater(pc.utf8_length(ids), MAX_ID_CHARS)))
    _refuse(bad_ids, name, "request_id", f"must be 1-{MAX_ID_CHARS} characters")
    target = table.column("target")
    kind_name = "str"
    if pa.types.is_boolean(target.type):
        kind_name = "bool"
        num = pc.cast(target, pa.float64())
    elif pa.types.is_integer(target.type):
        kind_name = "int"
        num = pc.cast(target, pa.float64())
    elif pa.types.is_floating(target.type):
        kind_name = "float"
        num = pc.cast(target, pa.float64())
        _refuse(pc.invert(pc.is_finite(num)), name, "target", "must be a finite number")
    text = pc.cast(target, pa.string())
    _refuse(pc.is_null(text), name, "target", "is empty (null)")
    if kind_name == "str":
        text = pc.utf8_trim_whitespace(text)
        _refuse(pc.equal(pc.utf8_length(text), 0), name, "target", "is empty")
        numeric = pc.match_substring_regex(text, _NUMBER)
        num = pc.cast(pc.if_else(numeric, text, pa.scalar("nan")), pa.float64())
        num = pc.if_else(pc.is_finite(num), num, pa.scalar(math.nan))
    if "row" in table.column_names:
        raw_row = table.column("row")
        if pa.types.is_string(raw_row.type):  # "3", or "3.0" as pandas writes a column with a null
            whole = pc.match_substring_regex(raw_row, r"^\s*[0-9]{1,10}(\.0*)?\s*$")
            _refuse(pc.and_kleene(pc.invert(whole), pc.is_valid(raw_row)), name, "row", "must be a whole number >= 0")
            raw_row = pc.cast(pc.utf8_trim_whitespace(raw_row), pa.float64())
        if pa.types.is_floating(raw_row.type):
            fraction = pc.not_equal(raw_row, pc.floor(raw_row))
            _refuse(pc.and_kleene(fraction, pc.is_valid(raw_row)), name, "row", "must be a whole number >= 0")
            _refuse(pc.and_kleene(pc.invert(pc.is_finite(raw_row)), pc.is_valid(raw_row)), name, "row",
                    "must be a whole number >= 0")
            raw_row = pc.cast(raw_row, pa.int64())
        elif not pa.types.is_integer(raw_row.type):
            raise SchemaError(f"{name}: column 'row' must hold whole numbers >= 0, not {raw_row.type}")
        _refuse(pc.or_kleene(pc.less(raw_row, 0), pc.greater_equal(raw_row, 2**31)), name, "row",
                "must be a whole number >= 0")
        rows = pc.cast(raw_row, pa.int32())
    else:
        rows = pa.nulls(n, pa.int32())
    return pa.table({
        "time": pa.nulls(n, pa.timestamp("us", tz="UTC")), "request_id": ids, "row": rows, "target": text,
        "target_num": num, "target_kind": pa.repeat(pa.scalar(kind_name), n),
    }, schema=LABELS_SCHEMA)


def _refuse(mask: Any, name: str, column: str, message: str) -> None:
    mask = pc.fill_null(mask, False)  # a null is judged by its own rule (is_null)
    if not pc.any(mask).as_py():
        return
    rows = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False)))
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise SchemaError(f"{name}: column {column!r} {message} (data rows {shown}; {len(rows)} in all)")


# -- the feedback store ---------------------------------------------------------------------------------------

class FeedbackLog:
    """Labels of each model as atomic Parquet files under ``DIR/<model>/feedback/<YYYY-MM-DD>/``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def append(self, model: str, labels: Sequence[Label] | pa.Table, time: float) -> None:
        """Store ``labels`` (from :func:`parse_feedback`, or a table from :func:`read_labels`) as received at
        ``time`` (epoch seconds). One file per call; an error leaves nothing half-written."""
        table = labels if isinstance(labels, pa.Table) else labels_table(labels, time)
        stamp = pa.array(np.full(table.num_rows, round(time * 1_000_000), dtype=np.int64),
                         type=pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.schema.get_field_index("time"), "time", stamp)
        if not table.num_rows:
            return
        day = dt.datetime.fromtimestamp(time, dt.UTC).strftime("%Y-%m-%d")
        folder = self.directory / path_component(model) / FEEDBACK_DIR / day
        folder.mkdir(parents=True, exist_ok=True)
        table = table.replace_schema_metadata({b"shipml.model": model.encode("utf-8", "replace")})
        write_parquet_atomic(table, folder / part_name(time, "feedback"))


def read_feedback(directory: str | Path, model: str, since: Moment | None = None) -> pa.Table:
    """The labels stored for ``model`` (received at ``since`` or later), in the order they were received."""
    lo = epoch(since) if since is not None else None
    files = sorted(_dated_files(Path(directory) / path_component(model) / FEEDBACK_DIR, lo, None),
                   key=lambda p: p.name)
    tables = [t.replace_schema_metadata(None) for t in read_parquet_files(files)]
    tables = [t.select(LABELS_SCHEMA.names) for t in tables if set(LABELS_SCHEMA.names) <= set(t.column_names)]
    table = concat(tables) if tables else LABELS_SCHEMA.empty_table()
    if lo is not None:
        table = table.filter(pc.greater_equal(pc.cast(table.column("time"), pa.int64()), round(lo * 1_000_000)))
    if table.num_rows > 1:
        table = table.take(pc.sort_indices(table, [("time", "ascending")]))  # stable: file order within a time
    return table


# -- the join -------------------------------------------------------------------------------------------------

@dataclass
class Joined:
    """Logged predictions that have a label, aligned: one entry per labelled row."""

    targets: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any] | None
    times: np.ndarray  # epoch seconds of the prediction
    versions: np.ndarray
    request_ids: np.ndarray
    rows: np.ndarray
    task: str
    unmatched: int = 0  # labels (after the last-wins rule) with no logged prediction
    invalid: int = 0  # labelled rows whose label cannot take the prediction's type (dropped)
    label_times: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def matched(self) -> int:
        return len(self.targets)


def _signature_outputs(table: pa.Table) -> list[dict[str, Any]]:
    meta = table.schema.metadata or {}
    raw = meta.get(b"shipml.signatures")
    if raw is None:
        return []
    try:
        signatures = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [s["outputs"] for s in signatures.values() if isinstance(s, dict) and isinstance(s.get("outputs"), dict)]


def join(predictions: pa.Table, labels: pa.Table) -> Joined:
    """Labels matched to logged predictions (see the module docstring). A label for a whole request (``row``
    null) labels each of its rows; of several labels for one row the last received wins (a whole-request label
    and a row label compete by time too); a prediction logged twice under one request id and row counts once,
    the latest. Targets take the predictions' type; ``unmatched`` counts labels with no logged prediction."""
    outputs = _signature_outputs(predictions)
    classes = next((o.get("classes") for o in outputs if o.get("classes")), None)
    proba_cols = [c for c in predictions.column_names if c.startswith(PROBA_PREFIX)]
    if classes is not None:
        from shipml.monitoring.log import class_text

        ordered = [PROBA_PREFIX + class_text(c) for c in classes]
        proba_cols = ordered if all(c in predictions.column_names for c in ordered) else proba_cols
    task = next((str(o.get("task")) for o in outputs if o.get("task")), "")
    pred_type = predictions.schema.field("prediction").type if "prediction" in predictions.column_names \
        else pa.null()
    if task not in ("classification", "regression"):
        task = "regression" if pa.types.is_floating(pred_type) and not proba_cols else "classification"

    P = _frame(predictions, ["request_id", "row", "time", "version", "prediction", *proba_cols])
    P = P.drop_duplicates(["request_id", "row"], keep="last")
    L = _frame(labels, ["request_id", "row", "time", "target", "target_num", "target_kind"])
    L["order"] = np.arange(len(L))
    by_row = L[L["row"].notna()].drop_duplicates(["request_id", "row"], keep="last")
    by_request = L[L["row"].isna()].drop_duplicates(["request_id"], keep="last")
    by_row = by_row.astype({"row": np.int64})
    P = P.astype({"row": np.int64})
    label_cols = ["order", "time", "target", "target_num", "target_kind"]
    merged = P.merge(by_row[["request_id", "row", *label_cols]], on=["request_id", "row"], how="left",
                     suffixes=("", "_label"))
    merged = merged.merge(by_request[["request_id", *label_cols]].add_suffix("_whole")
                          .rename(columns={"request_id_whole": "request_id"}), on="request_id", how="left")
    use_whole = merged["order_whole"].notna() & (merged["order"].isna()
                                                 | (merged["order_whole"] > merged["order"]))
    for col in ("time_label", "target", "target_num", "target_kind"):
        whole = "time_whole" if col == "time_label" else f"{col}_whole"
        merged[col] = merged[col].where(~use_whole, merged[whole])
    merged = merged[merged["order"].notna() | use_whole]
    found = by_row[["request_id", "row"]].merge(P[["request_id", "row"]], how="left", indicator=True)
    unmatched = int((found["_merge"] == "left_only").sum())
    unmatched += int((~by_request["request_id"].isin(P["request_id"])).sum())

    predicted = _column(merged["prediction"], pred_type)
    targets, ok = _coerce(merged, predicted, classes, task)
    merged = merged[ok]
    predicted = predicted[ok]
    probabilities = None
    if proba_cols and len(merged):
        probabilities = merged[proba_cols].to_numpy(dtype=np.float64)
        if np.isnan(probabilities).any():
            probabilities = None
    elif proba_cols:
        probabilities = np.empty((0, len(proba_cols)))
    if classes is None and proba_cols:
        classes = [c[len(PROBA_PREFIX):] for c in proba_cols]
    return Joined(
        targets=targets, predictions=predicted, probabilities=probabilities, classes=classes,
        times=_seconds(merged["time"]), versions=merged["version"].to_numpy(dtype=object),
        request_ids=merged["request_id"].to_numpy(dtype=object), rows=merged["row"].to_numpy(dtype=np.int64),
        task=task, unmatched=unmatched, invalid=int((~ok).sum()), label_times=_seconds(merged["time_label"]),
    )


def _frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    data = {}
    for c in columns:
        if c in table.column_names:
            data[c] = table.column(c).to_pandas(types_mapper=None).to_numpy(dtype=object) \
                if c in ("prediction", "row", "target_num") else table.column(c).to_pandas().to_numpy()
        else:
            data[c] = np.full(table.num_rows, None, dtype=object)
    frame = pd.DataFrame(data)
    if "target_num" in frame:
        frame["target_num"] = pd.to_numeric(frame["target_num"], errors="coerce").astype(np.float64)
    return frame


def _seconds(values: pd.Series) -> np.ndarray:
    import pandas as pd

    stamps = pd.to_datetime(values, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    out: np.ndarray = seconds.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _column(values: pd.Series, kind: pa.DataType) -> np.ndarray:
    """The predictions as a numpy array of their own type."""
    raw = values.to_numpy(dtype=object)
    if pa.types.is_boolean(kind):
        return raw.astype(bool)
    if pa.types.is_integer(kind):
        return raw.astype(np.int64)
    if pa.types.is_floating(kind):
        return raw.astype(np.float64)
    return raw


def _key(text: Any, number: float, kind: Any) -> str:
    """What a label or class is matched by: its number when it is one (booleans are 1 and 0, as are the texts
    true and false), else its text."""
    if not math.isnan(number):
        return f"n:{float(number)!r}"
    if isinstance(text, str) and text.lower() in ("true", "false"):
        return "n:1.0" if text.lower() == "true" else "n:0.0"
    return f"s:{text}"


def _coerce(merged: pd.DataFrame, predicted: np.ndarray, classes: list[Any] | None, task: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """(targets in the predictions' type, mask of the rows whose label could take it)."""
    n = len(merged)
    if n == 0:
        return predicted[:0].copy(), np.zeros(0, dtype=bool)
    if task == "regression":
        numbers = merged["target_num"].to_numpy(dtype=np.float64)
        ok = np.isfinite(numbers)
        return numbers[ok].astype(predicted.dtype if predicted.dtype.kind in "iuf" else np.float64), ok
    known: dict[str, Any] = {}
    for value in [*(classes or []), *_unique(predicted)]:
        text, number, kind = _cells(value)
        known.setdefault(_key(text, number, kind), value)
    uniques = merged[["target", "target_num", "target_kind"]].drop_duplicates()
    mapped: dict[tuple[Any, Any], tuple[bool, Any]] = {}  # by (text, kind): the number follows from them
    for text, number, kind in uniques.itertuples(index=False, name=None):
        key = _key(text, number, kind)
        if key in known:
            mapped[(text, kind)] = (True, known[key])
        else:
            mapped[(text, kind)] = _as_type(text, number, predicted.dtype)
    keys = list(zip(merged["target"], merged["target_kind"], strict=True))
    found = [mapped[k] for k in keys]
    ok = np.fromiter((f[0] for f in found), dtype=bool, count=n)
    values = [f[1] for f in found if f[0]]
    targets = np.asarray(values, dtype=predicted.dtype) if predicted.dtype != object \
        else np.asarray([*values, None], dtype=object)[:-1]
    return targets, ok


def _unique(values: np.ndarray) -> list[Any]:
    try:
        return list(np.unique(values)) if values.dtype != object else list(dict.fromkeys(values.tolist()))
    except TypeError:
        return list(dict.fromkeys(values.tolist()))


def _as_type(text: Any, number: float, dtype: np.dtype[Any]) -> tuple[bool, Any]:
    """A label that is no known class, in the predictions' type when it can be (a wrong class all the same)."""
    if dtype.kind in "OUS":
        return True, text
    if dtype.kind == "f" and not math.isnan(number):
        return True, number
    if dtype.kind in "iu" and not math.isnan(number) and float(number).is_integer():
        return True, int(number)
    return False, None
