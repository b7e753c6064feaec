"""Reading batch-job inputs as Arrow record batches: which files an INPUT names, how each is cut into
deterministic parts, and how one part is read back (by any process, from the file itself).

- Parquet: a part is a row range inside one row group, read with a streaming (unbuffered) reader, so memory
  stays at about one batch per worker whatever the file size.
- CSV and JSON lines: a part is a byte range cut at line ends; CSV parts re-use the file's header line. CSV is
  read with the signature's types (string columns as strings, numbers as float64); other columns (those passed
  through) are read as text and take the type all their values spell (:func:`typed_text`: an integer id stays an
  integer), or stay text exactly as written. A value of the wrong type falls back to reading the model's columns
  as text, so that the signature check can name the row and the rule; a row that cannot be parsed at all (wrong
  number of fields, invalid JSON) is rejected with rule ``parse``.

Row numbers (``_row`` in the rejects) count a file's data rows from 0: Parquet rows; non-empty lines after
the header for CSV; non-empty lines for JSON lines.
"""

from __future__ import annotations

import glob
import io
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from shipml.errors import NotFoundError, SchemaError
from shipml.jobs.spec import REJECT_COLUMNS, InputFormat, PartSpec
from shipml.package.signature import ColumnSpec, Signature
from shipml.protocol import json_body

SUFFIXES: dict[str, InputFormat] = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: A CSV / JSON-lines part never holds more than this many bytes of text (it is parsed in memory).
MAX_TEXT_PART_BYTES = 32 << 20
_SAMPLE_BYTES = 1 << 20
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: InputFormat
    size: int
    mtime_ns: int


@dataclass
class PartData:
    """One part, read: its batches (each with the part-row number of every row), and the rows that could not be
    parsed at all (part-row number, text, why). ``rows`` counts both."""

    batches: Iterable[tuple[pa.RecordBatch, np.ndarray]]
    unparsed: list[tuple[int, str, str]] = field(default_factory=list)
    rows: int = 0


def format_of(path: Path, given: str | None = None) -> InputFormat:
    if given is not None:
        if given not in ("parquet", "csv", "jsonl"):
            raise SchemaError(f"unknown input format {given!r}: use parquet, csv or jsonl")
        return given  # type: ignore[return-value]
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SchemaError(f"cannot tell the format of {path.name} from its extension: name it .parquet, .csv or"
                          " .jsonl, or give the input format")
    return fmt


