"""The alert evaluator: pending → firing after ``for``, resolved when the condition stops holding, each feature
judged apart, unknown figures keep the state; checked against a reference model written from the history."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.monitoring.alerts import AlertEvaluator, AlertEvent, AlertKey, Figures, iso_time
from shipml.monitoring.performance import LabelWindow, ScoreWindow
from shipml.monitoring.rules import AlertRule

NAN = math.nan
KEY = AlertKey("churn", "churn", "1.0.0")


# A stand-in for shipml.monitoring.drift's report (helper "drift"), with the contract's attribute names.
@dataclass
class StandInFeatureDrift:
    name: str
    psi: float = 0.0
    kind: str = "numeric"
    rows: int = 1000
    ks: float = 0.0
    chi2: float = NAN
    cramers_v: float = NAN
    null_share: float = 0.0
    reference_null_share: float = 0.0
    out_of_range_share: float = 0.0
    unseen_share: float = NAN


@dataclass
class StandInPredictionDrift:
    kind: str = "classification"
    psi: float = 0.0
    ks: float = NAN
    chi2: float = 0.0
    shares: dict[str, float] = field(default_factory=dict)
    reference_shares: dict[str, float] = field(default_factory=dict)
    mean: float = NAN
    reference_mean: float = NAN


@dataclass
class StandInDriftReport:
    features: tuple[StandInFeatureDrift, ...]
    prediction: StandInPredictionDrift | None = None
    rows: int = 1000
    enough: bool = True


def drift(enough: bool = True, prediction: StandInPredictionDrift | None = None, **psi: float) -> Figures:
    features = tuple(StandInFeatureDrift(name, value) for name, value in psi.items())
    return Figures(drift=StandInDriftReport(features, prediction, enough=enough))


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate(fields)


def states(events: list[AlertEvent]) -> list[tuple[str, str | None, str]]:
    return [(e.alert, e.feature or e.label, e.state) for e in events]


def test_pending_then_firing_after_for_then_resolved_each_feature_apart() -> None:
    evaluator = AlertEvaluator([rule(name="drift", when="psi > 0.2", feature="*", **{"for": "5m"})],
                               default_over_rows=100)
    assert evaluator.evaluate(0, KEY, drift(age=0.5, income=0.1)) == []
    assert evaluator.evaluate(299, KEY, drift(age=0.5, income=0.3)) == []  # age pending for 299 s
    events = evaluator.evaluate(300, KEY, drift(age=0.6, income=0.3))
    assert states(events) == [("drift", "age", "firing")]
    assert events[0].since == 0 and events[0].at == 300 and events[0].value == 0.6
    assert [a.feature for a in evaluator.active()] == ["age"]
    assert evaluator.evaluate(400, KEY, drift(age=0.6, income=0.3)) == []  # firing stays firing, no repeat
    assert states(evaluator.evaluate(599, KEY, drift(age=0.6, income=0.3))) == [("drift", "income", "firing")]
    events = evaluator.evaluate(700, KEY, drift(age=0.1, income=0.3))
    assert states(events) == [("drift", "age", "resolved")]
    assert events[0].value == 0.1 and events[0].since == 0
    assert [a.feature for a in evaluator.active()] == ["income"]


def test_a_break_in_the_condition_restarts_the_wait() -> None:
    evaluator = AlertEvaluator([rule(name="d", when="psi >= 0.2", feature="age", **{"for": 300})],
                               default_over_rows=1)
    evaluator.evaluate(0, KEY, drift(age=0.2))
    evaluator.evaluate(100, KEY, drift(age=0.19))  # pending → idle
    evaluator.evaluate(200, KEY, drift(age=0.3, other=9.0))  # pending since 200; "other" is not this rule's
    assert evaluator.evaluate(450, KEY, drift(age=0.3)) == []
    assert states(evaluator.evaluate(500, KEY, drift(age=0.3))) == [("d", "age", "firing")]


def test_unknown_figures_keep_the_state() -> None:
    evaluator = AlertEvaluator([rule(name="d", when="psi > 0.2", feature="*", **{"for": 60})],
                               default_over_rows=1)
    evaluator.evaluate(0, KEY, drift(age=0.5))
    assert evaluator.evaluate(30, KEY, drift(enough=False, age=0.0)) == []  # not enough rows: pending kept
    assert evaluator.evaluate(45, KEY, drift(age=NAN)) == []
    assert evaluator.evaluate(50, KEY, Figures()) == []  # no drift report at all
    assert states(evaluator.evaluate(60, KEY, drift(age=0.5))) == [("d", "age", "firing")]
    assert evaluator.evaluate(70, KEY, drift(enough=False, age=0.0)) == []  # firing kept
    assert evaluator.evaluate(80, KEY, drift(age=NAN)) == []
    assert len(evaluator.active()) == 1
    assert states(evaluator.evaluate(90, KEY, drift(age=0.0))) == [("d", "age", "resolved")]
    assert evaluator.active() == []


def test_prediction_rules_by_label() -> None:
    evaluator = AlertEvaluator([
        rule(name="positives", when="prediction_share outside [0.05, 0.3]", label="1"),
        rule(name="pred-psi", when="prediction_psi > 0.25"),
        rule(name="pred-mean", when="prediction_mean < 10"),
    ], default_over_rows=1)
    calm = StandInPredictionDrift(psi=0.1, shares={"0": 0.9, "1": 0.1})
    assert evaluator.evaluate(0, KEY, drift(prediction=calm)) == []
    shifted = StandInPredictionDrift(psi=0.4, shares={"0": 0.5, "1": 0.5})
    events = evaluator.evaluate(10, KEY, drift(prediction=shifted))
    assert states(events) == [("positives", "1", "firing"), ("pred-psi", None, "firing")]
    assert events[0].to_dict()["label"] == "1" and events[0].metric == "prediction_share"
    too_few = StandInPredictionDrift(psi=0.4, shares={"0": 0.99, "1": 0.01})
    assert evaluator.evaluate(20, KEY, drift(prediction=too_few)) == []  # still outside, below now
    missing = StandInPredictionDrift(psi=0.0, shares={"0": 1.0})  # a share not reported is unknown
    assert states(evaluator.evaluate(30, KEY, drift(prediction=missing))) == [("pred-psi", None, "resolved")]
    regression = StandInPredictionDrift(kind="regression", psi=0.0, mean=3.0)
    assert states(evaluator.evaluate(40, KEY, drift(prediction=regression))) == [("pred-mean", None, "firing")]


def test_performance_rules_over_their_rows() -> None:
    evaluator = AlertEvaluator([
        rule(name="acc100", when="accuracy < 0.9", over_rows=100),
        rule(name="acc", when="accuracy < 0.9"),
        rule(name="est", when="estimated_accuracy < 0.7", over_rows=50),
    ], default_over_rows=200)
    labels = LabelWindow(200, task="classification", classes=[0, 1])
    scores = ScoreWindow(200, task="classification", classes=[0, 1])
    labels.add(np.arange(99.0), np.ones(99, int), np.zeros(99, int))  # all wrong, but 99 rows < 100
    scores.add(np.arange(49.0), np.zeros(49, int), np.tile([0.6, 0.4], (49, 1)))
    figures = Figures(performance={"accuracy": 0.0, "estimated_accuracy": 0.6}, labelled_rows=99,
                      labels=labels, scores=scores)
    assert evaluator.evaluate(0, KEY, figures) == []
    labels.add(99.0, [1], [1])
    scores.add(49.0, [0], [[0.6, 0.4]])
    events = evaluator.evaluate(1, KEY, Figures(labelled_rows=100, labels=labels, scores=scores))
    assert states(events) == [("acc100", None, "firing"), ("est", None, "firing")]
    assert events[0].value == pytest.approx(0.01) and events[1].value == pytest.approx(0.6)
    # the newest 100 rows are all right now → resolved; the default window (200 rows) is full: 101/200 right
    labels.add(np.arange(100.0, 200.0), np.ones(100, int), np.ones(100, int))
    events = evaluator.evaluate(2, KEY, Figures(labels=labels, scores=scores))
    assert states(events) == [("acc100", None, "resolved"), ("acc", None, "firing")]
    assert events[1].value == pytest.approx(101 / 200)
    labels.add(np.arange(200.0, 300.0), np.ones(100, int), np.zeros(100, int))
    events = evaluator.evaluate(3, KEY, Figures(labels=labels))  # no score window: estimated unknown, kept
    assert states(events) == [("acc100", None, "firing")]
    assert {a.alert for a in evaluator.active()} == {"acc100", "acc", "est"}
    # without the windows, the default-window figures are used once labelled_rows reaches the rule's rows
    plain = AlertEvaluator([rule(name="acc", when="accuracy < 0.9")], default_over_rows=200)
    assert plain.evaluate(0, KEY, Figures(performance={"accuracy": 0.5}, labelled_rows=199)) == []
    assert states(plain.evaluate(1, KEY, Figures(performance={"accuracy": 0.5}, labelled_rows=200))) == [
        ("acc", None, "firing")]


def test_endpoint_filter_and_keys_are_apart() -> None:
    evaluator = AlertEvaluator([rule(name="d", when="psi > 0.2", feature="*", endpoint="churn")],
                               default_over_rows=1)
    other = AlertKey("fraud", "fraud", "2.0.0")
    assert evaluator.evaluate(0, other, drift(x=1.0)) == []
    canary = AlertKey("churn", "churn", "1.1.0")
    assert len(evaluator.evaluate(0, KEY, drift(x=1.0))) == 1
    assert len(evaluator.evaluate(0, canary, drift(x=1.0))) == 1
    assert {a.version for a in evaluator.active()} == {"1.0.0", "1.1.0"}
    events = evaluator.forget(canary, 5)
    assert [(e.version, e.state, e.to_dict()["value"]) for e in events] == [("1.1.0", "resolved", None)]
    assert {a.version for a in evaluator.active()} == {"1.0.0"}


def test_event_json_is_the_contracts_body() -> None:
    evaluator = AlertEvaluator([rule(name="input-drift", when="psi > 0.2", feature="*", severity="critical")],
                               default_over_rows=1)
    (event,) = evaluator.evaluate(1_780_000_000.25, KEY, drift(age=0.5))
    body = json.loads(json.dumps(event.to_dict(), allow_nan=False))
    assert body == {"alert": "input-drift", "state": "firing", "severity": "critical", "endpoint": "churn",
                    "model": "churn", "version": "1.0.0", "feature": "age", "label": None, "metric": "psi",
                    "value": 0.5, "condition": "psi > 0.2", "since": "2026-05-28T20:26:40.250Z",
                    "at": "2026-05-28T20:26:40.250Z"}
    assert event.gauge_labels() == {"alert": "input-drift", "severity": "critical", "endpoint": "churn",
                                    "model": "churn", "version": "1.0.0", "feature": "age", "label": ""}
    (active,) = evaluator.active()
    assert active.gauge_labels() == event.gauge_labels() and active.to_dict()["fired_at"] == body["at"]
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    with pytest.raises(ValueError, match="default_over_rows"):
        AlertEvaluator([], default_over_rows=0)


# -- the state machine against a reference model written from the history ----------------------------------


def expected_from_history(history: list[tuple[float, float]], threshold: float, for_s: float) -> tuple[
        list[tuple[int, str]], list[bool]]:
    """Events (evaluation index, state) and whether firing after each evaluation, from the whole history: at a
    known evaluation i, the streak is the run of known evaluations up to i where the condition held; the alert
    fires at the first i of a streak with t_i - t_start >= for_s and resolves at the first known evaluation
    where the condition fails after a streak that fired. Unknown (NaN) evaluations are skipped."""
    events: list[tuple[int, str]] = []
    firing_after: list[bool] = []
    streak_start: float | None = None
    fired = False
    for i, (t, value) in enumerate(history):
        if not math.isnan(value):
            if value > threshold:
                if streak_start is None:
                    streak_start = t
                if not fired and t - streak_start >= for_s:
                    fired = True
                    events.append((i, "firing"))
            else:
                if fired:
                    events.append((i, "resolved"))
                streak_start, fired = None, False
        firing_after.append(fired)
    return events, firing_after


step = st.tuples(st.sampled_from([0.0, 1.0, 10.0, 30.0, 59.0, 60.0, 61.0, 200.0]),
                 st.sampled_from([NAN, 0.0, 0.1, 0.2, 0.25, 0.9]),
                 st.sampled_from([NAN, 0.0, 0.3, 0.9]),
                 st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=40), st.sampled_from([0.0, 30.0, 60.0, 120.0]))
def test_state_machine_matches_the_reference_model(steps: list[tuple[float, float, float, bool]],
                                                   for_s: float) -> None:
    evaluator = AlertEvaluator([rule(name="d", when="psi > 0.2", feature="*", **{"for": for_s})],
                               default_over_rows=1)
    now = 1000.0
    seen: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}
    firing: dict[str, list[bool]] = {"a": [], "b": []}
    history: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for i, (dt, a, b, enough) in enumerate(steps):
        now += dt
        history["a"].append((now, a if enough else NAN))
        history["b"].append((now, b if enough else NAN))
        for event in evaluator.evaluate(now, KEY, drift(enough=enough, a=a, b=b)):
            assert event.feature is not None
            seen[event.feature].append((i, event.state))
        active = {alert.feature for alert in evaluator.active()}
        for feature in ("a", "b"):
            firing[feature].append(feature in active)
    for feature in ("a", "b"):
        events, firing_after = expected_from_history(history[feature], 0.2, for_s)
        assert seen[feature] == events
        assert firing[feature] == firing_after
