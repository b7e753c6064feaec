"""One contract, every runtime: each case from ``cases_*.py`` goes through the same checks."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

import shipml
from shipml.package.loaded import sha256_file
from shipml.package.manifest import GOLDEN, MANIFEST
from shipml.package.validation import InputPolicy
from tests.contract import case as case_module
from tests.contract.case import Case, Trained


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    package_dir = Path(case_module.__file__).parent
    for info in sorted(pkgutil.iter_modules([str(package_dir)]), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            cases += importlib.import_module(f"tests.contract.{info.name}").CASES
    return cases


CASES = _all_cases()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def trained(case: Case, tmp_path: Path) -> Trained:
    return case.make(tmp_path)


@pytest.fixture
def saved(trained: Trained, registry: shipml.Registry) -> shipml.ModelVersion:
    return shipml.save_model(trained.model, "m", sample=trained.sample, target=trained.target,
                             trusted=trained.trusted, registry=registry, **trained.save_kwargs)


def _same(a: np.ndarray, b: np.ndarray, exact: bool) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    if exact:
        assert [str(v) for v in a.ravel()] == [str(v) for v in b.ravel()]
    else:
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-6, atol=1e-6)


def test_round_trip_predictions_equal(case: Case, trained: Trained, saved: shipml.ModelVersion,
                                      registry: shipml.Registry) -> None:
    model = shipml.load_model(saved.ref, registry=registry)
    assert model.manifest.runtime.name == case.runtime
    _same(model.predict(trained.sample), trained.predict(trained.sample), trained.exact)
    if trained.proba is not None:
        np.testing.assert_allclose(model.predict_proba(trained.sample), trained.proba(trained.sample),
                                   rtol=1e-6, atol=1e-7)
        assert model.signature.outputs.task == "classification"


def test_manifest_is_complete(trained: Trained, saved: shipml.ModelVersion) -> None:
    m = saved.manifest
    assert (m.name, m.version) == ("m", "1.0.0")
    frame = trained.sample if isinstance(trained.sample, pd.DataFrame) else None
    if frame is not None:
        assert m.signature.names == [str(c) for c in frame.columns]
    else:
        assert len(m.signature.inputs) == np.asarray(trained.sample).shape[1]
    assert m.artifacts and all(len(a.sha256) == 64 for a in m.artifacts)
    assert {"numpy", "pandas"} <= set(m.environment.packages)
    assert 0 < m.golden.rows <= 100
    assert m.lineage.sample_fingerprint.startswith("sha256:")
    assert m.trust.required == trained.trusted
    profile = orjson.loads((saved.path / "profile.json").read_bytes())
    assert set(profile["features"]) == set(m.signature.names)
    assert "predictions" in profile


def _load_dir(path: Path, trained: Trained, **kwargs: Any) -> shipml.LoadedModel:
    """A package directory outside a registry, loaded as its owner would: with trust when it needs it there."""
    return shipml.load_model(path, trusted=True if trained.trusted_outside_registry else None, **kwargs)


def test_loads_from_package_directory(trained: Trained, saved: shipml.ModelVersion) -> None:
    if trained.trusted_outside_registry:
        with pytest.raises(shipml.UnsafeModelError, match="trusted=True"):
            shipml.load_model(saved.path)
    model = _load_dir(saved.path, trained)
    _same(model.predict(trained.sample), trained.predict(trained.sample), trained.exact)


def _bad_inputs(model: shipml.LoadedModel, trained: Trained) -> dict[str, Any]:
    """One bad input per rule the signature can break, built from the signature itself."""
    sig = model.signature
    good = model.check(trained.sample).table.frame(sig).head(3).astype(object)
    cases: dict[str, Any] = {}
    cases["missing_column"] = good.drop(columns=[sig.inputs[0].name])
    cases["extra_column"] = good.assign(not_a_feature=1)
    for spec in sig.inputs:
        if spec.numeric and "type" not in cases:
            bad = good.copy()
            bad.loc[1, spec.name] = "not a number"
            cases["type"] = bad
        if not spec.nullable and "null" not in cases:
            bad = good.copy()
            bad.loc[2, spec.name] = None
            cases["null"] = bad
        if spec.dtype in ("int", "float") and spec.max is not None and "out_of_range" not in cases:
            bad = good.copy()
            bad.loc[0, spec.name] = float(spec.max) * 10 + 1e6
            cases["out_of_range"] = bad
        if spec.dtype == "string" and spec.categories and "unseen_category" not in cases:
            bad = good.copy()
            bad.loc[0, spec.name] = "never-seen-category"
            cases["unseen_category"] = bad
    return cases


def test_validate_catches_each_kind_of_bad_row(trained: Trained, saved: shipml.ModelVersion) -> None:
    model = _load_dir(saved.path, trained)
    assert model.validate(trained.sample).ok
    strict = InputPolicy(out_of_range="reject")
    for rule, bad in _bad_inputs(model, trained).items():
        report = model.validate(bad, policy=strict)
        rules = {p.rule for p in report.errors}
        assert rule in rules, f"{rule} not caught: {list(report)}"
        for p in report:
            if p.rule not in ("missing_column", "extra_column"):
                assert p.row is not None and p.column is not None
        with pytest.raises(shipml.SchemaError):
            model.predict(bad, policy=strict)


def test_out_of_range_is_a_warning_by_default(trained: Trained, saved: shipml.ModelVersion) -> None:
    model = _load_dir(saved.path, trained)
    bad = _bad_inputs(model, trained).get("out_of_range")
    if bad is None:
        pytest.skip("no numeric column with a range in this signature")
    report = model.validate(bad)
    assert report.ok and [p.rule for p in report.warnings] == ["out_of_range"]
    assert len(model.predict(bad)) == 3


def test_tampered_artefact_is_refused(saved: shipml.ModelVersion) -> None:
    model_file = next(p for p in (saved.path / "model").rglob("*") if p.is_file())
    model_file.chmod(0o644)
    with model_file.open("ab") as f:
        f.write(b"\n")
    with pytest.raises(shipml.IntegrityError, match="sha256"):
        shipml.load_model(saved.path)


def _rewrite_manifest(path: Path, change: Any) -> None:
    data = orjson.loads((path / MANIFEST).read_bytes())
    change(data)
    (path / MANIFEST).write_bytes(orjson.dumps(data))


def test_runtime_mismatch_is_refused(case: Case, saved: shipml.ModelVersion) -> None:
    other = "lightgbm" if case.runtime != "lightgbm" else "sklearn"
    _rewrite_manifest(saved.path, lambda d: d["runtime"].update(name=other))
    with pytest.raises((shipml.ManifestError, shipml.ShipmlError)):
        shipml.load_model(saved.path)


def test_runtime_api_version_mismatch_is_refused(saved: shipml.ModelVersion) -> None:
    _rewrite_manifest(saved.path, lambda d: d["runtime"].update(api_version=999))
    with pytest.raises(shipml.ManifestError, match="API v999"):
        shipml.load_model(saved.path)


def test_changed_golden_outputs_raise_reproducibility_error(trained: Trained, saved: shipml.ModelVersion) -> None:
    golden_path = saved.path / GOLDEN
    golden = orjson.loads(golden_path.read_bytes())
    first = golden["predictions"][0]
    golden["predictions"][0] = (first + 1.0) if isinstance(first, float) else f"{first}-changed"
    if golden["probabilities"] is not None:
        golden["probabilities"][1] = [p + 0.25 for p in golden["probabilities"][1]]
    golden_path.write_bytes(orjson.dumps(golden))

    def rehash(d: dict[str, Any]) -> None:
        for art in d["artifacts"]:
            if art["path"] == GOLDEN:
                art["sha256"] = sha256_file(golden_path)
                art["size"] = golden_path.stat().st_size

    _rewrite_manifest(saved.path, rehash)
    with pytest.raises(shipml.ReproducibilityError, match="row 0"):
        _load_dir(saved.path, trained)
    assert _load_dir(saved.path, trained, verify=False).version == "1.0.0"
