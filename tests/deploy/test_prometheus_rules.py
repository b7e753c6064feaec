"""Prometheus alerting rules from the spec's alert rules: one rule per alert with the same condition and `for`,
over the server's metric names; every expression parses as PromQL (promql-parser) and means what the rule says;
`shipml k8s` writes prometheus-rules.yaml beside the manifests when the spec has alerts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.deploy.kubernetes import FILES, KUSTOMIZATION, generate
from shipml.deploy.prometheus_rules import alert_name, prometheus_duration, prometheus_rules
from shipml.errors import SpecError
from shipml.monitoring.rules import DRIFT_METRICS, METRICS, REALISED
from shipml.spec import DeploymentSpec, parse_spec
from tests.deploy.test_kubernetes import by_kind, k8s, read_dir, validate_strict, write_spec

ALERTS: list[dict[str, Any]] = [
    {"name": "input-drift", "when": "psi > 0.2", "feature": "*", "for": "5m", "severity": "critical"},
    {"name": "age.nulls", "when": "null_share >= 0.1", "feature": "age"},
    {"name": "positives", "when": "prediction_share outside [0.05, 0.3]", "label": "1", "for": 90},
    {"name": "accuracy", "when": "accuracy < 0.9", "over_rows": 1000},
    {"name": "accuracy-short", "when": "accuracy < 0.8", "over_rows": 200},
    {"name": "est_f1", "when": "estimated_f1 <= 0.7", "for": 1.5},
    {"name": "fraud-psi", "when": "prediction_psi > 0.25", "endpoint": "fraud"},
]
SPEC: dict[str, Any] = {
    "endpoints": [{"name": "churn", "models": ["churn@production", "churn.v2:1.2.0"]},
                  {"name": "fraud", "models": ["fraud"]}],
    "monitoring": {"enabled": True, "drift": {"min_rows": 150}, "performance": {"window_rows": 500},
                   "alerts": ALERTS},
}
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def selectors(node: Any) -> list[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.ParenExpr):
        return selectors(node.expr)
    if isinstance(node, promql_parser.BinaryExpr):
        return selectors(node.lhs) + selectors(node.rhs)
    return []


def comparisons(node: Any) -> list[tuple[str, str, float]]:
    """(metric, operator, number) of each `selector OP number` in the expression."""
    if isinstance(node, promql_parser.ParenExpr):
        return comparisons(node.expr)
    if isinstance(node, promql_parser.BinaryExpr):
        if isinstance(node.lhs, promql_parser.VectorSelector) and isinstance(node.rhs,
                                                                           promql_parser.NumberLiteral):
            return [(node.lhs.name, str(node.op), node.rhs.val)]
        return comparisons(node.lhs) + comparisons(node.rhs)
    return []


MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def matchers(selector: Any) -> dict[str, tuple[str, str]]:
    return {m.name: (MATCH_OPS[str(m.op)], m.value) for m in selector.matchers.matchers}


def check_rule_object(doc: dict[str, Any], spec: DeploymentSpec) -> list[dict[str, Any]]:
    """The structure of a PrometheusRule (the CRD has no schema in kubernetes-validate) and valid PromQL."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    (group,) = doc["spec"]["groups"]
    assert set(group) == {"name", "rules"} and group["name"]
    rules = group["rules"]
    assert len(rules) == len(spec.monitoring.alerts)
    for rule, alert in zip(rules, spec.monitoring.alerts, strict=True):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert METRIC_NAME.fullmatch(rule["alert"]) and rule["alert"] == alert_name(alert.name)
        assert rule["labels"] == {"severity": alert.severity, "shipml_rule": alert.name}
        assert all(LABEL_NAME.fullmatch(k) for k in [*rule["labels"], *rule["annotations"]])
        assert set(rule["annotations"]) == {"summary", "description"}
        if alert.for_s:
            assert DURATION.fullmatch(rule["for"])
        else:
            assert "for" not in rule
        promql_parser.parse(rule["expr"])  # raises on anything that is not PromQL
    return rules


def test_one_rule_per_alert_with_its_condition_and_for() -> None:
    spec = parse_spec(SPEC)
    doc = prometheus_rules(spec, name="churn-api", namespace="ml")
    assert doc["metadata"]["name"] == "churn-api-alerts" and doc["metadata"]["namespace"] == "ml"
    rules = {r["labels"]["shipml_rule"]: r for r in check_rule_object(doc, spec)}
    parsed = {name: promql_parser.parse(rule["expr"]) for name, rule in rules.items()}
    every_model = ("=~", "churn|churn\\.v2|fraud")

    drift = rules["input-drift"]
    assert (drift["alert"], drift["for"], drift["labels"]["severity"]) == ("ShipmlInputDrift", "5m", "critical")
    assert comparisons(parsed["input-drift"]) == [("shipml_drift_psi", ">", 0.2), ("shipml_drift_window_rows",
                                                                                   ">=", 150)]
    psi, rows = selectors(parsed["input-drift"])
    assert rows.name == "shipml_drift_window_rows"
    assert matchers(psi) == {"model": every_model}  # "*": no feature matcher, one alert per feature series
    assert parsed["input-drift"].modifier.matching.labels == ["model", "version"]
    assert "{{ $labels.feature }}" in drift["annotations"]["summary"]

    nulls = selectors(parsed["age.nulls"])[0]
    assert (nulls.name, matchers(nulls)["feature"]) == ("shipml_drift_null_share", ("=", "age"))
    assert "for" not in rules["age.nulls"] and rules["age.nulls"]["alert"] == "ShipmlAgeNulls"

    assert rules["positives"]["for"] == "90s"
    assert comparisons(parsed["positives"])[:2] == [("shipml_prediction_share", "<", 0.05),
                                                   ("shipml_prediction_share", ">", 0.3)]
    assert all(matchers(s)["label"] == ("=", "1") for s in selectors(parsed["positives"])[:2])

    assert comparisons(parsed["accuracy"]) == [("shipml_model_performance", "<", 0.9),
                                               ("shipml_labelled_rows", ">=", 500)]  # capped at window_rows
    assert matchers(selectors(parsed["accuracy"])[0])["metric"] == ("=", "accuracy")
    assert "last 1000 labelled rows" in rules["accuracy"]["annotations"]["description"]
    assert comparisons(parsed["accuracy-short"])[1] == ("shipml_labelled_rows", ">=", 200)

    assert rules["est_f1"]["for"] == "1500ms"
    (estimate,) = selectors(parsed["est_f1"])  # no guard: the estimate needs no labels
    assert estimate.name == "shipml_model_performance_estimated" and matchers(estimate)["metric"] == ("=", "f1")
    assert comparisons(parsed["est_f1"]) == [("shipml_model_performance_estimated", "<=", 0.7)]

    fraud = selectors(parsed["fraud-psi"])[0]
    assert fraud.name == "shipml_prediction_psi" and matchers(fraud)["model"] == ("=~", "fraud")


