"""Check input data against a signature, vectorised: one numpy/pandas operation per column and rule, no per-row
Python loop. The same check serves ``LoadedModel.validate``, the server and batch jobs. Numeric input is checked
with numpy alone: pandas is imported only for frames, strings, booleans, datetimes and wrong-typed values.

``check(X, signature, policy)`` returns a :class:`Checked`: the input coerced to the signature's types (a
:class:`Table`), the mask of rows with errors, and the problems found (row, column, rule), the first
``policy.max_problems`` of them spelled out and all of them counted.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shipml._lazy import is_series
from shipml.errors import SchemaError
from shipml.package.columns import numbers, raw_columns
from shipml.package.signature import ColumnSpec, Problem, Severity, Signature

if TYPE_CHECKING:
    import pandas as pd

Policy = Literal["warn", "reject"]


@dataclass(frozen=True)
class InputPolicy:
    """What to do with values training never saw. Nulls, wrong types and missing columns are always errors."""

    out_of_range: Policy = "warn"
    unseen_category: Policy = "reject"
    extra_columns: Literal["ignore", "warn", "reject"] = "reject"
    max_problems: int = 100

    def severity(self, policy: str) -> Severity:
        return "error" if policy == "reject" else "warning"


DEFAULT_POLICY = InputPolicy()


class Table:
    """Input data coerced to the signature: one 1-D array per input column, in signature order.

    A table checked from a float matrix keeps it (``dense``): its columns are views of it, made when first
    asked for, and :meth:`matrix` hands it over without a copy.
    """

    __slots__ = ("_columns", "_names", "dense", "n_rows")

    def __init__(self, columns: dict[str, np.ndarray] | None, n_rows: int, dense: np.ndarray | None = None,
                 names: Sequence[str] = ()) -> None:
        self._columns = columns
        self._names = names
        self.n_rows = n_rows
        self.dense = dense

    @property
    def columns(self) -> dict[str, np.ndarray]:
        if self._columns is None:
            assert self.dense is not None
            self._columns = {name: self.dense[:, j] for j, name in enumerate(self._names)}
        return self._columns

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, names: Sequence[str]) -> Table:
        return cls(None, matrix.shape[0], matrix, names)

    def take(self, rows: np.ndarray) -> Table:
        if self.dense is not None:
            return Table.from_matrix(self.dense[rows], self._names or list(self.columns))
        return Table({k: v[rows] for k, v in self.columns.items()}, len(rows))

    def matrix(self, dtype: Any = np.float64) -> np.ndarray:
        """All columns stacked as a 2-D numeric array (for runtimes that take a matrix)."""
        if self.dense is not None and self.dense.dtype == dtype:
            return self.dense
        if not self.columns:
            return np.empty((self.n_rows, 0), dtype=dtype)
        return np.column_stack([np.asarray(v, dtype=dtype) for v in self.columns.values()])

    def frame(self, signature: Signature) -> pd.DataFrame:
        """A DataFrame with the dtypes the sample had (categories and integer types restored)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for spec in signature.inputs:
            data[spec.name] = _restore(self.columns[spec.name], spec)
        return pd.DataFrame(data)


@dataclass
class Checked:
    table: Table
    bad_rows: np.ndarray  # bool mask, True where a row has at least one error
    problems: list[Problem] = field(default_factory=list)
    n_errors: int = 0
    n_warnings: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad_rows.any() and not any(p.severity == "error" for p in self.problems)

    def raise_for_errors(self) -> None:
        if self.ok:
            return
        errors = [p for p in self.problems if p.severity == "error"]
        shown = "; ".join(str(p) for p in errors[:5])
        more = f" (and {self.n_errors - 5} more)" if self.n_errors > 5 else ""
        raise SchemaError(f"input does not match the model's signature: {shown}{more}", errors, self.n_errors)


class _Collector:
    def __init__(self, n_rows: int, limit: int) -> None:
        self.bad_rows = np.zeros(n_rows, dtype=bool)
        self.problems: list[Problem] = []
        self.limit = limit
        self.n_errors = 0
        self.n_warnings = 0

    def whole(self, column: str | None, rule: str, message: str, severity: Severity = "error") -> None:
        self._count(severity, 1)
        if len(self.problems) < self.limit:
            self.problems.append(Problem(None, column, rule, message, severity))
        if severity == "error":
            self.bad_rows[:] = True

    def rows(self, mask: np.ndarray, column: str, rule: str, message: str, raw: Any,
             severity: Severity = "error") -> None:
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        self._count(severity, len(idx))
        if severity == "error":
            self.bad_rows |= mask
        room = self.limit - len(self.problems)
        for i in idx[: max(room, 0)]:
            value = _show(raw[i])
            self.problems.append(Problem(int(i), column, rule, f"{message}, got {value}", severity))

    def _count(self, severity: Severity, n: int) -> None:
        if severity == "error":
            self.n_errors += n
        else:
            self.n_warnings += n


