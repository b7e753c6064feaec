"""Turning what the user gave (a frame, records, columns, rows, a matrix) into named raw columns, and reading
plainly numeric input as a float matrix. No checks of the values here: validation.py does those.

Every column built from the user's values is a 1-D array with one cell per row, by construction: a list or an
object in a cell stays one cell (numpy, given nested lists of one length, would otherwise make an extra
dimension of them, and one such request would break the merge of a whole batch). Such a cell is then that row's
"type" problem, found by the checks like any other value of the wrong kind.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from shipml._lazy import is_frame, is_series
from shipml.errors import SchemaError
from shipml.package.signature import Signature

#: What a row of the rows form (a list of value lists) may be.
_ROW_TYPES = (list, tuple, np.ndarray)


def cells(values: Sequence[Any]) -> np.ndarray:
    """The values as a 1-D object array, one cell each, whatever they are (lists and objects included)."""
    try:  # numpy's own reading is the fastest; it keeps each value as one cell unless they nest evenly
        array = np.array(values, dtype=object)
        if array.shape == (len(values),):
            return array
    except ValueError:  # ragged nesting
        pass
    return np.fromiter(values, dtype=object, count=len(values))


def raw_columns(data: Any, signature: Signature) -> tuple[dict[str, Any], int, list[str]]:
    """(column name -> raw values, row count, unknown column names) of any accepted input form."""
    names = signature.names
    if is_frame(data):
        cols: dict[str, Any] = {str(c): data[c] for c in data.columns}
        return cols, len(data), [c for c in cols if c not in set(names)]
    if is_series(data):
        return raw_columns(data.to_frame().T, signature)
    if isinstance(data, Mapping):
        cols = {str(k): _column(str(k), v) for k, v in data.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise SchemaError(f"columns have different lengths: {_lengths(lengths)}")
        n = next(iter(lengths.values()), 0)
        return cols, n, [c for c in cols if c not in set(names)]
    if isinstance(data, np.ndarray):
        return _from_matrix(data, names)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if len(data) == 0:
            return {name: np.empty(0, dtype=object) for name in names}, 0, []
        if isinstance(data[0], Mapping):
            return _from_records(data, names)
        if isinstance(data[0], _ROW_TYPES):
            return _from_rows(data, names)
        # a flat list of values: one row, or one column for a model with a single input
        flat = cells(data)
        return _from_matrix(flat.reshape(1, -1) if len(names) > 1 else flat.reshape(-1, 1), names)
    if isinstance(data, str | bytes) or not hasattr(data, "__array__"):
        raise SchemaError(f"input must be a table (records, columns or rows), got {type(data).__name__}")
    return _from_matrix(np.asarray(data, dtype=object), names)  # another library's table or array


def _column(name: str, values: Any) -> Any:
    """One column of the columnar form as a 1-D array (or the user's own pandas Series)."""
    if is_series(values):
        return values
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise SchemaError(f"column {name!r} must be a 1-D list of values, got an array of shape {values.shape}")
        return values
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return cells(values)
    raise SchemaError(f"columnar input must map each column name to a list of values; column {name!r} holds "
                      f"{type(values).__name__}")


def _lengths(lengths: dict[str, int], limit: int = 10) -> str:
    shown = dict(list(lengths.items())[:limit])
    return str(shown) + (f" (and {len(lengths) - limit} more columns)" if len(lengths) > limit else "")


def _from_records(records: Sequence[Any], names: list[str]) -> tuple[dict[str, Any], int, list[str]]:
    seen: set[str] = set()
    for r in records:
        if not isinstance(r, Mapping):
            raise SchemaError("records must all be objects mapping column name to value")
        seen.update(r.keys())
    n = len(records)
    cols = {name: cells([r.get(name) for r in records]) for name in names if name in seen}
    return cols, n, sorted(str(k) for k in seen - set(names))


def _from_rows(rows: Sequence[Any], names: list[str]) -> tuple[dict[str, Any], int, list[str]]:
    """The rows form: each row a list of values in signature order."""
    n, k = len(rows), len(names)
    try:  # as one 2-D array when numpy reads it as n rows of k cells (then each value is one cell)
        table = np.array(rows, dtype=object)
        if table.shape == (n, k):
            return {name: table[:, j] for j, name in enumerate(names)}, n, []
    except ValueError:  # ragged: a row of another length, or a cell holding a list
        pass
    for i, row in enumerate(rows):
        if not isinstance(row, _ROW_TYPES) or (isinstance(row, np.ndarray) and row.ndim != 1):
            raise SchemaError(f"row {i} must be a list of {k} values (rows form), got {type(row).__name__}")
        if len(row) != k:
            raise SchemaError(f"row {i} has {len(row)} values; the model takes {k}: {_names(names)}")
    columns = zip(*rows, strict=True)  # the rows transposed: one tuple of values per column
    return {name: cells(values) for name, values in zip(names, columns, strict=True)}, n, []


def _from_matrix(array: np.ndarray, names: list[str]) -> tuple[dict[str, Any], int, list[str]]:
    if array.ndim == 1:
        array = array.reshape(1, -1) if len(names) > 1 or len(array) == 0 else array.reshape(-1, 1)
    if array.ndim != 2:
        raise SchemaError(f"input must be a table (2-D), got shape {array.shape}")
    if array.shape[1] != len(names):
        raise SchemaError(f"input has {array.shape[1]} columns, the model takes {len(names)}: {_names(names)}")
    return {name: array[:, i] for i, name in enumerate(names)}, array.shape[0], []


def _names(names: list[str], limit: int = 20) -> str:
    return str(names) if len(names) <= limit else f"{str(names[:limit])[:-1]}, ... ({len(names)} in all)]"


# -- plainly numeric input as a float matrix (the dense fast path) ----------------------------------------------

def record_getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function giving a record's values in ``names`` order, as a tuple."""
    if len(names) == 1:
        only = names[0]
        return lambda r: (r[only],)
    getter: Callable[[Any], tuple[Any, ...]] = operator.itemgetter(*names)
    return getter


def record_rows(records: Sequence[Any], names: Sequence[str],
                getter: Callable[[Any], tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]] | None:
    """Records (one mapping per row) as one tuple of values per row in ``names`` order, or None when a record
    misses a name or has one more (the general path then says what is wrong). Read in C (itemgetter): no Python
    loop per row. ``getter``: a :func:`record_getter` for ``names``, made once by callers that read many."""
    n, k = len(records), len(names)
    getter = getter or record_getter(names)
    try:
        # every record holds every name (else KeyError) and n*k keys in all: so none has an extra key
        if sum(map(len, records)) != n * k:
            return None
        return list(map(getter, records))
    except (KeyError, TypeError):
        return None


def rows_matrix(rows: Sequence[tuple[Any, ...]], k: int) -> np.ndarray | None:
    """Rows of ``k`` values as a float matrix, or None when a value is not plainly a number (see numbers)."""
    return numbers(rows, (len(rows), k))


def records_matrix(records: Sequence[Any], names: Sequence[str],
                   getter: Callable[[Any], tuple[Any, ...]] | None = None) -> np.ndarray | None:
    """Records as a float matrix in ``names`` order, or None when they are not plainly that (a missing or extra
    key, a null, a value that is not a number): the general path then says what is wrong."""
    rows = record_rows(records, names, getter)
    return None if rows is None else rows_matrix(rows, len(names))


def numbers(values: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``values`` as a float array of ``shape`` when every one is a number or a bool, else None. numpy picks the
    type from the values: a string makes a string array; a null, a nested object or a huge int an object array;
    nested lists of one length an extra dimension, hence the shape check (float() would also read strings such
    as '1_000' or 'nan'). Anything numpy cannot make an array of is not plainly numbers either."""
    try:
        array = np.array(values)
    except Exception:  # ragged lists, ints beyond any dtype, nesting deeper than numpy's dimensions, ...
        return None
    if array.dtype.kind not in "fiub" or array.shape != shape:
        return None
    return array.astype(np.float64, copy=False)
