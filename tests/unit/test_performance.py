"""Live performance: realised figures equal scikit-learn's; the confidence-based estimate is close on calibrated
probabilities; the label/score windows are bounded, keep the newest rows and travel as strict bytes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from shipml.monitoring.performance import (
    CLASSIFICATION_METRICS,
    ESTIMATED_METRICS,
    LabelWindow,
    ScoreWindow,
    estimated,
    realised,
)

# -- realised == scikit-learn --------------------------------------------------------------------------------


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    kind = draw(st.sampled_from(["int", "str", "bool"]))
    if kind == "bool":
        classes: list[Any] = [False, True]
    else:
        k = draw(st.integers(2, 5))
        pool = (draw(st.lists(st.integers(-50, 50), min_size=k, max_size=k, unique=True)) if kind == "int"
                else draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=k, max_size=k, unique=True)))
        classes = sorted(pool)
    n = draw(st.integers(1, 60))
    present = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=len(classes), unique=True))
    targets = draw(st.lists(st.sampled_from(present), min_size=n, max_size=n))
    predictions = draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    raw = rng.random((n, len(classes))) + 1e-3
    if draw(st.booleans()):  # ties in the scores
        raw = np.round(raw, 1) + 1e-3
    proba = raw / raw.sum(axis=1, keepdims=True)
    return np.array(targets), np.array(predictions), proba, classes


@settings(max_examples=150, deadline=None)
@given(labelled())
def test_realised_equals_scikit_learn(case: tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]) -> None:
    targets, predictions, proba, classes = case
    got = realised(targets, predictions, proba, classes, "classification")
    assert set(got) == set(CLASSIFICATION_METRICS)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(targets, predictions))
    if len(classes) == 2:
        options: dict[str, Any] = {"average": "binary", "pos_label": classes[1], "zero_division": 0}
    else:
        options = {"average": "macro", "zero_division": 0}
    assert got["precision"] == pytest.approx(skm.precision_score(targets, predictions, **options))
    assert got["recall"] == pytest.approx(skm.recall_score(targets, predictions, **options))
    assert got["f1"] == pytest.approx(skm.f1_score(targets, predictions, **options))
    present = set(targets.tolist())
    if len(classes) == 2:
        expected = (skm.roc_auc_score(targets == classes[1], proba[:, 1]) if len(present) == 2 else math.nan)
    elif len(present) < 2:
        expected = math.nan
    elif present == set(classes):
        expected = skm.roc_auc_score(targets, proba, multi_class="ovr", average="macro", labels=classes)
    else:  # scikit-learn refuses an absent class; we average the one-vs-rest AUCs where they are defined
        aucs = [skm.roc_auc_score(targets == c, proba[:, i]) for i, c in enumerate(classes) if c in present]
        expected = float(np.mean(aucs))
    assert got["roc_auc"] == pytest.approx(expected, nan_ok=True, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=50))
def test_realised_regression_equals_scikit_learn(pairs: list[tuple[float, float]]) -> None:
    targets, predictions = np.array(pairs).T
    got = realised(targets, predictions, None, None, "regression")
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(targets, predictions), rel=1e-9, abs=1e-9)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(targets, predictions), rel=1e-9, abs=1e-9)


def test_realised_degenerate_cases_give_nan_not_exceptions() -> None:
    empty = realised([], [], np.empty((0, 2)), [0, 1], "classification")
    assert set(empty) == set(CLASSIFICATION_METRICS) and all(math.isnan(v) for v in empty.values())
    assert all(math.isnan(v) for v in realised([], [], None, None, "regression").values())
    one_class = realised([1, 1, 1], [1, 0, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], [0, 1], "classification")
    assert one_class["accuracy"] == pytest.approx(2 / 3) and math.isnan(one_class["roc_auc"])
    assert one_class["precision"] == 1.0 and one_class["recall"] == pytest.approx(2 / 3)
    wrong = realised(["a", "b", "c"], ["b", "c", "a"], None, ["a", "b", "c"], "classification")
    assert wrong["accuracy"] == 0.0 and wrong["f1"] == 0.0 and math.isnan(wrong["roc_auc"])
    assert realised([1.0], [2.0], None, None, "other") == {}
    with pytest.raises(ValueError, match="must be numbers"):
        realised(["high", "low"], [1.0, 2.0], None, None, "regression")
    with pytest.raises(ValueError, match="aligned"):
        realised([1, 0], [1], None, [0, 1], "classification")
    with pytest.raises(ValueError, match="do not match"):
        realised([1, 0], [1, 0], [[0.5, 0.5]], [0, 1], "classification")


def test_rows_without_probabilities_are_left_out_of_roc_auc() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan], [0.4, 0.6]])
    got = realised([0, 1, 0, 0], [0, 1, 1, 1], proba, [0, 1], "classification")
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score([0, 1, 0], [0.1, 0.8, 0.6]))


# -- estimated (CBPE) ----------------------------------------------------------------------------------------


def _calibrated(rows: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities from a softmax over random logits, and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.6, (rows, k)) + rng.normal(0.0, 0.5, k)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = (rng.random(rows)[:, None] > np.cumsum(proba, axis=1)).sum(axis=1)
    return proba, targets, proba.argmax(axis=1)


@pytest.mark.parametrize(("k", "seed"), [(2, 1), (2, 7), (3, 2), (4, 3)])
def test_estimate_is_close_to_realised_on_calibrated_probabilities(k: int, seed: int) -> None:
    proba, targets, predictions = _calibrated(20_000, k, seed)
    classes = list(range(k))
    truth = realised(targets, predictions, proba, classes, "classification")
    guess = estimated(proba, classes, predictions)
    assert set(guess) == set(ESTIMATED_METRICS)
    for name in CLASSIFICATION_METRICS:
        assert guess[f"estimated_{name}"] == pytest.approx(truth[name], abs=0.02), name


def test_estimate_of_an_overconfident_model_is_too_optimistic() -> None:
    """The calibration assumption matters: sharpen calibrated probabilities and the estimate overshoots."""
    proba, targets, predictions = _calibrated(20_000, 2, 5)
    sharp = proba**4 / (proba**4).sum(axis=1, keepdims=True)
    truth = realised(targets, predictions, sharp, [0, 1], "classification")
    guess = estimated(sharp, [0, 1], predictions)
    assert guess["estimated_accuracy"] > truth["accuracy"] + 0.05


def test_estimate_without_probabilities_or_rows_is_nan() -> None:
    for args in [(None, [0, 1], [0, 1]), (np.empty((0, 2)), [0, 1], []), ([[np.nan, np.nan]], [0, 1], [1])]:
        assert all(math.isnan(v) for v in estimated(*args).values())
    # a prediction that is not one of the classes counts as the most probable class
    assert estimated([[0.3, 0.7]], ["a", "b"], ["zzz"])["estimated_accuracy"] == pytest.approx(0.7)


# -- windows -------------------------------------------------------------------------------------------------


def test_label_window_is_bounded_and_keeps_the_newest_rows_by_time() -> None:
    window = LabelWindow(5, task="classification", classes=["a", "b"])
    times = np.array([10.0, 3.0, 7.0, 1.0, 9.0, 2.0, 8.0, 4.0])
    targets = np.array(list("abababab"), dtype=object)
    window.add(times, targets, targets, np.tile([0.4, 0.6], (8, 1)))
    assert len(window) == 5
    assert sorted(window.times.tolist()) == [4.0, 7.0, 8.0, 9.0, 10.0]
    window.add(0.5, ["a"], ["b"])  # older than everything held: it does not displace a newer row
    assert sorted(window.times.tolist()) == [4.0, 7.0, 8.0, 9.0, 10.0]
    window.add(11.0, ["a"], ["b"])
    assert sorted(window.times.tolist()) == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_window_metrics_are_realised_over_the_newest_rows() -> None:
    rng = np.random.default_rng(0)
    proba, targets, predictions = _calibrated(300, 3, 11)
    times = rng.permutation(300).astype(float)
    window = LabelWindow(200, task="classification", classes=[0, 1, 2])
    for chunk in np.array_split(np.arange(300), 7):
        window.add(times[chunk], targets[chunk], predictions[chunk], proba[chunk])
    newest = np.argsort(times)[-50:]
    assert window.metrics(over_rows=50) == pytest.approx(
        realised(targets[newest], predictions[newest], proba[newest], [0, 1, 2], "classification"))
    held = np.argsort(times)[-200:]
    assert window.metrics() == pytest.approx(
        realised(targets[held], predictions[held], proba[held], [0, 1, 2], "classification"))
    scores = ScoreWindow(200, task="classification", classes=[0, 1, 2])
    scores.add(times, predictions, proba)
    assert scores.metrics() == pytest.approx(estimated(proba[held], [0, 1, 2], predictions[held]))
    regression = LabelWindow(10, task="regression")
    regression.add(1.0, [1.0, 2.0], [1.5, 2.0])
    assert regression.metrics() == pytest.approx({"mae": 0.25, "rmse": math.sqrt(0.125)})
    assert ScoreWindow(10, task="regression").metrics() == {}
    with pytest.raises(ValueError, match="over_rows"):
        window.metrics(over_rows=0)


def test_window_refuses_bad_input_by_name() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LabelWindow(0, task="classification")
    with pytest.raises(ValueError, match="task"):
        LabelWindow(3, task="ranking")
    window = LabelWindow(3, task="classification", classes=[0, 1])
    with pytest.raises(ValueError, match="predictions has 1 rows"):
        window.add(1.0, [0, 1], [0])
    with pytest.raises(ValueError, match="probabilities"):
        window.add(1.0, [0], [0], [[0.1, 0.2, 0.7]])
    with pytest.raises(ValueError, match="finite"):
        window.add(float("nan"), [0], [0])
    assert len(window) == 0


def test_merge_keeps_the_newest_rows_of_both() -> None:
    mine = LabelWindow(4, task="classification", classes=[0, 1])
    mine.add([1.0, 5.0, 6.0], [0, 1, 1], [0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    theirs = LabelWindow(4, task="classification", classes=[0, 1])
    theirs.add([2.0, 7.0, 8.0], [1, 0, 0], [1, 0, 1], [[0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    mine.merge(LabelWindow.from_bytes(theirs.to_bytes()))
    assert mine.times.tolist() == [5.0, 6.0, 7.0, 8.0]
    assert mine.columns["targets"].tolist() == [1, 1, 0, 0]
    assert mine.probabilities is not None and mine.probabilities[:, 1].tolist() == [0.8, 0.4, 0.2, 0.6]
    with pytest.raises(ValueError, match="different models"):
        mine.merge(LabelWindow(4, task="classification", classes=[0, 2]))
    with pytest.raises(ValueError, match="ScoreWindow"):
        mine.merge(ScoreWindow(4, task="classification", classes=[0, 1]))  # type: ignore[arg-type]


label_values = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=1).map(lambda v: v[0]),
    st.text(max_size=8), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2e9), label_values, label_values), max_size=30),
       st.integers(1, 12), st.booleans())
def test_window_bytes_round_trip(rows: list[tuple[float, Any, Any]], capacity: int, numeric: bool) -> None:
    window = LabelWindow(capacity, task="classification", classes=["x", "y"])
    if rows:
        times = [r[0] for r in rows]
        targets = np.array([float(i) for i in range(len(rows))]) if numeric else np.array(
            [r[1] for r in rows], dtype=object)
        predictions = np.array([r[2] for r in rows], dtype=object)
        proba = np.random.default_rng(len(rows)).dirichlet([1, 1], len(rows))
        window.add(times, targets, predictions, proba)
    again = LabelWindow.from_bytes(window.to_bytes())
    assert (again.capacity, again.task, again.classes, len(again)) == (capacity, "classification", ["x", "y"],
                                                                       len(window))
    assert again.times.tolist() == window.times.tolist()
    assert again.columns["targets"].tolist() == window.columns["targets"].tolist()
    assert again.columns["predictions"].tolist() == window.columns["predictions"].tolist()
    assert again.probabilities is not None and window.probabilities is not None
    assert again.probabilities.tolist() == window.probabilities.tolist()
    assert again.to_bytes() == LabelWindow.from_bytes(again.to_bytes()).to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused(data: bytes) -> None:
    for cls in (LabelWindow, ScoreWindow):
        with pytest.raises(ValueError, match="window"):
            cls.from_bytes(data)
        with pytest.raises(ValueError, match="window"):
            cls.from_bytes(b"SHIPMLW1" + data)


def _sample_window() -> LabelWindow:
    window = LabelWindow(50, task="classification", classes=[0, 1])
    window.add(np.arange(20.0), np.arange(20) % 2, np.arange(20) % 3 % 2, np.full((20, 2), 0.5))
    return window


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corrupt_or_truncated_bytes_are_refused(data: st.DataObject) -> None:
    good = _sample_window().to_bytes()
    if data.draw(st.booleans()):
        position = data.draw(st.integers(0, len(good) - 1))
        flip = data.draw(st.integers(1, 255))
        bad = good[:position] + bytes([good[position] ^ flip]) + good[position + 1:]
    else:
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    with pytest.raises(ValueError, match="window"):
        LabelWindow.from_bytes(bad)


def test_foreign_windows_are_refused() -> None:
    scores = ScoreWindow(5, task="classification", classes=[0, 1])
    scores.add(1.0, [1], [[0.2, 0.8]])
    with pytest.raises(ValueError, match="'scores' window"):
        LabelWindow.from_bytes(scores.to_bytes())
    assert ScoreWindow.from_bytes(scores.to_bytes()).metrics()["estimated_accuracy"] == pytest.approx(0.8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0]), min_size=2, max_size=12))
def test_estimated_roc_auc_is_the_expected_share_of_ordered_pairs(p: list[float]) -> None:
    """Brute force over every pair i != j: sum p_i (1 - p_j) [p_i > p_j] (ties one half) / sum p_i (1 - p_j)."""
    num = den = 0.0
    for i, pi in enumerate(p):
        for j, pj in enumerate(p):
            if i != j:
                weight = pi * (1 - pj)
                den += weight
                num += weight * (1.0 if pi > pj else 0.5 if pi == pj else 0.0)
    proba = np.column_stack([1 - np.array(p), p])
    got = estimated(proba, [0, 1], (np.array(p) > 0.5).astype(int))["estimated_roc_auc"]
    assert got == pytest.approx(num / den if den > 0 else math.nan, nan_ok=True)


def test_memory_is_bounded_whatever_the_traffic() -> None:
    window = ScoreWindow(50, task="classification", classes=["a", "b"])
    for i in range(5_000):
        window.add(float(i), ["a", "b"], [[0.9, 0.1], [0.2, 0.8]])
        assert window._held <= 2 * 50 + 2  # rows held before compaction: at most twice the capacity (+ one add)
    assert len(window) == 50 and window.times.tolist() == sorted([float(i) for i in range(4_975, 5_000)] * 2)