def check(data: Any, signature: Signature, policy: InputPolicy = DEFAULT_POLICY) -> Checked:
    """Coerce ``data`` to the signature and find everything wrong with it (see the module docstring)."""
    if isinstance(data, np.ndarray) and data.ndim == 2 and data.dtype == np.float64 and dense_signature(signature) \
            and data.shape[1] == len(signature.inputs):
        return _check_dense(data, signature, policy)
    raw, n_rows, extra = raw_columns(data, signature)
    out = _Collector(n_rows, policy.max_problems)
    for spec in signature.inputs:
        if spec.name not in raw:
            out.whole(spec.name, "missing_column", "column is missing")
    if policy.extra_columns != "ignore":
        sev: Severity = "error" if policy.extra_columns == "reject" else "warning"
        for name in extra:
            out.whole(name, "extra_column", "column is not an input of the model", sev)
    columns: dict[str, np.ndarray] = {}
    for spec in signature.inputs:  # the columns that are there are checked all the same: every problem at once
        present = spec.name in raw
        columns[spec.name] = _check_column(spec, raw[spec.name], out, policy) if present \
            else np.full(n_rows, np.nan)  # every row is bad already: never predicted
    return Checked(Table(columns, n_rows), out.bad_rows, out.problems, out.n_errors, out.n_warnings)


def dense_signature(signature: Signature) -> bool:
    """True when every input is an int or float column: such input can be checked as one float matrix."""
    return bool(signature.inputs) and all(c.dtype in ("int", "float") for c in signature.inputs)


def _check_dense(matrix: np.ndarray, signature: Signature, policy: InputPolicy) -> Checked:
    """:func:`check` for a float matrix and an all-int/float signature: whole-matrix operations, and Python work
    only for the columns that have a problem."""
    out = _Collector(matrix.shape[0], policy.max_problems)
    lows, highs, ints, unbounded = _dense_bounds(signature)
    with np.errstate(invalid="ignore"):
        suspect = np.asarray(~((matrix >= lows) & (matrix <= highs)).all(axis=0))  # nulls compare False too
        if len(unbounded):  # where a bound is infinite, so may a value be
            suspect[unbounded] |= ~np.isfinite(matrix[:, unbounded]).all(axis=0)
        if len(ints):
            part = matrix[:, ints]
            suspect[ints] |= (part != np.floor(part)).any(axis=0)
    specs = signature.inputs
    for j in np.flatnonzero(suspect):  # the rare columns with something to say: the per-column rules, in order
        _check_column(specs[j], matrix[:, j], out, policy)
    return Checked(Table.from_matrix(matrix, signature.names), out.bad_rows, out.problems, out.n_errors,
                   out.n_warnings)