def list_inputs(input: str | Path | Sequence[str | Path], fmt: str | None = None) -> list[InputFile]:
    """The files INPUT names: a file, a directory (its visible files with a known extension, sorted), a glob
    pattern, or a list of those. Sorted and de-duplicated, so the same INPUT always gives the same parts."""
    items = [input] if isinstance(input, str | Path) else list(input)
    paths: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))
                            and (fmt is not None or p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(text):
            paths += sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            raise NotFoundError(f"no such input file or directory: {text}")
    unique = sorted({p.resolve() for p in paths})
    if not unique:
        raise NotFoundError(f"input {input!s} names no file")
    files = []
    for p in unique:
        stat = p.stat()
        files.append(InputFile(p, format_of(p, fmt), stat.st_size, stat.st_mtime_ns))
    return files


# -- columns: what each file has, and the types they are read with -------------------------------------------

def file_columns(file: InputFile) -> list[str] | None:
    """The column names of a Parquet or CSV file (None for JSON lines: each line may name its own)."""
    if file.format == "parquet":
        return list(pq.ParquetFile(file.path).schema_arrow.names)
    if file.format == "csv":
        header = _csv_header(file.path)
        return [] if not header else pa_csv.read_csv(io.BytesIO(header)).column_names
    return None


def check_columns(files: Sequence[InputFile], signature: Signature, keep: Sequence[str]) -> None:
    """Refuse, before any scoring, a file that lacks a model input or a column to keep."""
    for file in files:
        names = file_columns(file)
        if names is None:
            continue
        missing = [c for c in [*signature.names, *keep] if c not in names]
        if missing:
            raise SchemaError(f"{file.path.name} has no column {', '.join(map(repr, missing))}"
                              f" (the model takes {signature.names}; keep: {list(keep)})")
        clash = [c for c in REJECT_COLUMNS if c in names]
        if clash:
            raise SchemaError(f"{file.path.name} has columns named {clash}, which the rejects file adds")


def _arrow_type(spec: ColumnSpec) -> pa.DataType:
    if spec.dtype in ("int", "float"):
        return pa.float64()
    if spec.dtype == "bool":
        return pa.bool_()
    return pa.string()  # strings, and datetimes parsed by the signature check


# -- planning parts -----------------------------------------------------------------------------------------

def plan_parts(files: Sequence[InputFile], part_rows: int) -> list[PartSpec]:
    parts: list[PartSpec] = []
    for file_index, file in enumerate(files):
        cuts = _parquet_cuts(file.path, part_rows) if file.format == "parquet" else _text_cuts(file, part_rows)
        for start, stop, rows, group, header in cuts:
            parts.append(PartSpec(len(parts), str(file.path), file.format, file_index, start, stop, rows, group,
                                  header))
    return parts


def with_first_rows(files: Sequence[InputFile], parts: Sequence[PartSpec]) -> list[PartSpec]:
    """``parts`` with ``first_row`` set: each part's first row's position in the whole input (the files in order,
    rows counted as the rejects' ``_row`` counts them). Parquet parts know theirs from the metadata; a CSV or
    JSON-lines part's is found by counting the non-empty lines before it (one pass over the text files)."""
    out: list[PartSpec] = []
    file_first = 0
    for file_index, file in enumerate(files):
        mine = [p for p in parts if p.file_index == file_index]
        if file.format == "parquet":
            out += [replace(p, first_row=file_first + p.start) for p in mine]
            file_first += pq.ParquetFile(file.path).metadata.num_rows
            continue
        blank = b"\r" if file.format == "csv" else b"\r \t"
        at = file_first
        with file.path.open("rb") as f:
            for p in sorted(mine, key=lambda q: q.start):
                out.append(replace(p, first_row=at))
                f.seek(p.start)
                at += count_lines(f, p.stop - p.start, blank)
        file_first = at
    return sorted(out, key=lambda p: p.index)


def count_lines(f: io.BufferedReader, size: int, blank: bytes, chunk: int = 4 << 20) -> int:
    """Lines in the next ``size`` bytes of ``f`` that hold a byte other than ``blank`` ones (vectorised, in
    chunks: memory stays at a few times ``chunk``). A last line without a newline counts too."""
    skip = np.zeros(256, dtype=bool)
    skip[[*blank, 10]] = True
    count = 0
    open_line = False  # the line running into this chunk already has content
    left = size
    while left > 0:
        data = f.read(min(chunk, left))
        if not data:
            break
        left -= len(data)
        arr = np.frombuffer(data, dtype=np.uint8)
        content = np.cumsum(~skip[arr], dtype=np.int64)
        ends = np.flatnonzero(arr == 10)
        if len(ends):
            before = np.concatenate(([0], content[ends[:-1]]))
            filled = content[ends] - before > 0
            filled[0] |= open_line
            count += int(filled.sum())
            open_line = bool(content[-1] - content[ends[-1]] > 0)
        else:
            open_line = open_line or bool(content[-1] > 0)
    return count + int(open_line)


def _parquet_cuts(path: Path, part_rows: int) -> list[tuple[int, int, int, int, bytes]]:
    """Row ranges inside row groups: a group of R rows becomes ceil(R / part_rows) equal slices."""
    meta = pq.ParquetFile(path).metadata
    cuts = []
    first = 0
    for g in range(meta.num_row_groups):
        rows = meta.row_group(g).num_rows
        pieces = max(1, math.ceil(rows / part_rows))
        bounds = [first + (rows * k) // pieces for k in range(pieces + 1)]
        cuts += [(a, b, b - a, g, b"") for a, b in itertools.pairwise(bounds) if b > a]
        first += rows
    return cuts


def _csv_header(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.readline(64 << 20)


def _text_cuts(file: InputFile, part_rows: int) -> list[tuple[int, int, int, int, bytes]]:
    """Byte ranges of about ``part_rows`` lines (at most MAX_TEXT_PART_BYTES), each ending at a line end."""
    header = _csv_header(file.path) if file.format == "csv" else b""
    begin = len(header)
    size = file.size
    if size <= begin:
        return []
    with file.path.open("rb") as f:
        f.seek(begin)
        sample = f.read(_SAMPLE_BYTES)
        row_bytes = max(1.0, len(sample) / max(1, sample.count(b"\n")))
        target = max(1, min(MAX_TEXT_PART_BYTES, int(part_rows * row_bytes)))
        bounds = [begin]
        budget = size // target + 2
        while bounds[-1] < size and len(bounds) <= budget:
            cut = _line_end_after(f, bounds[-1] + target, size)
            bounds.append(cut)
    if bounds[-1] < size:  # cannot happen (each cut moves >= target), kept so no byte is ever left out
        bounds.append(size)
    return [(a, b, max(1, round((b - a) / row_bytes)), -1, header)
            for a, b in itertools.pairwise(bounds) if b > a]


def _line_end_after(f: io.BufferedReader, pos: int, size: int) -> int:
    """The offset just past the first newline at or after ``pos - 1`` (the end of the file if none)."""
    if pos >= size:
        return size
    f.seek(pos - 1)
    offset = pos - 1
    for _ in range(size // _READ_BUFFER + 2):
        chunk = f.read(_READ_BUFFER)
        if not chunk:
            return size
        nl = chunk.find(b"\n")
        if nl >= 0:
            return offset + nl + 1
        offset += len(chunk)
    return size


# -- reading one part ---------------------------------------------------------------------------------------

def read_part(part: PartSpec, signature: Signature, keep: Sequence[str], batch_size: int) -> PartData:
    """A part's rows, as batches of at most ``batch_size`` rows holding the model's columns and ``keep``."""
    columns = list(dict.fromkeys([*signature.names, *keep]))
    if part.format == "parquet":
        return PartData(_parquet_batches(part, columns, batch_size), rows=part.stop - part.start)
    with open(part.path, "rb") as f:
        f.seek(part.start)
        data = f.read(part.stop - part.start)
    if part.format == "csv":
        return _read_csv(part.header, data, signature, keep, columns, batch_size)
    return _read_jsonl(data, signature, keep, columns, batch_size)


def _parquet_batches(part: PartSpec, columns: list[str], batch_size: int
                     ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    pf = pq.ParquetFile(part.path, pre_buffer=False, buffer_size=_READ_BUFFER)
    group_first = sum(pf.metadata.row_group(g).num_rows for g in range(part.row_group))
    lo, hi = part.start - group_first, part.stop - group_first
    at = 0
    for batch in pf.iter_batches(batch_size=batch_size, row_groups=[part.row_group], columns=columns,
                                 use_threads=False):
        a, b = max(lo, at), min(hi, at + batch.num_rows)
        if b > a:
            yield batch.slice(a - at, b - a), np.arange(a - lo, b - lo)
        at += batch.num_rows
        if at >= hi:
            break


def _batches(table: pa.Table, positions: np.ndarray, batch_size: int) -> list[tuple[pa.RecordBatch, np.ndarray]]:
    out = []
    for offset in range(0, table.num_rows, batch_size):
        chunk = table.slice(offset, batch_size).combine_chunks()
        batch = chunk.to_batches()[0] if chunk.num_rows else pa.RecordBatch.from_pylist([], schema=chunk.schema)
        out.append((batch, positions[offset:offset + batch.num_rows]))
    return out


def _read_csv(header: bytes, data: bytes, signature: Signature, keep: Sequence[str], columns: list[str],
              batch_size: int) -> PartData:
    if not header.endswith(b"\n"):
        header += b"\n"
    keep_types = {name: pa.string() for name in keep if name not in signature.names}
    typed = {spec.name: _arrow_type(spec) for spec in signature.inputs}
    for types in (typed, {name: pa.string() for name in signature.names}):
        unparsed: list[tuple[int, str, str]] = []

        def invalid(row: pa_csv.InvalidRow, found: list[tuple[int, str, str]] = unparsed) -> str:
            found.append((int(row.number or 2) - 2, row.text,
                          f"expected {row.expected_columns} fields, found {row.actual_columns}"))
            return "skip"

        try:
            table = pa_csv.read_csv(
                io.BytesIO(header + data),
                read_options=pa_csv.ReadOptions(use_threads=False, block_size=8 << 20),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid),
                convert_options=pa_csv.ConvertOptions(column_types={**types, **keep_types},
                                                      include_columns=columns, strings_can_be_null=True),
            )
        except pa.ArrowInvalid:
            continue
        for name in keep_types:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, typed_text(table.column(i).combine_chunks()))
        return _with_unparsed(table, unparsed, batch_size)
    raise SchemaError("CSV part could not be read even with every column as text")


_INT = r"^[+-]?(0|[1-9][0-9]*)$"
_FLOAT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_LEADING_ZERO = r"^[+-]?0[0-9]"
_BOOL = ("true", "false")
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"
_NANOS = r"\.[0-9]{7,9}$"


def typed_text(column: pa.Array) -> pa.Array:
    """A CSV column passed through (read as text), as the type every one of its values spells: integers, then
    booleans (true/false in any case), then decimal numbers, then ISO 8601 dates and date-times; text otherwise.
    A value whose text a conversion would not give back (``007``, an integer beyond 64 bits) keeps the column
    text. A column of nulls only has the null type, so that the other parts of the file decide its type."""
    values = column.drop_null()
    if len(values) == 0:
        return pa.nulls(len(column))
    if not pa.types.is_string(values.type):
        return column

    def every(pattern: str) -> bool:
        return bool(pc.all(pc.match_substring_regex(values, pattern)).as_py())

    try:
        if every(_INT):
            return pc.cast(column, pa.int64())
        if bool(pc.all(pc.is_in(pc.utf8_lower(values), value_set=pa.array(_BOOL))).as_py()):
            return pc.cast(column, pa.bool_())
        if every(_FLOAT) and not pc.any(pc.match_substring_regex(values, _LEADING_ZERO)).as_py():
            return pc.cast(column, pa.float64())
        if every(_DATE):
            return pc.cast(column, pa.date32())
        if every(_TIMESTAMP):
            nanos = bool(pc.any(pc.match_substring_regex(values, _NANOS)).as_py())
            return pc.cast(column, pa.timestamp("ns" if nanos else "us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # out of range for the type: the text stays
        pass
    return column


def _with_unparsed(table: pa.Table, unparsed: list[tuple[int, str, str]], batch_size: int) -> PartData:
    rows = table.num_rows + len(unparsed)
    skipped = np.array(sorted(u[0] for u in unparsed), dtype=np.int64)
    positions = np.setdiff1d(np.arange(rows, dtype=np.int64), skipped, assume_unique=True)
    return PartData(_batches(table, positions, batch_size), sorted(unparsed), rows)


def _read_jsonl(data: bytes, signature: Signature, keep: Sequence[str], columns: list[str],
                batch_size: int) -> PartData:
    schema = pa.schema([(spec.name, _arrow_type(spec)) for spec in signature.inputs])
    try:
        table = pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(use_threads=False),
                                  parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                                                     unexpected_field_behavior="infer"))
        table = _select(table, columns, schema)
        return PartData(_batches(table, np.arange(table.num_rows), batch_size), [], table.num_rows)
    except pa.ArrowInvalid:
        return _read_jsonl_slowly(data, signature, keep, columns, batch_size)


def _select(table: pa.Table, columns: list[str], schema: pa.Schema) -> pa.Table:
    """``columns`` of ``table`` in that order; a column no line had becomes all null."""
    arrays = []
    for name in columns:
        if name in table.column_names:
            arrays.append(table.column(name))
        else:
            kind = schema.field(name).type if name in schema.names else pa.null()
            arrays.append(pa.nulls(table.num_rows, kind))
    return pa.table(arrays, names=columns)


def _read_jsonl_slowly(data: bytes, signature: Signature, keep: Sequence[str], columns: list[str],
                       batch_size: int) -> PartData:
    """Line by line: a line that is not a JSON object is rejected on its own; values keep their JSON types so
    that the signature check names the ones of the wrong type."""
    records: list[dict[str, object]] = []
    positions: list[int] = []
    unparsed: list[tuple[int, str, str]] = []
    row = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json_body.loads(line)  # NaN and the infinities as Python's json writes them, as the server
        except json_body.JSONBodyError as exc:
            unparsed.append((row, line.decode("utf-8", "replace"), f"invalid JSON: {exc}"))
        else:
            if isinstance(value, dict):
                records.append(value)
                positions.append(row)
            else:
                unparsed.append((row, line.decode("utf-8", "replace"), "a line must be a JSON object"))
        row += 1
    arrays = []
    for name in columns:
        values = [r.get(name) for r in records]
        arrays.append(_loose_array(values))
    table = pa.table(arrays, names=columns)
    return PartData(_batches(table, np.asarray(positions, dtype=np.int64), batch_size), unparsed, row)


def _loose_array(values: list[object]) -> pa.Array:
    """An Arrow array of JSON values; mixed types become their JSON text (strings stay as they are)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
                        type=pa.string())
