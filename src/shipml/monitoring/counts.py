"""Streaming counts of live data on a :class:`~shipml.monitoring.reference.Reference`'s slots, and a sliding time
window of them. Bounded memory: one int64 per slot (a few dozen per feature), whatever the traffic.

- :class:`Counts` is additive: counting A then B gives the same as counting A + B, and two counts merge by adding
  their arrays. ``to_bytes`` / ``Counts.from_bytes`` carry them between worker processes (strict: a blob made
  for another reference, truncated or altered is refused with ``ValueError``).
- :class:`Window` keeps ``slices`` counts, each covering ``window_s / slices`` seconds of ``now``; ``counts(now)``
  adds the slices that overlap the last ``window_s`` seconds (so the window is ``window_s`` long, plus at most
  the unfinished part of its oldest slice).
- :func:`columns_from_arrow` turns Arrow columns (a file, the prediction log) into the arrays the signature check
  makes, so they are counted like served rows.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shipml.errors import SchemaError
from shipml.monitoring.reference import FeatureReference, Reference, as_float

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Counts", "Window", "columns_from_arrow"]

_MAGIC = b"SHIPMLDC"
_FORMAT_VERSION = 1
# magic, format version, reference fingerprint, slots, rows, prediction rows, finite predictions, their sum
_HEADER = struct.Struct("<8sI32sQQQQd")
_CRC = struct.Struct("<I")


class Counts:
    """How many rows fell in each slot of each feature (and of the prediction) of ``reference``."""

    __slots__ = ("prediction_finite", "prediction_rows", "prediction_sum", "reference", "rows", "values")

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.values = np.zeros(reference.slots, dtype=np.int64)
        self.rows = 0
        self.prediction_rows = 0
        self.prediction_finite = 0  # numeric predictions: how many were finite, and their sum (for the mean)
        self.prediction_sum = 0.0

    # -- counting -------------------------------------------------------------------------------------------
    def add(self, columns: Mapping[str, np.ndarray], predictions: np.ndarray | None = None, *,
            matrix: np.ndarray | None = None, names: Sequence[str] = ()) -> None:
        """Count a batch: ``columns`` as ``check(...).table.columns`` holds them (one 1-D array per input, all of
        one length), ``predictions`` the model's predictions on those rows (or None); ``matrix``, when the
        columns are all numbers: the same values as one float64 matrix, a row per row and a column per name of
        ``names`` (counted as it is: no copy per column). Never raises on what the columns hold; a missing
        column or columns of different lengths are the caller's mistake (ValueError)."""
        ref = self.reference
        n = _rows(columns, ref)
        if predictions is not None and len(predictions) != n:
            raise ValueError(f"{len(predictions)} predictions for {n} rows")
        self._add_numeric(columns, n, matrix, names)
        for i, (feature, offset) in enumerate(zip(ref.features, ref.offsets, strict=False)):
            if feature.kind == "categorical":
                self.values[offset:ref.offsets[i + 1]] += feature.count(columns[feature.name])
        self.rows += n
        if predictions is not None:
            self.add_predictions(predictions)

    def _add_numeric(self, columns: Mapping[str, np.ndarray], n: int, matrix: np.ndarray | None,
                     names: Sequence[str]) -> None:
        """Every numeric feature at once: a (rows x features) matrix compared with each row of bounds."""
        block = self.reference.block
        if not block.features or not n:
            return
        features = self.reference.features
        wanted = [features[i].name for i in block.features]
        x: np.ndarray
        if matrix is not None and matrix.dtype == np.float64 and matrix.shape == (n, len(names)) \
                and set(wanted) <= set(names):
            x = matrix if list(names) == wanted else matrix[:, [list(names).index(name) for name in wanted]]
        else:
            x = np.empty((n, len(block.features)))
            for col, i in enumerate(block.features):
                x[:, col] = as_float(_flat(columns[features[i].name]), features[i].dtype == "datetime")
        reached = np.zeros(x.shape, dtype=np.uint8)
        above = np.empty(x.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            for bound in block.bounds:
                np.greater_equal(x, bound, out=above)
                reached += above.view(np.uint8)
        slots = reached.astype(np.int64)
        slots += block.offsets
        null = np.isnan(x)
        if null.any():
            slots = np.where(null, block.nulls, slots)
        self.values += np.bincount(slots.ravel(), minlength=len(self.values))

    def add_predictions(self, predictions: np.ndarray) -> None:
        """Count predictions alone (rows whose inputs were counted already, or are not to be)."""
        feature = self.reference.prediction
        if feature is None:
            return
        predictions = np.asarray(predictions)
        self.values[self.reference.offsets[-2]:] += feature.count(predictions)
        self.prediction_rows += len(predictions)
        if feature.kind == "numeric":
            values = predictions.reshape(len(predictions), -1)[:, 0] if predictions.ndim > 1 else predictions
            if values.dtype.kind in "iufb":
                values = values.astype(np.float64, copy=False)
                finite = values[np.isfinite(values)]
                self.prediction_finite += len(finite)
                with np.errstate(over="ignore", invalid="ignore"):  # huge values: an infinite or NaN sum
                    self.prediction_sum += float(finite.sum())

    def merge(self, other: Counts) -> None:
        """Add ``other``'s counts to these (in place)."""
        if other.reference.fingerprint != self.reference.fingerprint:
            raise ValueError(f"cannot merge counts of {other.reference.model}:{other.reference.version} into"
                             f" counts of {self.reference.model}:{self.reference.version}: another reference")
        self.values += other.values
        self.rows += other.rows
        self.prediction_rows += other.prediction_rows
        self.prediction_finite += other.prediction_finite
        self.prediction_sum += other.prediction_sum

    def copy(self) -> Counts:
        out = Counts(self.reference)
        out.merge(self)
        return out

    # -- reading --------------------------------------------------------------------------------------------
    def feature_counts(self, index: int) -> np.ndarray:
        """The counts of the ``index``-th feature's slots (a view)."""
        offsets = self.reference.offsets
        return self.values[offsets[index]:offsets[index + 1]]

    def prediction_counts(self) -> np.ndarray | None:
        if self.reference.prediction is None:
            return None
        return self.values[self.reference.offsets[-2]:]

    @property
    def prediction_mean(self) -> float:
        return self.prediction_sum / self.prediction_finite if self.prediction_finite else math.nan

    # -- exchange -------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, self.reference.fingerprint, len(self.values), self.rows,
                              self.prediction_rows, self.prediction_finite, self.prediction_sum)
        body = header + self.values.astype("<i8", copy=False).tobytes()
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, reference: Reference, data: bytes) -> Counts:
        """Counts written by :meth:`to_bytes` for this same reference; anything else raises ValueError."""
        data = bytes(data)
        if len(data) < _HEADER.size + _CRC.size or not data.startswith(_MAGIC):
            raise ValueError("not drift counts (no shipml counts header)")
        _magic, version, fingerprint, slots, rows, prediction_rows, finite, total = _HEADER.unpack_from(data)
        if version != _FORMAT_VERSION:
            raise ValueError(f"drift counts of format {version}, this shipml reads format {_FORMAT_VERSION}")
        if fingerprint != reference.fingerprint:
            raise ValueError(f"drift counts made for another reference than {reference.model}:"
                             f"{reference.version} (another model version, or another bin layout)")
        expected = _HEADER.size + 8 * reference.slots + _CRC.size
        if slots != reference.slots or len(data) != expected:
            raise ValueError(f"drift counts of {len(data)} bytes for {slots} slots; expected {expected} bytes"
                             f" for {reference.slots}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[:-_CRC.size]) != crc:
            raise ValueError("drift counts are corrupted (checksum mismatch)")
        values = np.frombuffer(data, dtype="<i8", count=reference.slots, offset=_HEADER.size).astype(np.int64)
        out = cls(reference)
        out.values, out.rows, out.prediction_rows = values, int(rows), int(prediction_rows)
        out.prediction_finite, out.prediction_sum = int(finite), float(total)
        out._check()
        return out

    def _check(self) -> None:
        """Every row lands in exactly one slot per feature: counts that break that are not counts."""
        if (self.values < 0).any() or self.rows > 2**62 or self.prediction_finite > self.prediction_rows:
            raise ValueError("drift counts hold impossible values")
        for i in range(len(self.reference.features)):
            if int(self.feature_counts(i).sum()) != self.rows:
                raise ValueError(f"drift counts of feature {self.reference.features[i].name!r} do not add up to"
                                 f" the {self.rows} rows counted")
        predicted = self.prediction_counts()
        if predicted is not None and int(predicted.sum()) != self.prediction_rows:
            raise ValueError("drift counts of the prediction do not add up to the predictions counted")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counts) and other.reference.fingerprint == self.reference.fingerprint \
            and other.rows == self.rows and other.prediction_rows == self.prediction_rows \
            and other.prediction_finite == self.prediction_finite and np.array_equal(other.values, self.values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Counts {self.reference.model}:{self.reference.version} rows={self.rows}>"


def _flat(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 1:
        return values
    return values.reshape(len(values), -1)[:, 0] if values.ndim > 1 and values.size else values.ravel()


def _rows(columns: Mapping[str, np.ndarray], reference: Reference) -> int:
    missing = [f.name for f in reference.features if f.name not in columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing))} to count (the model takes "
                         f"{[f.name for f in reference.features]})")
    lengths = {len(columns[f.name]) for f in reference.features}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


