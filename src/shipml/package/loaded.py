"""A model package loaded and verified: integrity, trust, environment, golden sample. Then it predicts."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from shipml import runtimes
from shipml.errors import (
    EnvironmentMismatchError,
    ManifestError,
    ReproducibilityError,
    SchemaError,
    ShipmlError,
    UnsafeModelError,
)
from shipml.package import environment
from shipml.package.artefacts import verify_integrity
from shipml.package.manifest import GOLDEN, PROFILE, Manifest, read_manifest
from shipml.package.signature import Problem, Signature, to_jsonable
from shipml.package.validation import DEFAULT_POLICY, Checked, InputPolicy, Table, check
from shipml.runtimes.base import Grant, Loaded, ModelFiles, Runtime, TrustNeed

PERMISSIVE = InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore")


class EnvironmentWarning(UserWarning):
    """The running environment differs from the one the model was saved in (not enough to refuse it)."""


@dataclass(frozen=True)
class Prediction:
    predictions: np.ndarray
    probabilities: np.ndarray | None = None


class ValidationReport(list[Problem]):
    """The problems found in input data (a list), with counts and the mask of rows that have errors."""

    def __init__(self, checked: Checked) -> None:
        super().__init__(checked.problems)
        self.n_errors = checked.n_errors
        self.n_warnings = checked.n_warnings
        self.bad_rows = checked.bad_rows

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self if p.severity == "warning"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LoadedModel:
    """A verified model ready to predict. Build it with :func:`shipml.load_model`."""

    def __init__(self, path: Path, manifest: Manifest, loaded: Loaded,
                 env_differences: list[environment.Difference]) -> None:
        self.path = path
        self.manifest = manifest
        self.signature: Signature = manifest.signature
        self.runtime_model = loaded
        self.environment = env_differences
        self.policy = DEFAULT_POLICY

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def classes(self) -> list[Any] | None:
        return self.signature.outputs.classes

    @property
    def has_proba(self) -> bool:
        return self.signature.outputs.probabilities

    def profile(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads((self.path / PROFILE).read_bytes())
        return data

    def __repr__(self) -> str:
        return f"<LoadedModel {self.ref} runtime={self.manifest.runtime.name}>"

    # -- checking and predicting ---------------------------------------------------------------------------
    def check(self, X: Any, policy: InputPolicy | None = None) -> Checked:
        return check(X, self.signature, policy or self.policy)

    def validate(self, X: Any, policy: InputPolicy | None = None) -> ValidationReport:
        """Every problem in ``X`` (row, column, rule); an empty report means it is fit to predict on."""
        try:
            return ValidationReport(self.check(X, policy))
        except SchemaError as exc:  # the input's shape itself is wrong
            report = ValidationReport(Checked(Table({}, 0), np.zeros(0, dtype=bool)))
            report.extend(exc.problems or [Problem(None, None, "shape", str(exc))])
            report.n_errors = max(len(report), 1)
            return report

    def model_input(self, table: Table) -> Any:
        if self.runtime_model.input_format == "matrix":
            return table.matrix()
        return table.frame(self.signature)

    def infer(self, table: Table, *, proba: bool = True) -> Prediction:
        """Predict on a table that already passed :meth:`check` (the hot path: no validation here)."""
        X = self.model_input(table)
        model = self.runtime_model
        if proba and self.has_proba:
            both = getattr(model, "predict_with_proba", None)
            if both is not None:
                labels, probabilities = both(X)
                return Prediction(labels, probabilities)
            return Prediction(model.predict(X), model.predict_proba(X))
        return Prediction(model.predict(X), None)

    def predict(self, X: Any, policy: InputPolicy | None = None) -> np.ndarray:
        checked = self.check(X, policy)
        checked.raise_for_errors()
        return self.infer(checked.table, proba=False).predictions

    def predict_proba(self, X: Any, policy: InputPolicy | None = None) -> np.ndarray:
        if not self.has_proba:
            raise SchemaError(f"{self.ref} gives no probabilities (task: {self.signature.outputs.task})")
        checked = self.check(X, policy)
        checked.raise_for_errors()
        result = self.infer(checked.table, proba=True).probabilities
        if result is None:  # pragma: no cover - has_proba promised otherwise
            raise SchemaError(f"{self.ref} gave no probabilities")
        return result

    # -- the golden check ----------------------------------------------------------------------------------
    def golden(self) -> dict[str, Any]:
        """The golden sample: ``inputs`` (column -> values), ``predictions`` and maybe ``probabilities``."""
        data: dict[str, Any] = orjson.loads((self.path / GOLDEN).read_bytes())
        return data

    def example_records(self, n: int = 5) -> list[dict[str, Any]]:
        """The first ``n`` golden input rows as records: an input known to be valid for this model."""
        inputs = self.golden()["inputs"]
        rows = min(n, len(next(iter(inputs.values()), [])))
        return [{name: values[i] for name, values in inputs.items()} for i in range(rows)]

    def verify_golden(self) -> None:
        """Re-run the golden sample and compare with what the model gave at save time."""
        golden = self.golden()
        checked = check(golden["inputs"], self.signature, PERMISSIVE)
        if not checked.ok:
            raise ReproducibilityError(f"golden inputs of {self.ref} no longer fit its signature: "
                                       + "; ".join(map(str, checked.problems[:3])))
        result = self.infer(checked.table, proba=golden.get("probabilities") is not None)
        tol = self.manifest.golden
        problems = compare_outputs(result, golden, self.signature.outputs.task, tol.rtol, tol.atol)
        if problems:
            raise ReproducibilityError(
                f"{self.ref} does not reproduce its golden sample ({len(problems)} difference(s)"
                f" over {tol.rows} rows, rtol={tol.rtol:g} atol={tol.atol:g}): " + "; ".join(problems[:5])
            )


def compare_outputs(result: Prediction, golden: dict[str, Any], task: str, rtol: float, atol: float) -> list[str]:
    problems: list[str] = []
    expected = golden["predictions"]
    got = [to_jsonable(v) for v in result.predictions.reshape(len(result.predictions), -1)[:, 0]] \
        if result.predictions.ndim > 1 else [to_jsonable(v) for v in result.predictions]
    if len(got) != len(expected):
        return [f"{len(got)} predictions for {len(expected)} golden rows"]
    if task == "regression":
        a = np.asarray(got, dtype=np.float64)
        b = np.asarray(expected, dtype=np.float64)
        bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        problems += [f"row {i}: prediction {a[i]!r}, expected {b[i]!r} (diff {abs(a[i] - b[i]):.3g})"
                     for i in np.flatnonzero(bad)]
    else:
        problems += [f"row {i}: label {g!r}, expected {e!r}" for i, (g, e) in enumerate(zip(got, expected, strict=True))
                     if g != e]
    want = golden.get("probabilities")
    if want is not None and result.probabilities is not None:
        a = np.asarray(result.probabilities, dtype=np.float64)
        b = np.asarray(want, dtype=np.float64)
        if a.shape != b.shape:
            return [*problems, f"probabilities of shape {a.shape}, expected {b.shape}"]
        diff = np.abs(a - b)
        bad_rows = np.flatnonzero((~np.isclose(a, b, rtol=rtol, atol=atol)).any(axis=1))
        problems += [f"row {i}: probabilities differ by up to {diff[i].max():.3g}" for i in bad_rows]
    return problems


def trust_grant(manifest: Manifest, need: TrustNeed, *, trusted: bool | None, authenticated: bool) -> Grant:
    """The trust a load gets: everything when ``trusted``; with ``trusted=None``, what an authenticated manifest
    (its digest recorded by the registry) records, if that covers ``need``; otherwise none, which refuses any
    package that needs trust (UnsafeModelError naming what it needs)."""
    if not need.required:
        return Grant(sealed=authenticated)
    if trusted is True:
        return Grant(everything=True, sealed=authenticated)
    recorded = manifest.trust
    if trusted is None and authenticated:
        grant = Grant(code=recorded.required, types=frozenset(recorded.types) if recorded.required else frozenset(),
                      sealed=True)
        if grant.covers(need):
            return grant
        why = "its manifest records no trust covering that"
    elif trusted is False:
        why = "trust was refused (trusted=False)"
    else:
        why = ("a package directory outside a registry carries no trust of its own: pass trusted=True (CLI: --trust)"
               " if you trust whoever made it")
    raise UnsafeModelError(f"{manifest.ref} {need.describe()}; {why}", list(need.types) or [manifest.runtime.name])


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters (a framework's message can span pages)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def runtime_for(manifest: Manifest) -> Runtime:
    runtime = runtimes.get(manifest.runtime.name)
    if manifest.runtime.api_version != runtime.api_version:
        raise ManifestError(
            f"{manifest.ref} was saved by runtime {runtime.name} API v{manifest.runtime.api_version};"
            f" this shipml's {runtime.name} runtime is v{runtime.api_version}"
        )
    return runtime


def judge_trust(runtime: Runtime, files: ModelFiles, manifest: Manifest, *, sealed: bool) -> TrustNeed:
    """What the package's files need trust for, as ``runtime`` reads them (framework errors translated)."""
    try:
        return runtime.trust_needed(files, sealed=sealed)
    except ShipmlError:
        raise
    except Exception as exc:  # a framework failing to read the file: translate it here, at the boundary
        raise ManifestError(f"{manifest.ref}: the {runtime.name} runtime cannot read its artefact"
                            f" ({one_line(exc)})") from exc


