"""The example a server shows (``GET /models/NAME``, ``/openapi.json``) is made from the signature and the
reference profile - medians, the most frequent category - never copied from the training rows, and is valid
input under the strictest policy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.package.example import example_row
from shipml.package.profile import build_profile
from shipml.package.signature import OutputSpec, Signature, infer_inputs
from shipml.package.validation import InputPolicy, check

STRICT = InputPolicy(out_of_range="reject", unseen_category="reject", extra_columns="reject")


def described(frame: pd.DataFrame) -> tuple[Signature, dict[str, Any]]:
    signature = Signature(inputs=infer_inputs(frame), input_kind="dataframe",
                          outputs=OutputSpec(task="regression"))
    return signature, build_profile(frame, signature, np.zeros(len(frame)), None)


def assert_valid(row: dict[str, Any], signature: Signature) -> None:
    checked = check([row], signature, STRICT)
    assert checked.problems == [], checked.problems


FINITE = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
COLUMNS = {
    "float": lambda n: st.lists(FINITE | st.none(), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype=float)),
    "int": lambda n: st.lists(st.integers(-10**12, 10**12), min_size=n, max_size=n).map(
        lambda v: pd.Series(v, dtype="int64")),
    "bool": lambda n: st.lists(st.booleans(), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype=bool)),
    "category": lambda n: st.lists(st.sampled_from(["a", "b", "c", "d"]) | st.none(), min_size=n, max_size=n).map(
        lambda v: pd.Series(v, dtype=object)),
    "datetime": lambda n: st.lists(st.datetimes(min_value=pd.Timestamp("1990-01-01").to_pydatetime(),
                                                max_value=pd.Timestamp("2030-01-01").to_pydatetime()),
                                   min_size=n, max_size=n).map(lambda v: pd.Series(pd.to_datetime(v))),
    "datetime_tz": lambda n: st.lists(st.integers(0, 2_000_000_000), min_size=n, max_size=n).map(
        lambda v: pd.Series(pd.to_datetime(v, unit="s", utc=True).tz_convert("Europe/Paris"))),
}


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 40))
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=5))
    return pd.DataFrame({f"{kind}_{i}": draw(COLUMNS[kind](n)) for i, kind in enumerate(kinds)})


@settings(max_examples=150, deadline=None)
@given(frame=frames())
def test_the_example_is_valid_under_the_strictest_policy(frame: pd.DataFrame) -> None:
    signature, profile = described(frame)
    row = example_row(signature, profile)
    assert list(row) == signature.names
    assert_valid(row, signature)
    for column in signature.inputs:
        value = row[column.name]
        if column.dtype in ("int", "float") and value is not None:
            assert column.min is not None and column.max is not None
            assert float(column.min) <= value <= float(column.max)
        if column.dtype == "int" and value is not None:
            assert isinstance(value, int)
        if column.categories is not None and frame[column.name].notna().any():
            counts = frame[column.name].dropna().astype(str).value_counts()
            assert counts[value] == counts.max()  # the most frequent category


def test_numbers_are_rounded_medians_not_training_values() -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"amount": rng.normal(1000, 250, 501), "ratio": rng.random(501),
                          "visits": rng.integers(0, 10_000, 501)})
    signature, profile = described(frame)
    row = example_row(signature, profile)
    assert_valid(row, signature)
    assert row["amount"] == pytest.approx(frame["amount"].median(), abs=0.5)
    assert row["ratio"] == pytest.approx(frame["ratio"].median(), abs=0.005)
    assert row["visits"] == pytest.approx(frame["visits"].median(), abs=50) and isinstance(row["visits"], int)
    for name in ("amount", "ratio"):
        assert row[name] not in set(frame[name])
        assert math.isclose(row[name], round(row[name], 3))


def test_free_text_is_never_copied() -> None:
    """A text column with too many values to list as categories: its values may be names, ids or messages."""
    unique = pd.DataFrame({"note": [f"customer {i} said something private" for i in range(1500)]})
    signature, profile = described(unique)
    assert signature.inputs[0].categories is None
    row = example_row(signature, profile)
    assert row["note"] not in set(unique["note"])
    assert_valid(row, signature)
    common = pd.DataFrame({"word": ["hello"] * 20 + [f"w{i}" for i in range(1200)]})
    signature, profile = described(common)
    assert example_row(signature, profile)["word"] == "hello"  # shared by many rows: typical, not personal


def test_dates_are_the_median_day() -> None:
    frame = pd.DataFrame({"at": pd.date_range("2021-01-01 05:00", periods=51, freq="7h"),
                          "ns": pd.date_range("2021-01-01 05:00", periods=51, freq="7h").as_unit("ns")})
    signature, profile = described(frame)
    row = example_row(signature, profile)
    assert row == {"at": "2021-01-08T00:00:00", "ns": "2021-01-08T00:00:00"}
    assert_valid(row, signature)


def test_nulls_and_empty_profiles() -> None:
    frame = pd.DataFrame({"x": [None, None, None], "y": [1.0, 2.0, 3.0]}, dtype=float)
    signature, profile = described(frame)
    row = example_row(signature, profile)
    assert row == {"x": None, "y": 2.0}
    assert_valid(row, signature)
    assert example_row(signature, {}) == {"x": None, "y": 2.0}  # no profile: from the signature's range
