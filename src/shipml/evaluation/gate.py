"""The validation gate: evaluate a version on labelled data, and move an alias only when it earns it.

``evaluate`` computes metrics on the rows that fit the model's signature and stores the figures with the
version. ``promote`` checks the candidate's metrics against requirements ("accuracy>=0.9") and, with
``against``, against the version currently holding an alias, evaluated on the same data; it moves the alias
only when every check passes, and otherwise raises :class:`PromotionRefused` listing every failed check with
its figures.

``promote`` is :func:`check_promotion` then :func:`apply_promotion`. The alias moves with compare-and-set: only
if it still points where it did when the check began. If it moved meanwhile (a hotfix landed during the
evaluation), nothing changes and a :class:`ConflictError` says so; promoting again compares against the new
holder. It does not compare again by itself: the user asked about one holder, and a second evaluation could
take as long as the first and race again. (With ``against`` naming another alias than the one moved, the
compare-and-set covers the alias moved; the other alias's holder is the one named in the result.)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipml.errors import ConflictError, GateError, SchemaError
from shipml.evaluation.data import LabelledData, read_labelled, split_target
from shipml.evaluation.metrics import (
    DEFAULT_METRIC,
    HIGHER_IS_BETTER,
    evaluation_policy,
    metric_task,
    metrics_for,
)
from shipml.package.lineage import current_user, now_iso
from shipml.package.loaded import LoadedModel
from shipml.registry.names import Ref, check_alias
from shipml.registry.registry import AliasMove, ModelVersion, Registry

Data = str | Path | pd.DataFrame | LabelledData
VersionRef = str | Ref | ModelVersion

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}
_NEGATION = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}
_REQUIREMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*(\S+)\s*")
#: Differences below this are float noise, not a worse model.
_EPSILON = 1e-12
_PROBLEMS_SHOWN = 5


def fmt(value: float) -> str:
    """A metric value for people: four significant digits below 1, six above."""
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.6g}"


@dataclass(frozen=True)
class Requirement:
    """A threshold a metric must meet, such as ``accuracy>=0.9``."""

    metric: str
    op: str
    threshold: float
    written: str  # the threshold as the user wrote it, shown back in messages ("0.90", not "0.9")

    @classmethod
    def parse(cls, text: str) -> Requirement:
        m = _REQUIREMENT.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise GateError(f"invalid requirement {text!r}: write METRIC OP NUMBER, such as accuracy>=0.9"
                            f" (operators: {', '.join(_OPERATORS)})")
        metric, op, written = m.groups()
        if metric not in HIGHER_IS_BETTER:
            raise GateError(f"unknown metric {metric!r} in requirement {text!r}; known metrics: "
                            + ", ".join(HIGHER_IS_BETTER))
        try:
            threshold = float(written)
        except ValueError:
            threshold = float("nan")
        if not np.isfinite(threshold):
            raise GateError(f"invalid threshold {written!r} in requirement {text!r}: expected a number")
        return cls(metric, op, threshold, written)

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.written}"


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one version on one labelled data set (what ``registry.record_evaluation`` stores)."""

    name: str
    version: str
    metrics: dict[str, float]
    task: str
    rows: int  # rows the metrics were computed on
    rejected: int  # rows left out: not fitting the signature, or without a target value
    data: str | None
    fingerprint: str
    target: str | None
    at: str
    by: str | None
    #: why rows were rejected (the first few; not stored)
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_record(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "task": self.task, "rows": self.rows,
                "rejected": self.rejected, "data": self.data, "fingerprint": self.fingerprint,
                "target": self.target, "at": self.at, "by": self.by}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.ref, "name": self.name, "version": self.version, **self.to_record(),
                "problems": list(self.problems)}

    @classmethod
    def from_record(cls, name: str, record: dict[str, Any]) -> Evaluation:
        return cls(name=name, version=str(record["version"]),
                   metrics={str(k): float(v) for k, v in record.get("metrics", {}).items()},
                   task=str(record.get("task", "")), rows=int(record.get("rows", 0)),
                   rejected=int(record.get("rejected", 0)), data=record.get("data"),
                   fingerprint=str(record.get("fingerprint", "")), target=record.get("target"),
                   at=str(record.get("at", "")), by=record.get("by"))

    def describe_data(self) -> str:
        name = self.data or "a DataFrame"
        return f"{name} ({self.rows} rows" + (f", {self.rejected} rejected)" if self.rejected else ")")


