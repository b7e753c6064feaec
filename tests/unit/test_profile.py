"""The reference profile of a datetime input is in seconds since the epoch, whatever unit pandas holds it in."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.package.profile import feature_profile
from shipml.package.signature import ColumnSpec

SPEC = ColumnSpec(name="when", dtype="datetime", pandas_dtype="datetime64[ns]", nullable=True)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "Europe/Paris"])
def test_datetimes_in_any_unit_are_epoch_seconds(unit: str, tz: str | None) -> None:
    stamps = pd.Series(pd.date_range("2024-01-01", periods=3, freq="D", tz=tz, unit=unit))
    stamps[1] = pd.NaT
    profile = feature_profile(SPEC, stamps)
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp() - (3600 if tz else 0)  # Paris is UTC+1 then
    assert profile["unit"] == "epoch_seconds"
    assert (profile["min"], profile["max"]) == (start, start + 2 * 86400)
    assert profile["null_rate"] == pytest.approx(1 / 3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)), min_size=1,
                max_size=20), st.sampled_from(["s", "ms", "us", "ns"]))
def test_profile_seconds_are_the_stamps_seconds(values: list[datetime], unit: str) -> None:
    column = pd.Series(pd.to_datetime(values).as_unit(unit))
    profile = feature_profile(SPEC, column)
    expected = np.array([(pd.Timestamp(v) - pd.Timestamp(0)) / pd.Timedelta(seconds=1) for v in column])
    assert profile["min"] == pytest.approx(expected.min(), abs=1e-3)
    assert profile["max"] == pytest.approx(expected.max(), abs=1e-3)