class Window:
    """Counts over the last ``window_s`` seconds, kept as ``slices`` slices of ``window_s / slices`` seconds.

    Thread-safe: one thread adds batches while another asks for the counts. Memory: at most ``slices + 1``
    :class:`Counts`, however many rows arrive. Times are seconds (``time.time()``); a batch older than the
    window when it arrives is not counted."""

    def __init__(self, reference: Reference, window_s: float, slices: int = 20) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        if not 1 <= slices <= 10_000:
            raise ValueError(f"slices must be between 1 and 10000, got {slices!r}")
        self.reference = reference
        self.window_s = float(window_s)
        self.slices = slices
        self._width = self.window_s / slices
        self._counts: dict[int, Counts] = {}  # slice number (now // width) -> its counts
        self._newest = -math.inf
        self._lock = threading.Lock()

    def add(self, columns: Mapping[str, np.ndarray], predictions: np.ndarray | None, now: float, *,
            matrix: np.ndarray | None = None, names: Sequence[str] = ()) -> None:
        """Count a batch at time ``now`` (see :meth:`Counts.add`)."""
        batch = Counts(self.reference)
        batch.add(columns, predictions, matrix=matrix, names=names)  # outside the lock: counting is the costly part
        self.add_counts(batch, now)

    def add_counts(self, counts: Counts, now: float) -> None:
        """Add counts made elsewhere (another worker's, say) to the slice of ``now``."""
        key = self._slice(now)
        with self._lock:
            self._newest = max(self._newest, key)
            if key < self._newest - self.slices:
                return  # older than the window already
            got = self._counts.get(key)
            if got is None:
                self._counts[key] = got = Counts(self.reference)
            got.merge(counts)
            self._prune(self._newest)

    def counts(self, now: float) -> Counts:
        """The counts of the slices that overlap ``[now - window_s, now]``."""
        key = self._slice(now)
        out = Counts(self.reference)
        with self._lock:
            self._prune(max(self._newest, key))
            for k, part in self._counts.items():
                if key - self.slices <= k <= key:
                    out.merge(part)
        return out

    def __len__(self) -> int:
        """How many slices are held (at most ``slices + 1``)."""
        return len(self._counts)

    def _slice(self, now: float) -> int:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        return math.floor(now / self._width)

    def _prune(self, newest: float) -> None:
        for k in [k for k in self._counts if k < newest - self.slices]:
            del self._counts[k]