@dataclass(frozen=True)
class Check:
    """One thing the gate looked at: a requirement or the comparison with the current holder of the alias."""

    kind: Literal["requirement", "comparison"]
    metric: str | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str
    alias: str
    evaluation: Evaluation
    checks: tuple[Check, ...]
    against: str | None = None  # what the candidate was compared with, as given ("@production")
    baseline: Evaluation | None = None  # the holder's evaluation on the same data
    move: AliasMove | None = None  # set once the alias has moved
    alias_was: str | None = None  # the version ``alias`` pointed to when the check began (None: absent)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """The figures in one line (the reason recorded with the alias move)."""
        checks = "; ".join(c.message for c in self.checks) or "no checks"
        verdict = "passed" if self.passed else "refused"
        return f"gate {verdict} on {self.evaluation.describe_data()}: {checks}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.ref, "alias": self.alias, "promoted": self.move is not None,
                "passed": self.passed, "checks": [c.to_dict() for c in self.checks], "against": self.against,
                "evaluation": self.evaluation.to_dict(),
                "baseline": self.baseline.to_dict() if self.baseline is not None else None,
                "move": self.move.to_dict() if self.move is not None else None}


class PromotionRefused(GateError):
    """The gate refused a promotion; ``result`` holds every check, passed or not."""

    def __init__(self, result: PromotionResult) -> None:
        failed = "; ".join(c.message for c in result.failures)
        super().__init__(f"promotion of {result.ref} to @{result.alias} refused: {failed}")
        self.result = result


# -- evaluating --------------------------------------------------------------------------------------------

def evaluate(registry: Registry, ref: VersionRef, data: Data, target: str | None = None, *,
             record: bool = True) -> Evaluation:
    """Metrics of ``ref`` on labelled ``data`` (a CSV/Parquet/JSON-lines file or a DataFrame holding the
    ``target`` column), computed on the rows that fit the model's signature, and stored with the version."""
    mv = _version(registry, ref)
    model = registry.load(Ref(name=mv.name, version=mv.version))
    labelled = labelled_data(data, target, [model])
    evaluation = evaluate_loaded(mv, model, labelled)
    if record:
        registry.record_evaluation(mv, evaluation.to_record())
    return evaluation


def labelled_data(data: Data, target: str | None, models: Sequence[LoadedModel]) -> LabelledData:
    """Read ``data`` once, typed for every one of ``models`` (so they are judged on exactly the same rows)."""
    if isinstance(data, LabelledData):
        return data
    if target is None:
        raise GateError("evaluation data needs a target: name the column holding the true values")
    if isinstance(data, pd.DataFrame):
        return split_target(data, target)
    return read_labelled(data, target, [m.signature for m in models])


def evaluate_loaded(mv: ModelVersion, model: LoadedModel, labelled: LabelledData) -> Evaluation:
    """Evaluate a loaded model on data already read (nothing is stored)."""
    task = metric_task(model)
    n = labelled.rows
    where = labelled.source or "the data"
    if n == 0:
        raise SchemaError(f"{where} has no rows to evaluate {mv.ref} on")
    checked = model.check(labelled.features, evaluation_policy(model))
    no_target = labelled.target.isna().to_numpy()
    good = ~checked.bad_rows & ~no_target
    problems = [str(p) for p in checked.problems if p.severity == "error"][:_PROBLEMS_SHOWN]
    if no_target.any():
        problems.append(f"{int(no_target.sum())} row(s) with no value in target column"
                        f" {labelled.target.name!r}")
    if not good.any():
        raise SchemaError(f"no row of {where} fits the signature of {mv.ref} ({n} rejected): "
                          + "; ".join(problems))
    rows = np.flatnonzero(good)
    prediction = model.infer(checked.table.take(rows), proba=True)
    metrics = metrics_for(model, labelled.target.to_numpy()[rows], prediction)
    return Evaluation(name=mv.name, version=mv.version, metrics=metrics, task=task, rows=len(rows),
                      rejected=n - len(rows), data=labelled.source, fingerprint=labelled.fingerprint,
                      target=str(labelled.target.name), at=now_iso(), by=current_user(),
                      problems=tuple(problems))