def test_an_alert_on_an_unknown_endpoint_is_refused() -> None:
    spec = parse_spec({**SPEC, "monitoring": {"alerts": [{"name": "x", "when": "psi > 1", "endpoint": "nope"}]}})
    with pytest.raises(SpecError, match="endpoint 'nope' is not one of the spec's endpoints"):
        prometheus_rules(spec)


@pytest.mark.parametrize(("seconds", "text"), [(300, "5m"), (90, "90s"), (3600, "1h"), (86400 * 2, "2d"),
                                               (1.5, "1500ms"), (0.001, "1ms"), (7200.5, "7200500ms")])
def test_durations(seconds: float, text: str) -> None:
    assert prometheus_duration(seconds) == text


feature_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
thresholds = st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 6))


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(METRICS), st.sampled_from([">", ">=", "<", "<=", "outside"]), thresholds, thresholds,
       feature_names, st.one_of(st.just(0.0), st.floats(0.001, 7 * 86400)),
       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_any_rule_makes_parsable_promql_that_means_the_rule(metric: str, op: str, a: float, b: float,
                                                            feature: str, for_s: float, name: str) -> None:
    when = f"{metric} outside [{min(a, b)!r}, {max(a, b)!r}]" if op == "outside" else f"{metric} {op} {a!r}"
    alert: dict[str, Any] = {"name": name, "when": when, "for": for_s}
    if metric in DRIFT_METRICS:
        alert["feature"] = feature
    elif metric == "prediction_share":
        alert["label"] = feature
    spec = parse_spec({**SPEC, "monitoring": {"alerts": [alert]}})
    doc = prometheus_rules(spec)
    (rule,) = check_rule_object(doc, spec)
    assert rule.get("for", "0s") == prometheus_duration(for_s) if for_s else "for" not in rule
    expr = promql_parser.parse(rule["expr"])
    tests = comparisons(expr)
    if op == "outside":
        assert [(t[1], t[2]) for t in tests[:2]] == [("<", min(a, b)), (">", max(a, b))]
    else:
        assert (tests[0][1], tests[0][2]) == (op, a)
    series = selectors(expr)[0]
    found = matchers(series)
    pattern = found["model"][1]
    assert all(re.fullmatch(pattern, m) for m in ("churn", "churn.v2", "fraud"))
    assert not re.fullmatch(pattern, "churnXv2")
    if metric in DRIFT_METRICS:
        assert series.name == f"shipml_drift_{metric}"
        assert found.get("feature") == (None if feature == "*" else ("=", feature))
    elif metric == "prediction_share":
        assert found["label"] == ("=", feature)
    elif metric in REALISED:
        assert (series.name, found["metric"]) == ("shipml_model_performance", ("=", metric))
    elif metric.startswith("estimated_"):
        assert found["metric"] == ("=", metric.removeprefix("estimated_"))


def test_k8s_writes_the_rules_beside_the_manifests_not_in_kustomization(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "shipml.yaml", SPEC)
    out = tmp_path / "out"
    result = k8s(str(spec_path), "-o", str(out), "--namespace", "ml", registry=tmp_path / "empty-registry")
    assert result.exit_code == 0, result.output
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == sorted(
        [*FILES, "prometheus-rules.yaml", KUSTOMIZATION])
    assert "prometheus-rules.yaml" in result.stderr and "kubectl -n ml apply -f" in result.stderr
    docs = read_dir(out)
    rules_doc = docs.pop("prometheus-rules.yaml")
    validate_strict(docs)  # the rest stays valid Kubernetes
    assert "prometheus-rules.yaml" not in docs[KUSTOMIZATION]["resources"]
    check_rule_object(rules_doc, parse_spec(SPEC))
    deployment = by_kind(docs)["Deployment"]
    assert rules_doc["metadata"]["namespace"] == "ml"
    assert rules_doc["metadata"]["labels"]["app.kubernetes.io/instance"] == deployment["metadata"]["name"]
    text = (out / "prometheus-rules.yaml").read_text()
    assert text.startswith("# Generated by `shipml k8s`") and "kubectl apply -f prometheus-rules.yaml" in text
    assert yaml.safe_load(text) == rules_doc


def test_no_alerts_no_rules_file(tmp_path: Path) -> None:
    manifests = generate(parse_spec({"endpoints": SPEC["endpoints"]}))
    assert manifests.extra_objects == {} and "prometheus-rules.yaml" not in manifests.render()