def load_package(directory: Path, *, verify: bool = True, allow_env_mismatch: bool = False,
                 trusted: bool | None = None, manifest_sha256: str | None = None) -> LoadedModel:
    """Load a package directory: check integrity, trust and environment, load, then re-run the golden sample.

    ``manifest_sha256``: the manifest's digest as the registry recorded it at save time; a manifest that does not
    match it is refused, and one that matches is authenticated. Without it (a package directory outside a
    registry) nothing in the manifest is trusted. ``trusted``: True grants trust; None grants what an
    authenticated manifest records (nothing otherwise); False refuses any package that needs trust. What a package
    needs trust for comes from its runtime and its files' bytes, never from its manifest."""
    manifest = read_manifest(directory, manifest_sha256)
    runtime = runtime_for(manifest)
    files = verify_integrity(directory, manifest).model_view()
    authenticated = manifest_sha256 is not None
    need = judge_trust(runtime, files, manifest, sealed=authenticated)
    grant = trust_grant(manifest, need, trusted=trusted, authenticated=authenticated)
    diffs = environment.compare(manifest.environment)
    errors = [d for d in diffs if d.level == "error"]
    if errors and not allow_env_mismatch:
        raise EnvironmentMismatchError(
            f"{manifest.ref} needs another environment: " + "; ".join(map(str, errors))
            + " (pass allow_env_mismatch=True to load it anyway; the golden check still runs)"
        )
    for d in diffs:
        if d.level != "info":
            warnings.warn(f"{manifest.ref}: {d}", EnvironmentWarning, stacklevel=2)
    try:
        loaded = runtime.load(files, manifest.runtime.info, grant)
    except ShipmlError:
        raise
    except Exception as exc:  # a framework's own error: translate it here, at the boundary
        raise ManifestError(f"{manifest.ref}: the {runtime.name} runtime could not load its artefact"
                            f" ({one_line(exc)})") from exc
    model = LoadedModel(directory, manifest, loaded, diffs)
    if verify:
        try:
            model.verify_golden()
        except ShipmlError:
            raise
        except Exception as exc:  # the model itself failed on its golden inputs
            raise ReproducibilityError(f"{manifest.ref} failed on its golden sample ({one_line(exc)})") from exc
    return model


__all__ = ["PERMISSIVE", "EnvironmentWarning", "LoadedModel", "Prediction", "ValidationReport", "compare_outputs",
           "judge_trust", "load_package", "one_line", "runtime_for", "sha256_file", "trust_grant", "verify_integrity"]