def stored_evaluations(registry: Registry, ref: VersionRef) -> list[Evaluation]:
    """Every evaluation stored for a version, oldest first."""
    mv = _version(registry, ref)
    return [Evaluation.from_record(mv.name, r) for r in registry.evaluations(mv)]


# -- promoting ---------------------------------------------------------------------------------------------

def promote(registry: Registry, ref: VersionRef, alias: str, *,
            requirements: Iterable[str | Requirement] = (), against: str | None = None,
            data: Data | None = None, target: str | None = None, tolerance: float = 0.0,
            reason: str | None = None) -> PromotionResult:
    """Move ``alias`` to ``ref`` if it passes the gate (see the module docstring), else raise
    :class:`PromotionRefused`; :class:`ConflictError` when the alias moved during the evaluation.

    ``data``/``target``: evaluate on this labelled data (stored); without them the candidate's latest stored
    evaluation is used. ``against``: an alias ("@production" or "production") of the same model, or a ref; its
    current holder is evaluated on the same data and the candidate may be worse than it by at most
    ``tolerance`` on the compared metrics (those named in ``requirements``, else accuracy or rmse)."""
    result = check_promotion(registry, ref, alias, requirements=requirements, against=against, data=data,
                             target=target, tolerance=tolerance)
    return apply_promotion(registry, result, reason=reason)


def check_promotion(registry: Registry, ref: VersionRef, alias: str, *,
                    requirements: Iterable[str | Requirement] = (), against: str | None = None,
                    data: Data | None = None, target: str | None = None,
                    tolerance: float = 0.0) -> PromotionResult:
    """The gate's verdict, without moving anything (evaluations on ``data`` are stored): raises
    :class:`PromotionRefused` when a check fails. The result remembers where ``alias`` pointed when the check
    began, for :func:`apply_promotion`."""
    alias = check_alias(alias.removeprefix("@"))
    reqs = [r if isinstance(r, Requirement) else Requirement.parse(r) for r in requirements]
    if tolerance < 0 or not np.isfinite(tolerance):
        raise GateError(f"tolerance must be a finite number >= 0, got {tolerance}")
    mv = _version(registry, ref)
    aliases = registry.aliases(mv.name)  # read once: the holder compared against is the one the move expects
    against_label, holder = _resolve_against(registry, mv, against, aliases) if against is not None \
        else ("", None)
    if data is None and not reqs and against is None and not registry.evaluations(mv):
        raise GateError(f"nothing to check for {mv.ref}: give requirements, something to compare against, or"
                        " data to evaluate on (`shipml alias` moves an alias without the gate)")

    labelled: LabelledData | None = None
    holder_model: LoadedModel | None = None
    if data is not None:
        candidate_model = registry.load(Ref(name=mv.name, version=mv.version))
        if against is not None and holder is not None and holder != mv:
            holder_model = registry.load(Ref(name=holder.name, version=holder.version))
        labelled = labelled_data(data, target, [m for m in (candidate_model, holder_model) if m is not None])
        evaluation = evaluate_loaded(mv, candidate_model, labelled)
        registry.record_evaluation(mv, evaluation.to_record())
    else:
        evaluation = _latest(registry, mv, None)

    checks = [_requirement_check(evaluation, r) for r in reqs]
    baseline: Evaluation | None = None
    if against is not None:
        label = against_label
        if holder is None:
            checks.append(Check("comparison", None, True,
                                f"{label} has no holder yet: nothing to compare against"))
        elif holder == mv:
            checks.append(Check("comparison", None, True, f"{mv.ref} already holds {label}"))
        else:
            if labelled is not None and holder_model is not None:
                baseline = evaluate_loaded(holder, holder_model, labelled)
                registry.record_evaluation(holder, baseline.to_record())
            else:
                baseline = _latest(registry, holder, evaluation)
            default = DEFAULT_METRIC["regression" if evaluation.task == "regression" else "classification"]
            compared = [r.metric for r in reqs] or [default]
            checks += [_comparison_check(evaluation, baseline, metric, label, tolerance)
                       for metric in dict.fromkeys(compared)]

    result = PromotionResult(mv.name, mv.version, alias, evaluation, tuple(checks), against_label or None,
                             baseline, alias_was=aliases.get(alias))
    if not result.passed:
        raise PromotionRefused(result)
    return result


