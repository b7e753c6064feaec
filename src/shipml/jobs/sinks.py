"""Writing batch-job results: the final output and rejects files (Parquet, CSV or JSON lines), assembled from
the finished parts in part order, streaming, under a temporary name renamed into place at the end.

Parts may disagree on a column's type (a CSV part whose pass-through column is all empty, a JSON field that is a
number in one file and a string in another): :func:`unify_schemas` picks one type per column (widening integers to
floats and timestamps to the finer unit, falling back to text) and :func:`conform` brings every batch to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shipml.errors import SchemaError
from shipml.jobs import workdir
from shipml.jobs.spec import OutputFormat

SUFFIXES: dict[str, OutputFormat] = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "jsonl",
}


def output_format_of(path: Path, given: str | None = None) -> OutputFormat:
    """The format asked for, else the one the extension names, else Parquet."""
    if given is not None:
        if given not in ("parquet", "csv", "jsonl"):
            raise SchemaError(f"unknown output format {given!r}: use parquet, csv or jsonl")
        return given  # type: ignore[return-value]
    return SUFFIXES.get(path.suffix.lower(), "parquet")


def default_rejects_path(output: Path, fmt: OutputFormat) -> Path:
    suffix = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return output.with_name(f"{stem}.rejects{suffix}")


# -- one schema for all parts -------------------------------------------------------------------------------

_UNITS = ("s", "ms", "us", "ns")


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a.equals(b) or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(t(a) for t in numeric) and any(t(b) for t in numeric):
        both_int = pa.types.is_integer(a) and pa.types.is_integer(b)
        return pa.int64() if both_int else pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        return pa.timestamp(max(a.unit, b.unit, key=_UNITS.index), a.tz)
    return pa.string()


def unify_schemas(schemas: Sequence[pa.Schema], *, final: bool = True) -> pa.Schema:
    """Columns in order of first appearance, each with one type that every part converts to. In the ``final``
    schema a column that is null in every part (a CSV column of empty cells) is float64, as pandas reads such a
    column; otherwise (one part's own file) it stays null, so that the other parts decide its type."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            types[f.name] = _merge(types[f.name], f.type) if f.name in types else f.type
    if not final:
        return pa.schema(list(types.items()))
    return pa.schema([(name, pa.float64() if pa.types.is_null(t) else t) for name, t in types.items()])


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, in its order and types (a column it lacks is all null)."""
    arrays = []
    for f in schema:
        if f.name in batch.schema.names:
            column = batch.column(f.name)
            arrays.append(column if column.type.equals(f.type) else column.cast(f.type, safe=False))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- writers ------------------------------------------------------------------------------------------------

class Writer:
    """Streams record batches of one schema into a file of one format."""

    def __init__(self, path: Path, fmt: OutputFormat, schema: pa.Schema) -> None:
        self.path = path
        self.format = fmt
        self.schema = schema
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pa_csv.CSVWriter | None = None
        self._file: IO[bytes] | None = None
        if fmt == "parquet":
            self._parquet = pq.ParquetWriter(str(path), schema)
        else:
            self._file = path.open("wb")
            if fmt == "csv":
                self._csv = pa_csv.CSVWriter(self._file, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        elif self._csv is not None:
            self._csv.write_batch(batch)
        elif self._file is not None and batch.num_rows:
            self._file.write(_jsonl(batch))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        if self._file is not None:
            self._file.close()


def _jsonl(batch: pa.RecordBatch) -> bytes:
    """One JSON object per row: numbers exactly as stored, NaN and nulls as null, timestamps in ISO 8601."""
    return b"".join(orjson.dumps(row, default=str) + b"\n" for row in batch.to_pylist())


# -- assembling the parts -----------------------------------------------------------------------------------

Kind = Literal["output", "rejects"]


def _part_files(work: Path, indexes: Sequence[int], kind: Kind) -> list[tuple[int, Path]]:
    name = workdir.output_file if kind == "output" else workdir.rejects_file
    return [(i, name(work, i)) for i in indexes if name(work, i).is_file()]


def _read_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def assemble(work: Path, indexes: Sequence[int], kind: Kind, final: Path, fmt: OutputFormat,
             empty_schema: pa.Schema, row_offsets: dict[int, int] | None = None) -> int:
    """Concatenate the parts' files (in ``indexes`` order) into ``final``, atomically; returns the rows written.

    ``row_offsets`` (rejects only): what to add to each part's ``_row`` to number rows within their file."""
    files = _part_files(work, indexes, kind)
    schema = unify_schemas([_read_schema(p) for _, p in files]) if files else empty_schema
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{work.name[-16:]}{workdir.TMP_SUFFIX}")
    rows = 0
    writer = Writer(tmp, fmt, schema)
    try:
        for index, path in files:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = conform(reader.get_batch(i), schema)
                    if row_offsets is not None and row_offsets.get(index):
                        batch = _shift_rows(batch, row_offsets[index])
                    writer.write(batch)
                    rows += batch.num_rows
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    workdir.publish(tmp, final)
    return rows


def _shift_rows(batch: pa.RecordBatch, offset: int) -> pa.RecordBatch:
    i = batch.schema.get_field_index("_row")
    shifted = pa.array(batch.column(i).to_numpy(zero_copy_only=False).astype(np.int64) + offset)
    return batch.set_column(i, "_row", shifted)


def remove_stale(final: Path) -> None:
    """Temporary files a killed assembly left next to ``final``."""
    for path in final.parent.glob(f".{final.name}.*{workdir.TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            path.unlink()