_BOUNDS: dict[int, tuple[Signature, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}


def _dense_bounds(signature: Signature) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lows, highs, int columns, columns with an infinite bound) of an all-numeric signature, made once per
    signature object (a server checks every batch against the same one)."""
    cached = _BOUNDS.get(id(signature))
    if cached is not None and cached[0] is signature:
        return cached[1]
    specs = signature.inputs
    lows = np.array([float(c.min) if c.min is not None else -np.inf for c in specs])
    highs = np.array([float(c.max) if c.max is not None else np.inf for c in specs])
    ints = np.flatnonzero([c.dtype == "int" for c in specs])
    unbounded = np.flatnonzero(~(np.isfinite(lows) & np.isfinite(highs)))
    for j in ints:  # an integer the column's dtype cannot hold makes its column suspect too (see _not_int)
        low, high = _int_limits(specs[j])
        lows[j], highs[j] = max(lows[j], low), min(highs[j], np.nextafter(high, -np.inf))
    if len(_BOUNDS) >= 256:
        _BOUNDS.clear()
    _BOUNDS[id(signature)] = (signature, (lows, highs, ints, unbounded))  # keeps it alive: ids stay unique
    return lows, highs, ints, unbounded


# -- one column -----------------------------------------------------------------------------------------------

def _check_column(spec: ColumnSpec, raw: Any, out: _Collector, policy: InputPolicy) -> np.ndarray:
    values, null, bad = _coerce(spec, raw)
    raw_arr = raw.to_numpy() if is_series(raw) else raw
    out.rows(bad, spec.name, "type", f"expected {spec.dtype}", raw_arr)
    if not spec.nullable:
        out.rows(null, spec.name, "null", "null is not allowed (training had none)", raw_arr)
    usable = ~null & ~bad
    if spec.dtype in ("int", "float") and (spec.min is not None or spec.max is not None):
        with np.errstate(invalid="ignore"):
            outside = usable & ((values < float(spec.min)) | (values > float(spec.max)))  # type: ignore[arg-type]
        out.rows(outside, spec.name, "out_of_range", f"outside the training range [{spec.min}, {spec.max}]",
                 raw_arr, policy.severity(policy.out_of_range))
    elif spec.dtype == "datetime" and spec.min is not None and spec.max is not None:
        import pandas as pd

        stamps = values.astype("datetime64[ns]")
        lo, hi = np.datetime64(pd.Timestamp(spec.min).tz_localize(None)), np.datetime64(
            pd.Timestamp(spec.max).tz_localize(None))
        outside = usable & ((stamps < lo) | (stamps > hi))
        out.rows(outside, spec.name, "out_of_range", f"outside the training range [{spec.min}, {spec.max}]",
                 raw_arr, policy.severity(policy.out_of_range))
    elif spec.dtype == "string" and spec.categories is not None:
        import pandas as pd

        unseen = usable & ~pd.Series(values, dtype=object).isin(spec.categories).to_numpy()
        shown = ", ".join(spec.categories[:10]) + (", ..." if len(spec.categories) > 10 else "")
        out.rows(unseen, spec.name, "unseen_category", f"category not seen in training (seen: {shown})",
                 raw_arr, policy.severity(policy.unseen_category))
    return values


def _coerce(spec: ColumnSpec, raw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, null mask, wrong-type mask) for one column."""
    if spec.dtype in ("int", "float") and isinstance(raw, np.ndarray):
        numbers = _plain_numbers(raw)
        if numbers is not None:
            null = np.isnan(numbers)
            bad = np.zeros(len(numbers), dtype=bool)
            if spec.dtype == "int":
                bad |= ~null & _not_int(numbers, spec)
            return numbers, null, bad
    import pandas as pd

    s = raw if isinstance(raw, pd.Series) else pd.Series(raw, copy=False)
    dtype = s.dtype
    if spec.dtype in ("int", "float"):
        if dtype.kind in "iufb":
            values = s.to_numpy(dtype=np.float64)
            null = np.isnan(values)
            bad = np.zeros(len(values), dtype=bool)
        else:
            # Booleans and numbers are fine; strings only when they spell a number ("1.5", as in CSV).
            null = s.isna().to_numpy()
            try:
                values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            except OverflowError:  # an int too large for a float: a wrong type, like any other non-number
                values = pd.to_numeric(s.map(_float_or_marker), errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan)
            bad = np.isnan(values) & ~null
        if spec.dtype == "int":
            bad |= ~null & ~bad & _not_int(values, spec)
        return values, null, bad
    if spec.dtype == "bool":
        if dtype.kind == "b":
            values = s.to_numpy(dtype=bool)
            return values, np.zeros(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
        null = s.isna().to_numpy()
        truthy = s.isin([True, "true", "True", "TRUE"]).to_numpy()
        falsy = s.isin([False, "false", "False", "FALSE"]).to_numpy()
        bad = ~(truthy | falsy | null)
        return truthy, null, bad
    if spec.dtype == "string":
        null = s.isna().to_numpy()
        if isinstance(dtype, pd.CategoricalDtype):
            s = s.astype(object)
        elif pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
            bad = np.fromiter((not isinstance(v, str) for v in s), dtype=bool, count=len(s)) & ~null
            return s.to_numpy(dtype=object), null, bad
        return s.to_numpy(dtype=object), null, np.zeros(len(s), dtype=bool)
    null = s.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        values, far = _as_ns(s)
        return values, null, far
    values, bad = _parse_datetimes(s.to_numpy(dtype=object), null)
    return values, null, bad


#: The days a datetime64[ns] can hold (a few hours more at each end): a date outside them, such as 9999-12-31,
#: would wrap around in the cast to nanoseconds (9999 becomes 1816), so it is refused instead.
_NS_FIRST_DAY, _NS_LAST_DAY = np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-10", "D")


def _parse_datetimes(values: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] values, wrong-type mask) of an object column: a string is read as ISO 8601, a date or a
    datetime taken as it is (aware ones in UTC); anything else (a number, a bool, a list) is a wrong type. Each
    value is read on its own: what one row holds never changes how another is read (the rows of a batch come
    from many requests)."""
    import datetime

    import pandas as pd

    n = len(values)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "datetime", "date", "datetime64", "empty"):
        text = ~null if kind == "string" else np.zeros(n, dtype=bool)
        moments = ~null if kind not in ("string", "empty") else np.zeros(n, dtype=bool)
    else:
        text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=n)
        moments = np.fromiter((isinstance(v, datetime.date | np.datetime64) for v in values), dtype=bool,
                              count=n) & ~null
    bad = ~(text | moments | null)
    out = np.full(n, np.datetime64("NaT", "ns"))
    for mask, iso in ((text, True), (moments, False)):
        if not mask.any():
            continue
        given = values[mask]
        try:
            stamps = _to_utc(given, iso)
        except Exception:  # one odd value in the lot: read each on its own
            stamps = pd.Series([_one_datetime(v, iso) for v in given], dtype="datetime64[ns, UTC]")
        parsed, far = _as_ns(stamps)
        out[mask] = parsed
        bad[mask] |= far | np.isnat(parsed)
    return out, bad


def _to_utc(values: np.ndarray, iso: bool) -> pd.Series:
    import pandas as pd

    if iso:
        return pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", format="ISO8601", utc=True)
    return pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True)


def _one_datetime(value: Any, iso: bool) -> Any:
    import pandas as pd

    try:
        return _to_utc(np.array([value], dtype=object), iso).iloc[0]
    except Exception:
        return pd.NaT


def _as_ns(stamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(naive UTC datetime64[ns] values, mask of the dates a datetime64[ns] cannot hold, made NaT)."""
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    own = stamps.to_numpy()  # in the stamps' own unit (s, ms, us, ns): nothing has wrapped around yet
    far = (own < _NS_FIRST_DAY) | (own > _NS_LAST_DAY)  # NaT compares False
    if far.any():
        own = np.where(far, np.datetime64("NaT"), own)
    return own.astype("datetime64[ns]"), far