def apply_promotion(registry: Registry, result: PromotionResult, *, reason: str | None = None) -> PromotionResult:
    """Move the alias of a passed check, only if it still points where it did when the check began
    (compare-and-set); otherwise :class:`ConflictError`, and nothing changes."""
    if not result.passed:
        raise PromotionRefused(result)
    summary = result.summary()
    try:
        move = registry.set_alias(result.name, result.alias, result.version, expected=result.alias_was,
                                  reason=f"{reason}; {summary}" if reason else summary)
    except ConflictError:
        now = registry.aliases(result.name).get(result.alias)
        raise ConflictError(_moved_meanwhile(result.alias, result.alias_was, now)) from None
    return replace(result, move=move)


def _moved_meanwhile(alias: str, was: str | None, now: str | None) -> str:
    if was is None:
        what = f"{alias} was created (at {now})"
    elif now is None:
        what = f"{alias} was removed (it pointed to {was})"
    else:
        what = f"{alias} moved from {was} to {now}"
    again = f"; promote again to compare against {now}" if was is not None and now is not None else \
        "; promote again"
    return f"{what} during the evaluation; nothing changed{again}"


def _requirement_check(evaluation: Evaluation, req: Requirement) -> Check:
    value = evaluation.metrics.get(req.metric)
    if value is None:
        known = ", ".join(evaluation.metrics) or "none"
        return Check("requirement", req.metric, False,
                     f"{req.metric} was not computed for {evaluation.ref} (computed: {known}),"
                     f" required {req}")
    if req.holds(value):
        return Check("requirement", req.metric, True, f"{req.metric} {fmt(value)} {req.op} {req.written}")
    return Check("requirement", req.metric, False,
                 f"{req.metric} {fmt(value)} {_NEGATION[req.op]} {req.written} (required {req})")


def _comparison_check(candidate: Evaluation, baseline: Evaluation, metric: str, label: str,
                      tolerance: float) -> Check:
    who = f"{label} ({baseline.ref})"
    new, old = candidate.metrics.get(metric), baseline.metrics.get(metric)
    if new is None or old is None:
        missing = candidate.ref if new is None else baseline.ref
        return Check("comparison", metric, False, f"{metric} was not computed for {missing}: cannot compare"
                                                  f" {candidate.ref} with {who}")
    higher = HIGHER_IS_BETTER[metric]
    worse_by = (old - new) if higher else (new - old)
    if worse_by > tolerance + _EPSILON:
        return Check("comparison", metric, False,
                     f"{metric} {fmt(new)} is worse than {who} {fmt(old)} by {fmt(worse_by)}"
                     f" ({'higher' if higher else 'lower'} is better; tolerance {fmt(tolerance)})")
    change = f"{new - old:+.4g}"
    return Check("comparison", metric, True, f"{metric} {fmt(new)} vs {fmt(old)} for {who} ({change})")


def _latest(registry: Registry, mv: ModelVersion, same_data_as: Evaluation | None) -> Evaluation:
    """The latest stored evaluation of ``mv`` (on the same data as ``same_data_as``, when given)."""
    found = [Evaluation.from_record(mv.name, r) for r in registry.evaluations(mv)]
    if same_data_as is None:
        if not found:
            raise GateError(f"{mv.ref} has no stored evaluation: evaluate it first, or give data to"
                            " evaluate on")
        return found[-1]
    same = [e for e in found if e.fingerprint == same_data_as.fingerprint and e.target == same_data_as.target]
    if not same:
        raise GateError(f"{mv.ref} has no evaluation on the data {same_data_as.ref} was evaluated on"
                        f" ({same_data_as.describe_data()}, {same_data_as.fingerprint[:19]}...): give data to"
                        " evaluate both on")
    return same[-1]


def _resolve_against(registry: Registry, mv: ModelVersion, against: str,
                     aliases: dict[str, str]) -> tuple[str, ModelVersion | None]:
    """(label, current holder or None) for ``against``: "@alias" or "alias" of the candidate's model (its
    holder in ``aliases``), or a ref."""
    text = against.strip()
    if text.startswith("@") or ("@" not in text and ":" not in text):
        alias = check_alias(text.removeprefix("@"))
        version = aliases.get(alias)
        holder = registry.get(Ref(name=mv.name, version=version)) if version is not None else None
        return f"@{alias}", holder
    return text, registry.get(text)


def _version(registry: Registry, ref: VersionRef) -> ModelVersion:
    return ref if isinstance(ref, ModelVersion) else registry.get(ref)
