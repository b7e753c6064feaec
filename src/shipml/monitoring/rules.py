"""Alert rules as written in a deployment spec: a name, a condition over one monitored figure, and how long it must
hold. Parsing only; :mod:`shipml.monitoring.alerts` evaluates them.

    {name: input-drift, when: "psi > 0.2", feature: "*", for: 5m}
    {name: accuracy, when: "accuracy < 0.9", over_rows: 1000}
    {name: positives, when: "prediction_share outside [0.05, 0.3]", label: "1"}
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipml.monitoring.spec import Duration

__all__ = ["DRIFT_METRICS", "PERFORMANCE_METRICS", "PREDICTION_METRICS", "AlertRule", "Condition"]

#: Figures of one input feature's drift (a rule names ``feature``: one name, or "*" for any feature).
DRIFT_METRICS = ("psi", "ks", "chi2", "cramers_v", "null_share", "out_of_range_share", "unseen_share")
#: Figures of the prediction distribution (``prediction_share`` names the class with ``label``).
PREDICTION_METRICS = ("prediction_psi", "prediction_share", "prediction_mean")
#: Live performance over the last labelled rows, and its estimate from the model's own probabilities.
REALISED = ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse")
PERFORMANCE_METRICS = REALISED + tuple(f"estimated_{m}" for m in ("accuracy", "precision", "recall", "f1",
                                                                    "roc_auc"))
METRICS = DRIFT_METRICS + PREDICTION_METRICS + PERFORMANCE_METRICS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARE = re.compile(rf"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*({_NUMBER})\s*$")
_OUTSIDE = re.compile(rf"^\s*([a-z_][a-z0-9_]*)\s+outside\s*\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]\s*$")


class Condition(BaseModel):
    """``metric op threshold``, or ``metric outside [low, high]`` (op "outside")."""

    model_config = ConfigDict(frozen=True)

    metric: str
    op: Literal[">", ">=", "<", "<=", "outside"]
    threshold: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _COMPARE.match(text)
        if match:
            metric, op, number = match.groups()
            condition = cls(metric=metric, op=op, threshold=float(number))
        elif match := _OUTSIDE.match(text):
            metric, low, high = match.groups()
            if not float(low) <= float(high):
                raise ValueError(f"{text!r}: the range [{low}, {high}] is empty (low must be <= high)")
            condition = cls(metric=metric, op="outside", low=float(low), high=float(high))
        else:
            raise ValueError(f"{text!r} is not a condition: write 'METRIC > NUMBER' (or >=, <, <=) or "
                             f"'METRIC outside [LOW, HIGH]'")
        if condition.metric not in METRICS:
            raise ValueError(f"{text!r}: unknown metric {condition.metric!r}; known: {', '.join(METRICS)}")
        for value in (condition.threshold, condition.low, condition.high):
            if not math.isfinite(value):
                raise ValueError(f"{text!r}: thresholds must be finite numbers")
        return condition

    def holds(self, value: float) -> bool:
        """Whether ``value`` breaks the rule (a NaN never does: a figure that cannot be computed fires nothing)."""
        if math.isnan(value):
            return False
        if self.op == "outside":
            return value < self.low or value > self.high
        if self.op == ">":
            return value > self.threshold
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        return value <= self.threshold

    def __str__(self) -> str:
        """The condition as written, with its numbers exact (``parse(str(c)) == c``)."""
        if self.op == "outside":
            return f"{self.metric} outside [{_text(self.low)}, {_text(self.high)}]"
        return f"{self.metric} {self.op} {_text(self.threshold)}"


def _text(number: float) -> str:
    """The shortest text that reads back as ``number`` (``0.2``, ``1e-05``, ``100000``)."""
    text = repr(float(number))
    return text.removesuffix(".0")


class AlertRule(BaseModel):
    """One alert: ``when`` holds for ``for`` seconds (``for_s``) on a model served by ``endpoint`` (default:
    every endpoint). Drift rules name a ``feature`` ("*": any input feature; each feature is judged on its
    own); ``prediction_share`` names the class ``label``; performance rules judge the last ``over_rows``
    labelled rows (default: ``performance.window_rows``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    when: str
    feature: str | None = None
    label: str | None = None
    endpoint: str | None = None
    for_s: Duration = Field(0.0, alias="for", le=7 * 86400)
    over_rows: int | None = Field(None, ge=1)
    severity: Literal["info", "warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        if not _NAME.match(self.name):
            raise ValueError(f"alert name {self.name!r} must be 1-64 letters, digits, '_', '.', '-'")
        metric = self.condition.metric
        if metric in DRIFT_METRICS:
            if self.label is not None or self.over_rows is not None:
                raise ValueError(f"alert {self.name}: {metric} is a drift figure: give feature, not label or"
                                 f" over_rows")
        elif metric == "prediction_share":
            if self.label is None:
                raise ValueError(f"alert {self.name}: prediction_share needs the class it counts: label")
        elif self.feature is not None:
            raise ValueError(f"alert {self.name}: feature applies to drift figures, not {metric}")
        if metric not in PERFORMANCE_METRICS and self.over_rows is not None:
            raise ValueError(f"alert {self.name}: over_rows applies to performance figures, not {metric}")
        if metric != "prediction_share" and self.label is not None:
            raise ValueError(f"alert {self.name}: label applies to prediction_share only")
        return self

    @property
    def condition(self) -> Condition:
        try:
            return Condition.parse(self.when)
        except ValueError as exc:
            raise ValueError(f"alert {self.name}: {exc}") from None

    @property
    def feature_pattern(self) -> str:
        """The feature a drift rule judges: a name, or "*" for every input feature."""
        return self.feature if self.feature is not None else "*"
