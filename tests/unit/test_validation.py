from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipml.errors import SchemaError
from shipml.package.signature import OutputSpec, Signature, as_frame, infer_inputs
from shipml.package.validation import InputPolicy, check


@pytest.fixture
def sig() -> Signature:
    df = pd.DataFrame({
        "age": [20, 30, 40],
        "income": [1.5, 2.5, np.nan],
        "state": ["CA", "NY", "CA"],
        "member": [True, False, True],
        "joined": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
        "tier": pd.Categorical(["gold", "silver", "gold"]),
    })
    frame, kind = as_frame(df)
    return Signature(inputs=infer_inputs(frame), input_kind=kind, outputs=OutputSpec(task="regression"))


def rules(checked: object) -> list[tuple[int | None, str | None, str]]:
    return [(p.row, p.column, p.rule) for p in checked.problems]  # type: ignore[attr-defined]


def test_inference_records_types_ranges_categories(sig: Signature) -> None:
    spec = {c.name: c for c in sig.inputs}
    assert (spec["age"].dtype, spec["age"].min, spec["age"].max, spec["age"].nullable) == ("int", 20, 40, False)
    assert (spec["income"].dtype, spec["income"].nullable) == ("float", True)
    assert spec["state"].categories == ["CA", "NY"]
    assert spec["member"].dtype == "bool"
    assert spec["joined"].dtype == "datetime" and spec["joined"].min.startswith("2024-01-01")
    assert (spec["tier"].dtype, spec["tier"].pandas_dtype, spec["tier"].categories) == (
        "string", "category", ["gold", "silver"])


def test_mixed_type_sample_column_is_refused() -> None:
    with pytest.raises(SchemaError, match="'x'"):
        infer_inputs(pd.DataFrame({"x": [1, "a", 2.5]}))
    with pytest.raises(SchemaError, match="no rows"):
        infer_inputs(pd.DataFrame({"x": []}))


def test_records_columnar_and_rows_are_equivalent(sig: Signature) -> None:
    record = {"age": 25, "income": 2.0, "state": "NY", "member": False, "joined": "2024-01-15", "tier": "gold"}
    by_records = check([record, record], sig)
    by_columns = check({k: [v, v] for k, v in record.items()}, sig)
    by_rows = check([list(record.values())] * 2, sig)
    for c in (by_records, by_columns, by_rows):
        assert c.ok, c.problems
        frame = c.table.frame(sig)
        assert frame["age"].tolist() == [25, 25] and frame["tier"].dtype == "category"
        assert str(frame["joined"].iloc[0]).startswith("2024-01-15")


def test_each_rule_names_row_column_and_rule(sig: Signature) -> None:
    rows = [
        {"age": 25.5, "income": None, "state": "TX", "member": "yes", "joined": "2030-01-01", "tier": "gold"},
        {"age": "x", "income": 1e9, "state": 5, "member": True, "joined": "not a date", "tier": "bronze"},
        {"income": 2.0, "state": "CA", "member": None, "joined": "2024-01-02", "tier": "gold", "extra": 1},
    ]
    found = rules(check(rows, sig))
    assert (None, "extra", "extra_column") in found
    assert (0, "age", "type") in found and (1, "age", "type") in found
    assert (2, "age", "null") in found  # a key missing from one record is a null there
    assert (0, "state", "unseen_category") in found and (1, "state", "type") in found
    assert (0, "member", "type") in found and (2, "member", "null") in found
    assert (1, "income", "out_of_range") in found
    assert (0, "joined", "out_of_range") in found and (1, "joined", "type") in found
    assert (1, "tier", "unseen_category") in found
    assert (0, "income", "null") not in found  # income was nullable in training


def test_policies_decide_error_or_warning(sig: Signature) -> None:
    row = {"age": 99, "income": 2.0, "state": "TX", "member": True, "joined": "2024-01-02", "tier": "gold", "z": 1}
    lenient = check([row], sig, InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore"))
    assert lenient.ok and {p.rule: p.severity for p in lenient.problems} == {
        "out_of_range": "warning", "unseen_category": "warning"}
    strict = check([row], sig, InputPolicy(out_of_range="reject", unseen_category="reject", extra_columns="reject"))
    assert not strict.ok and strict.bad_rows.tolist() == [True]
    assert {p.severity for p in strict.problems} == {"error"}


def test_numbers_as_strings_and_whole_floats_are_accepted(sig: Signature) -> None:
    row = {"age": "31", "income": "2.25", "state": "CA", "member": "true", "joined": "2024-02-02", "tier": "gold"}
    c = check([row, {**row, "age": 32.0}], sig)
    assert c.ok, c.problems
    assert c.table.frame(sig)["age"].tolist() == [31, 32]


def test_problems_are_capped_but_all_counted(sig: Signature) -> None:
    n = 500
    data = {"age": ["bad"] * n, "income": [1.5] * n, "state": ["CA"] * n, "member": [True] * n,
            "joined": ["2024-01-02"] * n, "tier": ["gold"] * n}
    c = check(data, sig, InputPolicy(max_problems=10))
    assert len(c.problems) == 10 and c.n_errors == n and c.bad_rows.all()


def test_only_bad_rows_are_marked(sig: Signature) -> None:
    good = {"age": 30, "income": 2.0, "state": "CA", "member": True, "joined": "2024-01-02", "tier": "gold"}
    c = check([good, {**good, "age": None}, good], sig)
    assert c.bad_rows.tolist() == [False, True, False]
    assert c.table.take(np.flatnonzero(~c.bad_rows)).n_rows == 2


def test_wrong_width_matrix_is_a_shape_error(sig: Signature) -> None:
    with pytest.raises(SchemaError, match="6"):
        check(np.zeros((2, 4)), sig)
    with pytest.raises(SchemaError, match="lengths"):
        check({"age": [1, 2], "income": [1.0]}, sig)
