"""Hypothesis strategies for what a client can put in a JSON request body, shared by the unit and the
end-to-end tests of the dataplane: any JSON value (nested lists and objects, huge integers, NaN and the
infinities, strings that look like numbers or dates), and requests built from valid rows with some cells
replaced by such values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

#: Scalars chosen to sit on the edges of the checks: number-like and date-like strings, integers around the
#: 64-bit limits and beyond a float's range, NaN and the infinities, booleans.
TRICKY_SCALARS: list[Any] = [
    "", "1.5", "1_000", "nan", "NaN", "inf", "true", "False", "2020-01-01", "2020-13-45", "1/2/2020",
    "2020-06-01T12:00:00+02:00", 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, -(10**400),
    math.nan, math.inf, -math.inf, True, False, 0, 1, 2, -1, 0.5, 1e308, -0.0, float(2**63), 1e19, -1e19,
]

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(TRICKY_SCALARS),
)

#: Any JSON value: leaves, and lists and objects of them nested a few levels deep.
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=3), children, max_size=3)),
    max_leaves=8,
)


def readable(value: Any) -> bool:
    """Whether a server can read ``value`` from JSON text: every number in it a finite double once read (an
    integer beyond a double's range is not; NaN and the infinities are, as Python's json writes them)."""
    if isinstance(value, list):
        return all(map(readable, value))
    if isinstance(value, dict):
        return all(map(readable, value.values()))
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        try:
            return math.isfinite(float(value))
        except OverflowError:
            return False
    return True


def nonscalar(value: Any) -> bool:
    """A value no cell may hold, whatever the column's type: a list or an object."""
    return isinstance(value, list | dict)


@dataclass
class Case:
    """One request: its rows as records, the cells replaced by random values, and the form it is sent in."""

    rows: list[dict[str, Any]]
    form: str  # "records", "columnar" or "rows" (a list of value lists in signature order)
    names: list[str]
    injected: dict[tuple[int, str], Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.injected

    def body(self) -> Any:
        """The request's input in its form (what goes under "instances"/"inputs")."""
        if self.form == "records":
            return self.rows
        if self.form == "columnar":
            return {name: [r[name] for r in self.rows] for name in self.names}
        return [[r[name] for name in self.names] for r in self.rows]

    def nonscalar_cells(self) -> list[tuple[int, str]]:
        return sorted(cell for cell, value in self.injected.items() if nonscalar(value))


@st.composite
def cases(draw: st.DrawFn, row: Callable[[], st.SearchStrategy[dict[str, Any]]], names: Sequence[str],
          forms: Sequence[str] = ("records", "columnar"), max_rows: int = 3,
          values: st.SearchStrategy[Any] = json_values, bad_chance: float = 0.5) -> Case:
    """A request of 1..max_rows valid rows in one of ``forms``; about half of them get 1-2 cells replaced by
    random ``values``."""
    rows = draw(st.lists(row(), min_size=1, max_size=max_rows))
    form = draw(st.sampled_from(list(forms)))
    case = Case(rows, form, list(names))
    if draw(st.floats(0, 1)) < bad_chance:
        for _ in range(draw(st.integers(1, 2))):
            i = draw(st.integers(0, len(rows) - 1))
            name = draw(st.sampled_from(list(names)))
            value = draw(values)
            rows[i] = {**rows[i], name: value}
            case.injected[(i, name)] = value
    return case


def problem_cells(problems: Sequence[Mapping[str, Any]], rule: str) -> set[tuple[int, str]]:
    """(row, column) of each problem of ``rule`` in a list of problems as dicts."""
    return {(p["row"], p["column"]) for p in problems if p["rule"] == rule}
