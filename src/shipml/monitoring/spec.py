"""The ``monitoring:`` section of a deployment spec: prediction log, drift window, live performance, alert rules.

    monitoring:
      enabled: true                  # drift, live performance and alerts; `shipml serve --log DIR` turns it on too
      log: {dir: ./predlog, sample: 1.0, flush_interval_s: 5}
      drift: {window_s: 600, min_rows: 200}
      performance: {window_rows: 1000}
      alerts:
        - {name: input-drift, when: "psi > 0.2", feature: "*", for: 5m}
        - {name: accuracy, when: "accuracy < 0.9", over_rows: 1000}
        - {name: positives, when: "prediction_share outside [0.05, 0.3]", label: "1"}
      webhook: {url: "http://127.0.0.1:9000/alerts"}

The alert rule itself (``when`` and its grammar) is :class:`shipml.monitoring.rules.AlertRule`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = ["DriftSpec", "LogSpec", "MonitoringSpec", "PerformanceSpec", "WebhookSpec", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a text such as ``"90s"``, ``"5m"``, ``"24h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError(f"a duration must be a number of seconds or a text such as '5m', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"a duration must be a number of seconds or a text such as '5m' or '24h', not {value!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, not {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSpec(_Strict):
    dir: str | None = Field(None, description=(
        "directory of the prediction log (Parquet files); unset: no log is written. Relative to the spec file"))
    sample: float = Field(1.0, gt=0, le=1, allow_inf_nan=False, description=(
        "share of requests logged (all rows of a sampled request are logged)"))
    flush_interval_s: Duration = Field(5.0, gt=0, le=3600, description=(
        "longest time a logged prediction waits in memory: a killed server loses at most this much"))
    max_file_rows: int = Field(100_000, ge=1, description="rows per Parquet file, at most")
    max_queue_rows: int = Field(100_000, ge=1, description=(
        "rows waiting to be written, at most; more are dropped and counted (logging never blocks a prediction)"))


class DriftSpec(_Strict):
    window_s: Duration = Field(600.0, gt=0, le=7 * 86400, description="served rows of the last window_s seconds")
    min_rows: int = Field(100, ge=1, description="rows in the window before drift figures are reported")


class PerformanceSpec(_Strict):
    window_rows: int = Field(1000, ge=1, description="live metrics over the last window_rows labelled rows")
    index_rows: int = Field(100_000, ge=1, description=(
        "recent predicted rows kept in memory to join feedback to (older ones are looked up in the log)"))


class WebhookSpec(_Strict):
    url: str = Field(description="http(s) URL that gets a JSON POST when an alert fires or resolves")
    timeout_s: float = Field(5.0, gt=0, le=300)
    retries: int = Field(5, ge=0, le=100, description="attempts after the first, with exponential back-off")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers (e.g. Authorization)")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"webhook url must be an http:// or https:// URL, not {url!r}")
        return url


def _rules(value: Any) -> Any:
    from shipml.monitoring.rules import AlertRule

    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("alerts must be a list of rules")
    return [AlertRule.model_validate(v) if not isinstance(v, AlertRule) else v for v in value]


class MonitoringSpec(_Strict):
    enabled: bool = Field(False, description="watch every served model: drift, live performance, alerts")
    log: LogSpec = LogSpec()
    drift: DriftSpec = DriftSpec()
    performance: PerformanceSpec = PerformanceSpec()
    alerts: Annotated[list[Any], BeforeValidator(_rules)] = Field(default_factory=list, description=(
        "alert rules (shipml.monitoring.rules.AlertRule)"))
    webhook: WebhookSpec | None = None
    evaluate_interval_s: Duration = Field(5.0, gt=0, le=3600, description="how often alert rules are evaluated")

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringSpec:
        names = [r.name for r in self.alerts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"alert names must be unique, repeated: {', '.join(dup)}")
        return self

    @property
    def active(self) -> bool:
        """Whether served models are watched at all: enabled, or a log directory given."""
        return self.enabled or self.log.dir is not None
