"""The alert rule grammar (monitoring/rules.py): every metric parses with every operator, conditions print
back exactly, and bad rules are refused by name."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shipml.monitoring.rules import METRICS, AlertRule, Condition

numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("op", [">", ">=", "<", "<="])
def test_every_metric_parses_with_every_operator(metric: str, op: str) -> None:
    condition = Condition.parse(f"{metric} {op} 0.5")
    assert (condition.metric, condition.op, condition.threshold) == (metric, op, 0.5)
    outside = Condition.parse(f"  {metric} outside [0.05,0.3] ")
    assert (outside.metric, outside.op, outside.low, outside.high) == (metric, "outside", 0.05, 0.3)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(METRICS), st.sampled_from([">", ">=", "<", "<=", "outside"]), numbers, numbers, numbers)
def test_a_condition_prints_back_exactly_and_judges_as_written(metric: str, op: str, a: float, b: float,
                                                               value: float) -> None:
    text = f"{metric} outside [{min(a, b)!r}, {max(a, b)!r}]" if op == "outside" else f"{metric}{op}{a!r}"
    condition = Condition.parse(text)
    assert Condition.parse(str(condition)) == condition
    expected = {">": value > a, ">=": value >= a, "<": value < a, "<=": value <= a,
                "outside": not min(a, b) <= value <= max(a, b)}[op]
    assert condition.holds(value) is expected
    assert condition.holds(math.nan) is False


@pytest.mark.parametrize(("text", "message"), [
    ("psi > ", "is not a condition"), ("psi == 0.2", "is not a condition"), ("latency > 3", "unknown metric"),
    ("psi outside [0.3, 0.1]", "is empty"), ("psi > 1e999", "finite"), ("PSI > 1", "is not a condition")])
def test_bad_conditions_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Condition.parse(text)


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "a", "when": "psi > 0.2", "label": "1"}, "drift figure"),
    ({"name": "a", "when": "prediction_share > 0.2"}, "needs the class"),
    ({"name": "a", "when": "f1 < 0.5", "feature": "x"}, "feature applies to drift"),
    ({"name": "a", "when": "prediction_psi > 0.5", "over_rows": 10}, "over_rows applies to performance"),
    ({"name": "a b", "when": "psi > 0.2"}, "alert name"),
    ({"name": "a", "when": "psi > 0.2", "for": "-5m"}, "duration"),
])
def test_bad_rules_are_refused_by_name(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertRule.model_validate(rule)


def test_a_rule_with_digits_in_its_metric() -> None:
    rule = AlertRule.model_validate({"name": "f1", "when": "estimated_f1 < 0.7", "over_rows": 500, "for": "2m"})
    assert (rule.condition.metric, rule.for_s, rule.over_rows) == ("estimated_f1", 120.0, 500)
