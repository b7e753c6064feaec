"""The plain values a batch job is made of, small and picklable so that any engine can ship them to a worker:
the :class:`JobSpec` (what to do with every part) and the :class:`PartSpec` (one deterministic slice of the input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from shipml.package.validation import InputPolicy

InputFormat = Literal["parquet", "csv", "jsonl"]
OutputFormat = Literal["parquet", "csv", "jsonl"]
Engine = Literal["local", "ray", "dask"]

#: Columns added to each rejected row (the row's own columns come first).
REJECT_COLUMNS = ("_file", "_row", "_column", "_rule", "_reason")
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"


@dataclass(frozen=True)
class JobSpec:
    """What every worker needs to score a part. ``model_path`` is the pinned package directory (a registry
    version never changes), so an alias moved mid-job cannot mix two models in one output; ``manifest_sha256``
    is what the registry recorded for its manifest (None for a package directory given as a path): each worker
    loads with it, so a manifest edited mid-job is refused."""

    model_path: str
    model_ref: str
    key: str
    work_dir: str
    keep_columns: tuple[str, ...] = ()
    proba: bool = False
    batch_size: int = 16_384
    policy: InputPolicy = field(default_factory=InputPolicy)
    trusted: bool | None = None
    allow_env_mismatch: bool = False
    threads_per_worker: int = 1
    manifest_sha256: str | None = None
    log_dir: str | None = None  # the prediction log every worker writes scored rows to (None: no log)
    log_request_id: str = ""  # the request id of every logged row: the job's id
    log_flush_s: float = 5.0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobSpec:
        data: dict[str, Any] = orjson.loads(raw)
        data["keep_columns"] = tuple(data["keep_columns"])
        data["policy"] = InputPolicy(**data["policy"])
        return cls(**data)


@dataclass(frozen=True)
class PartSpec:
    """One slice of one input file: rows ``[start, stop)`` of a Parquet file (inside one row group), or bytes
    ``[start, stop)`` of a CSV / JSON-lines file, cut at line ends (CSV parts carry the file's header line).
    ``first_row`` is the position of its first row in the whole input (every file in order), counted only for a
    job whose rows are logged (-1 otherwise).

    ``file_index`` orders the files; ``est_rows`` only feeds the progress bar (exact for Parquet)."""

    index: int
    path: str
    format: InputFormat
    file_index: int
    start: int
    stop: int
    est_rows: int
    row_group: int = -1
    header: bytes = b""
    first_row: int = -1  # the input position of the part's first row (set when the job is logged)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["header"] = self.header.hex()
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PartSpec:
        data: dict[str, Any] = orjson.loads(raw)
        data["header"] = bytes.fromhex(data["header"])
        return cls(**data)