# -- Arrow columns -> the arrays the signature check makes ----------------------------------------------------

_NS_FIRST, _NS_LAST = np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-10", "D")


def columns_from_arrow(reference: Reference, table: pa.Table | pa.RecordBatch, prefix: str = ""
                       ) -> dict[str, np.ndarray]:
    """The input columns of ``table`` (named ``prefix + name``; the prediction log's are ``input.<name>``) as
    ``check`` makes them: float64 with NaN for int/float, object with None for strings, datetime64[ns] (naive,
    UTC) with NaT for datetimes, object True/False/None for bools. A value of the wrong type is a null."""
    names = set(table.schema.names)
    missing = [f"{prefix}{f.name}" for f in reference.features if f"{prefix}{f.name}" not in names]
    if missing:
        raise SchemaError(f"no column {', '.join(map(repr, missing))} in the data (the model takes "
                          f"{reference.signature.names})")
    return {f.name: _column(f, table.column(f"{prefix}{f.name}")) for f in reference.features}


def _column(feature: FeatureReference, column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if feature.dtype in ("int", "float"):
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
                or pa.types.is_decimal(kind):
            filled = pc.fill_null(pc.cast(column, pa.float64(), safe=False), math.nan)
            return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)
        return _loose(column, float_values=True)
    if feature.dtype == "datetime":
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            if pa.types.is_timestamp(kind) and kind.tz is not None:  # stored as UTC already
                column = column.cast(pa.timestamp(kind.unit), safe=False)
            own = np.asarray(column.to_numpy(zero_copy_only=False))
            if own.dtype.kind != "M":
                own = own.astype("datetime64[ms]")
            far = (own < _NS_FIRST) | (own > _NS_LAST)
            return np.where(far, np.datetime64("NaT"), own).astype("datetime64[ns]")
        return _loose(column, float_values=False, datetime=True)
    if feature.dtype == "bool":
        if pa.types.is_boolean(kind):
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        return _loose_bools(column)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
    try:
        return np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.asarray(column.to_pylist(), dtype=object)


def _loose_bools(column: Any) -> np.ndarray:
    """A bool column of another type (text in a CSV): true/false spelled as the check accepts them, None for a
    null, and a value that is neither kept as it is (counted as unseen)."""
    import pandas as pd

    from shipml.package.signature import ColumnSpec
    from shipml.package.validation import _coerce

    values = pd.Series(column.to_pylist(), dtype=object)
    truth, null, bad = _coerce(ColumnSpec(name="value", dtype="bool", pandas_dtype="bool", nullable=True), values)
    out = truth.astype(object)
    out[null] = None
    out[bad] = values.to_numpy(dtype=object)[bad]
    return out


def _loose(column: Any, float_values: bool, datetime: bool = False) -> np.ndarray:
    """A column of another type than the feature's (text in a CSV, say), read the way the check reads it."""
    import pandas as pd

    values = pd.Series(column.to_pylist(), dtype=object)
    if float_values:
        return np.asarray(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan),
                          dtype=np.float64)
    from shipml.package.signature import ColumnSpec
    from shipml.package.validation import _coerce

    spec = ColumnSpec(name="value", dtype="datetime" if datetime else "string", pandas_dtype="object",
                      nullable=True)
    coerced, _null, bad = _coerce(spec, values)
    if datetime:
        coerced = np.where(bad, np.datetime64("NaT"), coerced).astype("datetime64[ns]")
    return coerced
