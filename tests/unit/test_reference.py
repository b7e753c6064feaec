"""The reference a model's live data is compared with: decile bins with exact training counts in new packages,
the equal-width histogram of packages saved before them, and a clear refusal without a profile."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.errors import ManifestError
from shipml.monitoring.drift import Counts, drift, drift_of_table
from shipml.monitoring.reference import Reference
from shipml.package.loaded import LoadedModel
from shipml.package.profile import PROFILE_VERSION, decile_bins
from tests.unit.drift_models import classifier, frame


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return classifier(tmp_path_factory.mktemp("reference"))


def test_numeric_profiles_have_exact_counts_on_the_training_deciles(model: LoadedModel) -> None:
    profile = model.profile()
    assert profile["profile_version"] == PROFILE_VERSION == 2
    training = frame(3000, seed=0)  # what drift_models.classifier trained and saved the model with
    for name in ("age", "income"):
        values = training[name].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        bins = profile["features"][name]["bins"]
        edges = np.array(bins["edges"])
        assert edges[0] == finite.min() and edges[-1] == finite.max()
        assert np.all(np.diff(edges) > 0) and len(edges) <= 11
        assert bins["counts"] == np.histogram(finite, bins=edges)[0].tolist()
    seconds = profile["features"]["when"]["bins"]
    assert sum(seconds["counts"]) == 3000 and seconds["edges"][0] == pd.Timestamp(training["when"].min()).timestamp()
    assert "bins" in profile["predictions"] or profile["predictions"]["kind"] == "categorical"
    assert all("bins" in p for p in profile["probabilities"].values())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e300, 1e300), st.integers(-5, 5).map(float)), min_size=1, max_size=80))
def test_decile_bins(values: list[float]) -> None:
    x = np.array(values)
    edges, counts = decile_bins(x)
    assert edges[0] == x.min() and edges[-1] == x.max()
    assert len(edges) == 2 if x.min() == x.max() else np.all(np.diff(edges) > 0)
    assert counts.sum() == len(x)
    assert counts.tolist() == np.histogram(x, bins=edges)[0].tolist()


def old_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile as shipml wrote it before decile bins: numeric figures with an equal-width histogram only."""
    old = copy.deepcopy(profile)
    old["profile_version"] = 1
    for part in [*old["features"].values(), old["predictions"], *old.get("probabilities", {}).values()]:
        part.pop("bins", None)
    return old


def test_an_old_profile_falls_back_to_its_histogram(model: LoadedModel) -> None:
    reference = Reference.from_manifest(model.manifest, old_profile(model.profile()))
    income = reference.feature("income")
    assert list(income.edges) == model.profile()["features"]["income"]["histogram"]["edges"]
    calm = drift_of_table(reference, frame(2000, seed=7))
    assert all(f.psi < 0.1 for f in calm.features), calm.features
    shifted = frame(2000, seed=7)
    shifted["age"] = shifted["age"] + 30
    report = drift_of_table(reference, shifted)
    assert report.features[0].name == "age" and report.features[0].out_of_range_share > 0.4
    assert Reference.from_manifest(model.manifest, model.profile()).fingerprint != reference.fingerprint


def test_a_constant_feature_of_an_old_profile() -> None:
    from shipml.package.profile import numeric_profile
    from shipml.package.signature import ColumnSpec, OutputSpec, Signature

    spec = ColumnSpec(name="x", dtype="float", pandas_dtype="float64")
    signature = Signature(inputs=[spec], input_kind="dataframe", outputs=OutputSpec(task="regression"))
    profile = numeric_profile(np.full(20, 3.0))
    assert profile["bins"] == {"edges": [3.0, 3.0], "counts": [20]}
    del profile["bins"]
    reference = Reference.build("m", "1.0.0", signature, {"features": {"x": profile}})
    counts = Counts(reference)
    counts.add({"x": np.array([3.0, 3.0, 3.2, 2.0])})
    figures = drift(reference, counts).features[0]
    assert figures.out_of_range_share == 0.5 and counts.feature_counts(0).tolist() == [1, 2, 1, 0]


def test_what_a_profile_lacks_gives_nan_not_an_error(model: LoadedModel) -> None:
    profile = model.profile()
    partial = {"features": {"age": profile["features"]["age"], "income": {"kind": "numeric", "count": 5}}}
    reference = Reference.from_manifest(model.manifest, partial)
    assert reference.prediction is None
    report = drift_of_table(reference, frame(300, seed=1))
    by_name = {f.name: f for f in report.features}
    assert by_name["age"].psi < 0.2
    assert math.isnan(by_name["income"].psi) and math.isnan(by_name["state"].psi)
    assert report.features[-1].name in ("income", "state", "member", "when")


@pytest.mark.parametrize("profile", [None, {}, {"rows": 3}, {"features": []}])
def test_no_profile_is_refused_by_name(model: LoadedModel, profile: Any) -> None:
    with pytest.raises(ManifestError, match=r"churn:1\.0\.0 has no reference profile"):
        Reference.from_manifest(model.manifest, profile)


def test_classes_and_categories(model: LoadedModel) -> None:
    reference = Reference.from_model(model)
    assert reference.classes == ["0", "1"]
    assert reference.prediction is not None and reference.prediction.categories == ("0", "1")
    state = reference.feature("state")
    assert state.unseen_known and set(state.known) == {"CA", "NY", "TX", "WA", "OR"}
    member = reference.feature("member")
    assert member.kind == "categorical" and set(member.categories) == {"True", "False"}
    assert [f.name for f in reference.features] == model.signature.names
