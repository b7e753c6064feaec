"""Service-level objectives for a load test: ``p50<20ms,p99<50ms,p99.9<200ms,errors<0.1%,rps>900``.

Terms are separated by commas. Latency terms (``pNN``, ``pNN.N``, ``mean``, ``max``) need a unit (``us``, ``ms``
or ``s``); ``errors`` is a percentage of the requests issued (``%`` required); ``rps`` is successful answers
per second. Comparisons: ``<``, ``<=``, ``>``, ``>=``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipml.errors import SpecError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}
_TERM = re.compile(r"\s*(?P<metric>[a-z][a-z0-9.]*)\s*(?P<op><=|>=|<|>)\s*"
                   r"(?P<value>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<unit>[a-zµ%/]*)\s*", re.IGNORECASE)
_PERCENTILE = re.compile(r"p(?P<q>[0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class Objective:
    """One term: ``metric`` (``p99``, ``mean``, ``max``, ``errors``, ``rps``) ``op`` ``threshold`` (in ms for
    latency, % for errors, requests/s for rps)."""

    text: str
    metric: str
    op: str
    threshold: float
    percentile: float | None = None  # for pNN

    @property
    def unit(self) -> str:
        return {"errors": "%", "rps": "/s"}.get(self.metric, "ms")

    def holds(self, measured: float | None) -> bool:
        """Whether the measured value meets the objective (no measurement never does)."""
        return measured is not None and _OPS[self.op](measured, self.threshold)


@dataclass(frozen=True)
class Check:
    """One objective (or the send-rate check) against what was measured."""

    name: str
    measured: float | None
    unit: str
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "unit": self.unit, "passed": self.passed,
                "note": self.note}


def parse_slo(text: str | None) -> list[Objective]:
    """Parse ``text``; a clear error names the term that cannot be read. Empty or None: no objectives."""
    if text is None or not text.strip():
        return []
    return [_parse_term(term) for term in text.split(",")]


def _parse_term(term: str) -> Objective:
    shown = term.strip()
    if not shown:
        raise SpecError("empty SLO term (two commas in a row, or a trailing comma?)")
    match = _TERM.fullmatch(term)
    if match is None:
        raise SpecError(f"cannot read SLO term {shown!r}: expected METRIC<VALUE such as p99<50ms, errors<0.1%"
                        " or rps>900")
    metric, op = match["metric"].lower(), match["op"]
    value, unit = float(match["value"]), match["unit"].lower()
    percentile = None
    if (p := _PERCENTILE.fullmatch(metric)) is not None:
        percentile = float(p["q"])
        if not 0 < percentile <= 100:
            raise SpecError(f"SLO term {shown!r}: a percentile must be above 0 and at most 100")
    elif metric not in ("mean", "max", "errors", "rps"):
        raise SpecError(f"SLO term {shown!r}: unknown metric {match['metric']!r} (expected pNN, mean, max,"
                        " errors or rps)")
    if metric == "errors":
        if unit != "%":
            raise SpecError(f"SLO term {shown!r}: give the error rate as a percentage, e.g. errors<0.1%")
        if value > 100:
            raise SpecError(f"SLO term {shown!r}: an error rate cannot exceed 100%")
        return Objective(shown, metric, op, value)
    if metric == "rps":
        if unit not in ("", "/s"):
            raise SpecError(f"SLO term {shown!r}: rps takes a plain number of requests per second, e.g. rps>900")
        return Objective(shown, metric, op, value)
    if unit not in _LATENCY_UNITS:
        raise SpecError(f"SLO term {shown!r}: give a latency unit (us, ms or s), e.g. {metric}<50ms")
    return Objective(shown, metric, op, value * _LATENCY_UNITS[unit], percentile)
