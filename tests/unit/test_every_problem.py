"""Validation reports every problem at once (issue #12, item 15): a missing column does not hide the problems of
the columns that are there. Random subsets of missing columns and random bad values in the others, in every
input form, through LoadedModel.validate and through the dataplane (what the server's 422 lists)."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.errors import SchemaError
from shipml.package.loaded import LoadedModel
from shipml.package.validation import InputPolicy
from shipml.protocol.dataplane import ModelRunner
from tests.unit import fuzz_models
from tests.unit.fuzz_models import GENERAL, general_row

#: Values that break exactly one rule of each column of the general model: (value, rule).
BAD: dict[str, list[tuple[Any, str]]] = {
    "n": [("abc", "type"), (1.5, "type"), (None, "null"), ([1, 2], "type")],
    "x": [("x", "type"), ({"a": 1}, "type")],
    "plan": [("gold", "unseen_category"), (5, "type"), (None, "null")],
    "flag": [("maybe", "type"), (2, "type"), (None, "null")],
    "when": [("not a date", "type"), (3, "type"), ("9999-12-31", "type"), (None, "null")],
}

Expected = set[tuple[int | None, str | None, str]]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return fuzz_models.general_model(tmp_path_factory.mktemp("every-problem"))


@st.composite
def broken_input(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str], Expected]:
    """Valid rows, some columns dropped from every row, and bad values put in some cells of the others: the
    rows as records, the columns left, and every problem they hold."""
    rows = draw(st.lists(general_row(), min_size=1, max_size=5))
    missing = draw(st.sets(st.sampled_from(GENERAL), max_size=len(GENERAL) - 1))
    kept = [c for c in GENERAL if c not in missing]
    expected: Expected = {(None, c, "missing_column") for c in missing}
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(rows) - 1))
        column = draw(st.sampled_from(kept))
        value, rule = draw(st.sampled_from(BAD[column]))
        if any(cell[:2] == (i, column) for cell in expected):
            continue  # one bad value per cell
        rows[i] = {**rows[i], column: value}
        expected.add((i, column, rule))
    return [{c: r[c] for c in kept} for r in rows], kept, expected


def shaped(records: list[dict[str, Any]], kept: list[str], form: str) -> Any:
    if form == "records":
        return records
    if form == "columnar":
        return {c: [r[c] for r in records] for c in kept}
    return pd.DataFrame(records, columns=kept)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(case=broken_input(), form=st.sampled_from(["records", "columnar", "frame"]))
def test_validate_reports_every_problem(model: LoadedModel, case: tuple[list[dict[str, Any]], list[str], Expected],
                                        form: str) -> None:
    records, kept, expected = case
    report = model.validate(shaped(records, kept, form))
    assert {(p.row, p.column, p.rule) for p in report.errors} == expected
    assert report.ok is (not expected)


@SETTINGS
@given(case=broken_input(), form=st.sampled_from(["records", "columnar"]))
def test_the_servers_422_lists_every_problem(model: LoadedModel, case: tuple[list[dict[str, Any]], list[str], Expected],
                                            form: str) -> None:
    records, kept, expected = case

    async def go() -> Any:
        runner = ModelRunner(model, policy=InputPolicy(), max_rows=100, max_batch_size=100, max_latency_ms=2,
                             max_queue=10)
        try:
            return await runner.infer(shaped(records, kept, form))
        except Exception as exc:
            return exc
        finally:
            await runner.batcher.stop()

    answer = asyncio.run(go())
    if not expected:
        assert not isinstance(answer, Exception), answer
        return
    assert isinstance(answer, SchemaError) and answer.status == 422, answer
    assert {(p.row, p.column, p.rule) for p in answer.problems} == expected
    assert answer.total == len(expected)