def _not_int(values: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    """Where a float is not an integer the column's own dtype can hold (a fraction, an infinity, 2**63 for an
    int64 column, 300 for an int8 one): cast to that dtype for the model, it would wrap around silently."""
    low, high = _int_limits(spec)
    with np.errstate(invalid="ignore"):
        wrong: np.ndarray = ~np.isfinite(values) | (values != np.floor(values)) | (values < low) | (values >= high)
    return wrong


def _int_limits(spec: ColumnSpec) -> tuple[float, float]:
    """[low, high) of the integers the column's dtype (int64 unless the sample's was another) holds, as floats
    (exactly: powers of two)."""
    try:
        dtype = np.dtype(spec.pandas_dtype.lower())  # "Int32" (pandas' nullable type) holds what int32 does
    except TypeError:
        dtype = np.dtype(np.int64)
    info = np.iinfo(dtype if dtype.kind in "iu" else np.dtype(np.int64))
    return float(info.min), float(info.max) + 1


def _plain_numbers(raw: np.ndarray) -> np.ndarray | None:
    """A numeric, boolean or object array of numbers and nulls (None) as floats, NaN for null; None when it
    holds anything else (strings, ints too large for a float), which the pandas path then sorts out."""
    if raw.dtype.kind in "iufb":
        return raw.astype(np.float64, copy=False)
    if raw.dtype != object:
        return None
    plain = numbers(raw.tolist(), raw.shape)
    if plain is not None:
        return plain
    try:  # nulls among the numbers (0.0 + v: numbers and bools only): JSON input of a nullable column
        return np.fromiter((math.nan if v is None else 0.0 + v for v in raw), dtype=np.float64, count=len(raw))
    except Exception:  # a string, a list, an object, an int too large for a float: the pandas path says which
        return None


def _float_or_marker(v: Any) -> Any:
    if isinstance(v, int):
        try:
            float(v)
        except OverflowError:
            return "too large"
    return v


def _restore(values: np.ndarray, spec: ColumnSpec) -> Any:
    import pandas as pd

    target = spec.pandas_dtype
    if spec.dtype == "string":
        if target == "category":
            return pd.Categorical(values, categories=spec.categories)
        return pd.Series(values, dtype=target).array if target != "object" else values
    if spec.dtype == "int" and np.isnan(values).any():
        return values  # a null in an int column: only reachable for rows already marked bad
    if spec.dtype == "datetime":
        return pd.to_datetime(values)
    try:
        return values.astype(target) if target in np.sctypeDict or target.startswith(("int", "float", "uint")) \
            else pd.array(values).astype(target)
    except (TypeError, ValueError):
        return values


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 3, 40, 40


def _show(value: Any) -> str:
    """A short text of a value for a problem's message, whatever the value (nested, huge, ...)."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        text = repr(value) if isinstance(value, str | float | bool) or value is None else _SHORT.repr(value)
    except Exception:  # an int past Python's digit limit for str(), or a value whose repr fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
