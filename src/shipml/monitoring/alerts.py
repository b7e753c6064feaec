"""The alert evaluator: the spec's alert rules judged against a model's monitored figures, evaluation after
evaluation, as a small state machine per alert instance.

An **instance** is one rule on one served model version (``AlertKey``), and for a drift rule over ``feature: "*"``
one feature (each feature is judged on its own, so two drifting features are two alerts). Each evaluation looks
up the instance's figure and moves it:

- the condition holds: an idle instance becomes **pending** (since now); a pending instance whose condition has
  held for at least ``for_s`` becomes **firing** (event ``firing``). With ``for_s`` 0 it fires at once.
- the condition does not hold: a pending instance goes back to idle (no event); a firing one **resolves**
  (event ``resolved``).
- the figure is unknown (NaN; a drift report without enough rows; fewer labelled rows than the rule's
  ``over_rows``): **nothing changes**. A firing alert keeps firing and a pending one keeps its start, so a gap
  in the data neither silences an alert nor fires one; the next known figure decides. (Prometheus drops a
  pending alert whose series vanishes; we keep it, because "not enough rows yet" says nothing about the model.)

Figures: drift rules read the ``DriftReport`` (``FeatureDrift`` attributes are named as the metrics);
``prediction_psi`` / ``prediction_mean`` / ``prediction_share`` (by class ``label``) read its ``prediction``;
realised performance rules read the last ``over_rows`` labelled rows (default ``default_over_rows``) from the
``LabelWindow`` when one is given, else the ``performance`` figures when ``labelled_rows`` reaches that many;
``estimated_*`` rules read the ``ScoreWindow`` over ``over_rows`` rows, else the ``performance`` figures.

Every event carries the webhook's JSON body (:meth:`AlertEvent.to_dict`); the server logs it, appends it to
``DIR/<model>/alerts.jsonl``, sets ``shipml_alert_active`` (:meth:`AlertEvent.gauge_labels`) and sends it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from shipml.monitoring.performance import LabelWindow, ScoreWindow
from shipml.monitoring.rules import DRIFT_METRICS, REALISED, AlertRule, Condition

__all__ = ["ActiveAlert", "AlertEvaluator", "AlertEvent", "AlertKey", "Figures", "iso_time"]

NAN = float("nan")


class _PredictionFigures(Protocol):
    @property
    def psi(self) -> float: ...
    @property
    def mean(self) -> float: ...
    @property
    def shares(self) -> Mapping[str, float]: ...


class DriftFigures(Protocol):
    """What the evaluator reads of ``shipml.monitoring.drift.DriftReport``."""

    @property
    def enough(self) -> bool: ...
    @property
    def features(self) -> Sequence[Any]: ...  # FeatureDrift: ``name`` and one attribute per drift metric
    @property
    def prediction(self) -> _PredictionFigures | None: ...


@dataclass(frozen=True, slots=True)
class AlertKey:
    """A served model version: the endpoint that serves it, the model's name and version."""

    endpoint: str
    model: str
    version: str


@dataclass(frozen=True, slots=True)
class Figures:
    """A model version's monitored figures at one evaluation.

    ``performance``: realised (``accuracy`` ...) and estimated (``estimated_accuracy`` ...) figures over the
    default window, ``labelled_rows`` the labelled rows they were computed over. ``labels`` / ``scores``, when
    given, let rules with their own ``over_rows`` be judged over exactly that many rows.
    """

    drift: DriftFigures | None = None
    performance: Mapping[str, float] = field(default_factory=dict)
    labelled_rows: int = 0
    labels: LabelWindow | None = None
    scores: ScoreWindow | None = None


