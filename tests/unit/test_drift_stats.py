"""The drift statistics on small inputs whose figures are worked out by hand, and the binned KS statistic's
definition (it is not scipy's exact two-sample statistic, and says so)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.monitoring.drift import EPSILON, Counts, chi2_cramers_v, drift, ks_binned, psi
from shipml.monitoring.reference import Reference
from shipml.package.profile import numeric_profile
from shipml.package.signature import ColumnSpec, OutputSpec, Signature


def test_psi_by_hand() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert psi(np.array([50, 50]), np.array([1, 3])) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == 0.0
    # an empty slot counts as EPSILON: (0.5 - 1) ln(0.5 / 1) + (0.5 - 1e-4) ln(0.5 / 1e-4)
    expected = 0.5 * math.log(2) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert psi(np.array([100, 0]), np.array([5, 5])) == pytest.approx(expected)
    assert math.isnan(psi(np.array([1, 2]), np.array([0, 0])))
    assert math.isnan(psi(np.array([0, 0]), np.array([1, 0])))


def test_ks_by_hand() -> None:
    # cumulative shares: reference 0.25, 0.75, 1.0; current 0.5, 0.5, 1.0 -> largest gap 0.25
    assert ks_binned(np.array([1, 2, 1]), np.array([2, 0, 2])) == pytest.approx(0.25)
    assert ks_binned(np.array([4, 0, 0]), np.array([0, 0, 7])) == pytest.approx(1.0)
    assert math.isnan(ks_binned(np.array([0, 0]), np.array([1, 1])))


def test_chi2_and_cramers_v_by_hand() -> None:
    # table [[30, 10], [20, 40]]: expected [[20, 20], [30, 30]], chi2 = 100/20 * 2 + 100/30 * 2 = 16.667
    chi2, v = chi2_cramers_v(np.array([30, 10]), np.array([20, 40]))
    assert chi2 == pytest.approx(50 / 3)
    assert v == pytest.approx(math.sqrt(50 / 3 / 100))
    # empty columns are left out; one column left: nothing to compare
    assert chi2_cramers_v(np.array([5, 0, 0]), np.array([3, 0, 0])) == (0.0, 0.0)
    # complete separation: V = 1
    assert chi2_cramers_v(np.array([10, 0]), np.array([0, 10]))[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in chi2_cramers_v(np.array([1, 2]), np.array([0, 0])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=8).flatmap(
    lambda r: st.tuples(st.just(r), st.lists(st.integers(0, 50), min_size=len(r), max_size=len(r)))))
def test_chi2_is_scipys_without_correction(tables: tuple[list[int], list[int]]) -> None:
    from scipy.stats import chi2_contingency

    ref, cur = np.array(tables[0]), np.array(tables[1])
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    chi2, v = chi2_cramers_v(ref, cur)
    if ref.sum() == 0 or cur.sum() == 0:
        assert math.isnan(chi2)
    elif table.shape[1] < 2:
        assert chi2 == 0.0
    else:
        expected = chi2_contingency(table, correction=False).statistic
        assert chi2 == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert v == pytest.approx(math.sqrt(expected / table.sum()), rel=1e-9, abs=1e-9)


def numeric_reference(training: np.ndarray) -> Reference:
    spec = ColumnSpec(name="x", dtype="float", pandas_dtype="float64", nullable=True)
    signature = Signature(inputs=[spec], input_kind="dataframe", outputs=OutputSpec(task="regression"))
    return Reference.build("m", "1.0.0", signature, {"features": {"x": numeric_profile(training)}})


def test_ks_is_the_gap_at_the_bin_edges() -> None:
    """Training 0..9 (deciles at 0, 0.9, 1.8, ...); current values sit on and between edges."""
    reference = numeric_reference(np.arange(10.0))
    current = np.array([0.0, 0.5, 0.9, 0.9, 5.0, 9.0, 9.0, 9.0])
    counts = Counts(reference)
    counts.add({"x": current})
    edges = reference.features[0].edges
    # the definition: after each slot (below, each bin, above), the share of values < the next edge (<= the last)
    cut = [*edges[1:-1]]
    ref_cdf = [np.mean(np.arange(10.0) < e) for e in cut] + [1.0]
    cur_cdf = [np.mean(current < e) for e in cut] + [1.0]
    expected = max(abs(a - b) for a, b in zip(ref_cdf, cur_cdf, strict=True))
    report = drift(reference, counts)
    assert report.features[0].ks == pytest.approx(expected)
    from scipy.stats import ks_2samp

    exact = ks_2samp(np.arange(10.0), current, method="asymp").statistic
    assert report.features[0].ks <= exact + 1e-12  # the binned figure never overstates the exact one


def test_ks_leaves_nulls_to_the_null_share() -> None:
    reference = numeric_reference(np.arange(100.0))
    counts = Counts(reference)
    counts.add({"x": np.concatenate([np.arange(100.0), np.full(100, np.nan)])})  # the same values, and nulls
    figures = drift(reference, counts).features[0]
    assert figures.ks == 0.0 and figures.null_share == 0.5 and figures.reference_null_share == 0.0
    assert figures.psi > 1  # while PSI, over every slot, sees the nulls


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=2, max_size=60), st.lists(st.integers(-25, 25), min_size=1,
                                                                          max_size=60))
def test_binned_ks_is_at_most_the_exact_statistic(training: list[int], current: list[int]) -> None:
    from scipy.stats import ks_2samp

    reference = numeric_reference(np.array(training, dtype=float))
    counts = Counts(reference)
    counts.add({"x": np.array(current, dtype=float)})
    ks = drift(reference, counts).features[0].ks
    assert 0.0 <= ks <= ks_2samp(training, current, method="asymp").statistic + 1e-12
