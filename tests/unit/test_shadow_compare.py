"""Shadow comparison (shipml.release.shadow.compare): exact counts on known answers, and no exception for any
shapes or dtypes a shadow model may return."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shipml.release import Disagreement, compare

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dtypes = (hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes()
          | hnp.datetime64_dtypes() | hnp.timedelta64_dtypes())
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
python_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3) | st.binary(max_size=3)
arrays = hnp.arrays(dtypes, shapes) | hnp.arrays(object, shapes, elements=python_values)
answers = st.none() | arrays


def test_identical_answers_agree() -> None:
    pred, proba = np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    assert compare(pred, proba, pred.copy(), proba.copy()) == Disagreement(3, 0, 0.0, 3)


def test_labels_and_probabilities_are_counted_row_by_row() -> None:
    got = compare(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [1.0, 0.0]]),
                  np.array([0, 0, 1, 1]), np.array([[0.7, 0.3], [0.6, 0.4], [0.4, 0.6], [0.0, 1.0]]))
    assert (got.rows, got.labels_differ, got.proba_rows) == (4, 2, 4)
    assert got.proba_abs_diff_sum == pytest.approx(0.2 + 0.4 + 0.0 + 1.0)


def test_only_the_rows_both_answered_are_counted() -> None:
    got = compare(np.array(["a", "b", "c"]), None, np.array(["a", "x"]), None)
    assert got == Disagreement(rows=2, labels_differ=1, proba_abs_diff_sum=0.0, proba_rows=0)


@pytest.mark.parametrize(("primary", "shadow", "differ"), [
    (np.array([1, 2, 3]), np.array([1.0, 2.0, 3.5]), 1),  # int and float labels compare by value
    (np.array([np.nan, 1.0]), np.array([np.nan, 2.0]), 1),  # NaN is the same label as NaN
    (np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 5]]), 1),  # multi-output: a row differs in any value
    (np.array([[1, 2], [3, 4]]), np.array([1, 3]), 2),  # another width: every row differs
    (np.array([1, 2]), np.array(["1", "2"]), 2),  # 1 and "1" are different labels
    (np.array(["a", "b"]), np.array([b"a", b"b"]), 2),  # text and bytes too
    (np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object), 1),
    (np.array(["2026-01-01", "NaT"], dtype="datetime64[D]"), np.array(["2026-01-01", "NaT"], dtype="datetime64[D]"),
     0),
    (np.array(5), np.array([5, 6]), 0),  # a scalar is one row
])
def test_labels_compare_across_dtypes_and_shapes(primary: np.ndarray, shadow: np.ndarray, differ: int) -> None:
    assert compare(primary, None, shadow, None).labels_differ == differ


def test_probabilities_of_other_classes_or_not_finite_are_not_counted() -> None:
    pred = np.array([0, 1])
    two, three = np.array([[0.5, 0.5], [0.1, 0.9]]), np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    assert compare(pred, two, pred, three).proba_rows == 0
    assert compare(pred, two, pred, None).proba_rows == 0
    assert compare(pred, two, pred, np.array([["x", "y"], ["z", "w"]])).proba_rows == 0
    with_nan = compare(pred, two, pred, np.array([[np.nan, 0.5], [0.2, 0.8]]))
    assert (with_nan.proba_rows, with_nan.proba_abs_diff_sum) == (1, pytest.approx(0.1))


def test_probability_columns_are_matched_by_class_when_classes_are_given() -> None:
    pred = np.array(["no", "yes"])
    primary, shadow = np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([[0.1, 0.9], [0.7, 0.3]])
    aligned = compare(pred, primary, pred, shadow, primary_classes=["no", "yes"], shadow_classes=["yes", "no"])
    assert (aligned.proba_rows, aligned.proba_abs_diff_sum) == (2, 0.0)
    assert compare(pred, primary, pred, shadow).proba_abs_diff_sum == pytest.approx(0.8 + 0.4)
    assert compare(pred, primary, pred, shadow, primary_classes=[np.int64(0), 1],
                   shadow_classes=[1, 0]).proba_abs_diff_sum == 0.0
    for theirs in (["no", "maybe"], ["no"], ["no", "no"], [["unhashable"], "no"]):
        assert compare(pred, primary, pred, shadow, primary_classes=["no", "yes"],
                       shadow_classes=theirs).proba_rows == 0


@SETTINGS
@given(primary_pred=answers, primary_proba=answers, shadow_pred=answers, shadow_proba=answers)
def test_compare_never_raises_whatever_the_shapes_and_dtypes(primary_pred: Any, primary_proba: Any,
                                                              shadow_pred: Any, shadow_proba: Any) -> None:
    got = compare(primary_pred, primary_proba, shadow_pred, shadow_proba)
    assert 0 <= got.labels_differ <= got.rows and got.proba_rows >= 0
    assert got.proba_abs_diff_sum >= 0 and np.isfinite(got.proba_abs_diff_sum)
    assert got.proba_rows > 0 or got.proba_abs_diff_sum == 0


@SETTINGS
@given(pred=arrays, proba=answers)
def test_an_answer_compared_with_itself_agrees(pred: np.ndarray, proba: Any) -> None:
    got = compare(pred, proba, pred.copy(), None if proba is None else proba.copy())
    assert got.labels_differ == 0
    assert got.proba_abs_diff_sum == 0.0
    assert got.rows == (1 if pred.ndim == 0 else pred.shape[0])


@SETTINGS
@given(rows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30))
def test_the_label_count_is_the_number_of_differing_rows(rows: list[tuple[int, int]]) -> None:
    a, b = np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int32)
    assert compare(a, None, b, None) == Disagreement(len(rows), sum(x != y for x, y in rows), 0.0, 0)


def test_lists_and_ragged_nesting_are_taken_or_skipped() -> None:
    assert compare([1, 2], [[0.5, 0.5], [1, 0]], [1, 3], [[0.5, 0.5], [0, 1]]) == Disagreement(2, 1, 1.0, 2)
    assert compare([[1], [1, 2]], None, [1, 2], None) == Disagreement(0, 0, 0.0, 0)