def iso_time(seconds: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC text with milliseconds (``2026-12-04T21:40:00.123Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert instance started firing or resolved. ``since``: when its condition started holding; ``at``: the
    evaluation that changed it (both seconds since the epoch; ISO text in :meth:`to_dict`)."""

    alert: str
    state: Literal["firing", "resolved"]
    severity: str
    endpoint: str
    model: str
    version: str
    feature: str | None
    label: str | None
    metric: str
    value: float
    condition: str
    since: float
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The webhook's JSON body, and one line of ``alerts.jsonl``."""
        return {"alert": self.alert, "state": self.state, "severity": self.severity, "endpoint": self.endpoint,
                "model": self.model, "version": self.version, "feature": self.feature, "label": self.label,
                "metric": self.metric, "value": _json_number(self.value), "condition": self.condition,
                "since": iso_time(self.since), "at": iso_time(self.at)}

    def gauge_labels(self) -> dict[str, str]:
        """The labels of ``shipml_alert_active`` (set to 1 when firing, removed when resolved)."""
        return _gauge_labels(self.alert, self.severity, self.endpoint, self.model, self.version, self.feature,
                             self.label)


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """A firing alert instance: its labels, its latest known figure, and since when its condition holds."""

    alert: str
    severity: str
    endpoint: str
    model: str
    version: str
    feature: str | None
    label: str | None
    metric: str
    value: float
    condition: str
    since: float
    fired_at: float

    def gauge_labels(self) -> dict[str, str]:
        return _gauge_labels(self.alert, self.severity, self.endpoint, self.model, self.version, self.feature,
                             self.label)

    def to_dict(self) -> dict[str, Any]:
        return {"alert": self.alert, "state": "firing", "severity": self.severity, "endpoint": self.endpoint,
                "model": self.model, "version": self.version, "feature": self.feature, "label": self.label,
                "metric": self.metric, "value": _json_number(self.value), "condition": self.condition,
                "since": iso_time(self.since), "fired_at": iso_time(self.fired_at)}


def _gauge_labels(alert: str, severity: str, endpoint: str, model: str, version: str, feature: str | None,
                  label: str | None) -> dict[str, str]:
    return {"alert": alert, "severity": severity, "endpoint": endpoint, "model": model, "version": version,
            "feature": feature or "", "label": label or ""}


@dataclass(slots=True)
class _State:
    firing: bool
    since: float  # the condition holds since
    value: float
    fired_at: float = NAN


_Instance = tuple[str, AlertKey, str | None, str | None]  # rule name, key, feature, label


class AlertEvaluator:
    """Judges ``rules`` at each :meth:`evaluate` (module docstring). Thread-safe: :meth:`active` may be called
    from another thread (the metrics endpoint) while the alert loop evaluates."""

    def __init__(self, rules: Sequence[AlertRule], *, default_over_rows: int) -> None:
        if isinstance(default_over_rows, bool) or not isinstance(default_over_rows, int) or default_over_rows < 1:
            raise ValueError(f"default_over_rows must be an integer >= 1, not {default_over_rows!r}")
        self.rules = tuple(rules)
        self.default_over_rows = default_over_rows
        self._conditions: dict[str, Condition] = {rule.name: rule.condition for rule in self.rules}
        self._states: dict[_Instance, _State] = {}
        self._lock = threading.Lock()

    def evaluate(self, now: float, key: AlertKey, figures: Figures) -> list[AlertEvent]:
        """Judge every rule that applies to ``key`` against ``figures``; the events of the instances that
        started firing or resolved at ``now`` (seconds since the epoch)."""
        events: list[AlertEvent] = []
        cache: dict[tuple[str, int], Mapping[str, float]] = {}
        with self._lock:
            for rule in self.rules:
                if rule.endpoint is not None and rule.endpoint != key.endpoint:
                    continue
                for feature, label, value in self._values(rule, figures, cache):
                    event = self._step(rule, (rule.name, key, feature, label), value, now)
                    if event is not None:
                        events.append(event)
        return events

    def active(self) -> list[ActiveAlert]:
        """The firing alert instances, oldest first."""
        with self._lock:
            items = [(instance, state) for instance, state in self._states.items() if state.firing]
        rules = {rule.name: rule for rule in self.rules}
        out = []
        for (name, key, feature, label), state in items:
            rule = rules[name]
            out.append(ActiveAlert(name, rule.severity, key.endpoint, key.model, key.version, feature, label,
                                   self._conditions[name].metric, state.value, str(self._conditions[name]),
                                   state.since, state.fired_at))
        return sorted(out, key=lambda a: (a.fired_at, a.alert, a.feature or "", a.label or ""))

    def forget(self, key: AlertKey, now: float) -> list[AlertEvent]:
        """Drop every instance of ``key`` (a model version no longer served): its firing alerts resolve (value
        unknown: null), its pending ones vanish."""
        rules = {rule.name: rule for rule in self.rules}
        events = []
        with self._lock:
            for instance in [i for i in self._states if i[1] == key]:
                state = self._states.pop(instance)
                if state.firing:
                    events.append(self._event(rules[instance[0]], instance, "resolved", NAN, state.since, now))
        return events

    # -- internals -----------------------------------------------------------------------------------------
    def _step(self, rule: AlertRule, instance: _Instance, value: float, now: float) -> AlertEvent | None:
        if math.isnan(value):
            return None  # unknown: keep the state (module docstring)
        state = self._states.get(instance)
        if self._conditions[rule.name].holds(value):
            if state is None:
                state = self._states[instance] = _State(firing=False, since=now, value=value)
            state.value = value
            if not state.firing and now - state.since >= rule.for_s:
                state.firing = True
                state.fired_at = now
                return self._event(rule, instance, "firing", value, state.since, now)
            return None
        if state is None:
            return None
        del self._states[instance]
        return self._event(rule, instance, "resolved", value, state.since, now) if state.firing else None

    def _event(self, rule: AlertRule, instance: _Instance, state: Literal["firing", "resolved"], value: float,
               since: float, now: float) -> AlertEvent:
        _, key, feature, label = instance
        condition = self._conditions[rule.name]
        return AlertEvent(alert=rule.name, state=state, severity=rule.severity, endpoint=key.endpoint,
                          model=key.model, version=key.version, feature=feature, label=label,
                          metric=condition.metric, value=value, condition=str(condition), since=since, at=now)

    def _values(self, rule: AlertRule, figures: Figures,
                cache: dict[tuple[str, int], Mapping[str, float]]) -> Iterator[tuple[str | None, str | None, float]]:
        """(feature, label, figure) of each instance of ``rule``; NaN where the figure is unknown."""
        metric = self._conditions[rule.name].metric
        drift = figures.drift
        if metric in DRIFT_METRICS:
            if drift is not None and drift.enough:
                pattern = rule.feature_pattern
                for feature in drift.features:
                    if pattern in ("*", feature.name):
                        yield str(feature.name), None, _number(getattr(feature, metric, NAN))
        elif metric.startswith("prediction_"):
            if drift is not None and drift.enough and drift.prediction is not None:
                if metric == "prediction_share":
                    yield None, rule.label, _number(drift.prediction.shares.get(str(rule.label), NAN))
                else:
                    yield None, None, _number(getattr(drift.prediction, metric.removeprefix("prediction_"), NAN))
        else:
            yield None, None, self._performance(rule, metric, figures, cache)

    def _performance(self, rule: AlertRule, metric: str, figures: Figures,
                     cache: dict[tuple[str, int], Mapping[str, float]]) -> float:
        window: LabelWindow | ScoreWindow | None
        if metric in REALISED:
            rows = rule.over_rows or self.default_over_rows
            window = figures.labels
            if window is None:  # the figures over the default window, once it holds enough rows
                return _number(figures.performance.get(metric, NAN)) if figures.labelled_rows >= rows else NAN
        else:  # estimated_*: over the rule's own rows when the score window is at hand
            if rule.over_rows is None or figures.scores is None:
                return _number(figures.performance.get(metric, NAN))
            rows, window = rule.over_rows, figures.scores
        if len(window) < rows:
            return NAN
        slot = (type(window).__name__, rows)
        if slot not in cache:
            cache[slot] = window.metrics(over_rows=rows)
        return _number(cache[slot].get(metric, NAN))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN
