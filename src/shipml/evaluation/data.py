"""Read data files (CSV, Parquet, JSON lines) for evaluation and quick predictions.

CSV carries no types, so columns the model's signature declares as strings are read as strings even when they
look numeric (a zip code "02134" stays "02134"); every other column is left to the validation step, which
reports values of the wrong type row by row instead of failing the whole read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shipml.errors import NotFoundError, SchemaError
from shipml.package.lineage import fingerprint
from shipml.package.loaded import sha256_file
from shipml.package.signature import Signature

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".xz", ".zip")
#: pandas < 3 turns date-like column names into datetimes unless told not to; pandas 3 deprecates the keyword
#: (its ``dtype=False`` already leaves values as JSON gave them).
_NO_DATES: dict[str, Any] = {"convert_dates": False} if int(pd.__version__.split(".")[0]) < 3 else {}


@dataclass(frozen=True)
class LabelledData:
    """Features and target read from one source, with what identifies that source."""

    features: pd.DataFrame
    target: pd.Series
    source: str | None  # the file name (never a full path: it is stored with evaluations)
    fingerprint: str  # sha256 of the file's bytes, or of the frame's values (package/lineage.fingerprint)

    @property
    def rows(self) -> int:
        return len(self.features)


def string_columns(signatures: Iterable[Signature]) -> set[str]:
    """Columns to read as text: string inputs of any of the models, and string class labels."""
    out: set[str] = set()
    for sig in signatures:
        out.update(c.name for c in sig.inputs if c.dtype == "string")
    return out


def label_is_text(signatures: Iterable[Signature]) -> bool:
    """Whether a target column should be read as text (a model whose classes are strings)."""
    return any(sig.outputs.classes and all(isinstance(c, str) for c in sig.outputs.classes)
               for sig in signatures)


def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in CSV_SUFFIXES:
        return "csv"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    raise SchemaError(f"cannot tell the format of {path.name!r}: use .csv, .tsv, .parquet or .jsonl"
                      " (optionally compressed: .csv.gz, .jsonl.gz)")


def read_table(path: str | Path, *, text_columns: Iterable[str] = (),
               limit: int | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON-lines file; ``text_columns`` stay strings; ``limit``: first rows only."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such data file: {path}")
    fmt = file_format(path)
    text = set(text_columns)
    try:
        if fmt == "csv":
            sep = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
            header = pd.read_csv(path, sep=sep, nrows=0).columns
            dtypes: Any = {c: str for c in header if c in text}
            frame = pd.read_csv(path, sep=sep, dtype=dtypes, nrows=limit)
        elif fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False, nrows=limit, **_NO_DATES)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SchemaError(f"cannot read {path.name} as {fmt}: {exc}") from exc
    if limit is not None:
        frame = frame.head(limit)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def read_labelled(path: str | Path, target: str, signatures: Iterable[Signature]) -> LabelledData:
    """Read a labelled data file, typed for the models with these ``signatures``; split off ``target``."""
    path = Path(path)
    sigs = list(signatures)
    text = string_columns(sigs) | ({target} if label_is_text(sigs) else set())
    frame = read_table(path, text_columns=text)
    # The file's bytes identify it, however its columns were typed for this model or that one.
    return split_target(frame, target, source=path.name, data_fingerprint="sha256:" + sha256_file(path))


def split_target(frame: pd.DataFrame, target: str, *, source: str | None = None,
                 data_fingerprint: str | None = None) -> LabelledData:
    """Split a labelled frame into features and target; the fingerprint (unless given) covers both."""
    where = f" of {source}" if source else ""
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:20])) + (", ..." if frame.shape[1] > 20 else "")
        raise SchemaError(f"no target column {target!r} in the columns{where}: {shown}")
    if frame.columns.duplicated().any():
        dup = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise SchemaError(f"duplicate column names{where}: {', '.join(map(str, dup))}")
    frame = frame.reset_index(drop=True)
    return LabelledData(frame.drop(columns=[target]), frame[target], source,
                        data_fingerprint or _fingerprint(frame))


def _fingerprint(frame: pd.DataFrame) -> str:
    try:
        return fingerprint(frame)
    except TypeError:  # unhashable cells (lists, dicts from JSON lines): fall back to their text
        h = hashlib.sha256(repr(list(frame.columns)).encode())
        h.update(frame.astype(str).to_csv(index=False).encode())
        return "sha256:" + h.hexdigest()
