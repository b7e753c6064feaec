"""What a batch job reports: one :class:`PartResult` per part (written next to the part's files, so a re-run
knows what is done), and the :class:`BatchReport` of the whole job."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class PartResult:
    """What scoring one part did. ``model_loads`` counts the model loads of the process that scored it (1 when
    the model is loaded once per worker, however many parts the worker scores)."""

    index: int
    rows_read: int
    rows_scored: int
    rows_rejected: int
    warnings: int
    seconds: float
    worker: str
    model_loads: int

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> PartResult:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)


@dataclass
class BatchReport:
    """The outcome of :func:`shipml.predict_file`. Every row read is either scored (in ``output``) or rejected
    (in ``rejects``, with its reason): ``rows_read == rows_scored + rows_rejected``. ``rejects`` is None when no
    row was rejected: then no rejects file is written."""

    model: str
    output: Path
    rejects: Path | None
    output_format: str
    engine: str
    workers: int
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    warnings: int = 0
    parts_total: int = 0
    parts_skipped: int = 0
    seconds: float = 0.0
    max_model_loads: int = 0
    workers_seen: list[str] = field(default_factory=list)
    log_dir: str | None = None
    log_request_id: str | None = None  # the request id of the job's rows in the prediction log

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def add(self, part: PartResult) -> None:
        self.rows_read += part.rows_read
        self.rows_scored += part.rows_scored
        self.rows_rejected += part.rows_rejected
        self.warnings += part.warnings
        self.max_model_loads = max(self.max_model_loads, part.model_loads)
        if part.worker not in self.workers_seen:
            self.workers_seen.append(part.worker)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "output": str(self.output),
            "rejects": str(self.rejects) if self.rejects is not None else None,
            "output_format": self.output_format, "engine": self.engine, "workers": self.workers,
            "rows_read": self.rows_read, "rows_scored": self.rows_scored, "rows_rejected": self.rows_rejected,
            "warnings": self.warnings, "parts_total": self.parts_total, "parts_skipped": self.parts_skipped,
            "seconds": round(self.seconds, 3), "rows_per_second": round(self.rows_per_second, 1),
            "log": self.log_dir, "log_request_id": self.log_request_id,
        }

    def summary(self) -> str:
        skipped = f", {self.parts_skipped} of {self.parts_total} parts already done" if self.parts_skipped else ""
        rejects = ("none written (no row was rejected)" if self.rejects is None else
                   f"{self.rejects} ({self.rows_rejected:,} row{'' if self.rows_rejected == 1 else 's'})")
        return (f"{self.model}: read {self.rows_read:,} rows, scored {self.rows_scored:,}, rejected"
                f" {self.rows_rejected:,} in {self.seconds:.1f}s ({self.rows_per_second:,.0f} rows/s{skipped})\n"
                f"output:  {self.output}\nrejects: {rejects}"
                + (f"\nlog:     {self.log_dir} (request id {self.log_request_id})" if self.log_dir else ""))
