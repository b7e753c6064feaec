"""Arrow columns (a file, the prediction log's ``input.<name>`` columns) are counted as the served rows the signature
check made them from; an all-numeric model's dense matrices are counted like its columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.errors import SchemaError
from shipml.monitoring.drift import Counts, columns_from_arrow, drift_of_table
from shipml.monitoring.reference import Reference
from shipml.package.loaded import LoadedModel
from shipml.package.validation import InputPolicy, check
from tests.unit.drift_models import STATES, classifier, regressor

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PERMISSIVE = InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    root = tmp_path_factory.mktemp("arrow")
    return classifier(root, rows=500), regressor(root, rows=300)


NUMBER = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**9, 10**9))
SERVED = st.fixed_dictionaries({  # what a served (so: checked, accepted) row of the classifier can hold
    "age": NUMBER,
    "income": NUMBER,
    "state": st.one_of(st.none(), st.sampled_from(STATES), st.text(max_size=3)),
    "member": st.booleans(),
    "when": st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))),
})


def log_table(records: list[dict[str, Any]]) -> pa.Table:
    """The records as the prediction log types its input columns."""
    def floats(name: str) -> pa.Array:
        return pa.array([None if r[name] is None else float(r[name]) for r in records], pa.float64())

    return pa.table({
        "input.age": floats("age"),
        "input.income": floats("income"),
        "input.state": pa.array([r["state"] for r in records], pa.string()),
        "input.member": pa.array([r["member"] for r in records], pa.bool_()),
        "input.when": pa.array([None if r["when"] is None else r["when"].replace(tzinfo=UTC) for r in records],
                               pa.timestamp("us", tz="UTC")),
        "prediction": pa.array([0] * len(records), pa.int64()),
    })


@SETTINGS
@given(st.lists(SERVED, max_size=20))
def test_log_columns_count_as_the_checked_rows(models: tuple[LoadedModel, LoadedModel],
                                               records: list[dict[str, Any]]) -> None:
    reference = Reference.from_model(models[0])
    from_log = Counts(reference)
    from_log.add(columns_from_arrow(reference, log_table(records), prefix="input."))
    served = Counts(reference)
    served.add(check(records, reference.signature, PERMISSIVE).table.columns)
    assert from_log == served


def test_a_missing_log_column_is_named(models: tuple[LoadedModel, LoadedModel]) -> None:
    reference = Reference.from_model(models[0])
    table = log_table([{"age": 1, "income": 2.0, "state": "CA", "member": True, "when": None}]).drop_columns(
        ["input.state"])
    with pytest.raises(SchemaError, match=r"no column 'input\.state'"):
        columns_from_arrow(reference, table, prefix="input.")
    with pytest.raises(SchemaError, match="no column 'member'"):
        drift_of_table(reference, pd.DataFrame({"age": [1], "income": [2.0], "state": ["CA"], "when": [None]}))


def test_columns_of_other_arrow_types(models: tuple[LoadedModel, LoadedModel]) -> None:
    """Text where numbers or dates are expected (a CSV read as text), dictionaries, dates, integers."""
    reference = Reference.from_model(models[0])
    table = pa.table({
        "age": pa.array(["30", "x", None, "1e3"]),
        "income": pa.array([1, 2, None, 4], pa.int32()),
        "state": pa.array(["CA", "NY", None, "CA"]).dictionary_encode(),
        "member": pa.array(["true", "FALSE", None, "maybe"]),
        "when": pa.array(["2024-03-01T10:00:00Z", "not a date", None, "2024-03-02"]),
    })
    columns = columns_from_arrow(reference, table)
    assert np.array_equal(columns["age"], [30.0, np.nan, np.nan, 1000.0], equal_nan=True)
    assert columns["income"].tolist()[:2] == [1.0, 2.0]
    assert columns["state"].tolist() == ["CA", "NY", None, "CA"]
    assert columns["when"][0] == np.datetime64("2024-03-01T10:00:00") and np.isnat(columns["when"][1])
    counts = Counts(reference)
    counts.add(columns)
    member = counts.feature_counts(reference.signature.names.index("member"))
    feature = reference.feature("member")
    assert member[feature.null_slot] == 1 and member[feature.unseen_slot] == 1
    assert member[list(feature.categories).index("True")] == member[list(feature.categories).index("False")] == 1


WILD = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 0.0, 5e-324]))


@SETTINGS
@given(st.lists(st.tuples(WILD, WILD), max_size=30))
def test_dense_matrices_are_counted_as_their_columns(models: tuple[LoadedModel, LoadedModel],
                                                     rows: list[tuple[float, float]]) -> None:
    model = models[1]
    reference = Reference.from_model(model)
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), 2)
    dense = check(matrix, model.signature, PERMISSIVE)
    assert dense.table.dense is not None  # the all-numeric fast path: columns are views of the matrix
    by_matrix = Counts(reference)
    by_matrix.add(dense.table.columns, np.nan_to_num(matrix[:, 0]))
    by_frame = Counts(reference)
    frame = pd.DataFrame(matrix, columns=["x1", "x2"])
    by_frame.add(check(frame, model.signature, PERMISSIVE).table.columns, np.nan_to_num(matrix[:, 0]))
    assert by_matrix == by_frame and by_matrix.rows == len(rows)
