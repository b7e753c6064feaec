"""The release tests' models (tests/e2e/release_models.py) behave as those tests assume, loaded for real."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import shipml
from shipml.errors import ReproducibilityError
from shipml.package.example import model_example
from tests.e2e import release_models as rm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release-models") / "registry"
    rm.good(root, "1.0.0", 1)
    rm.good(root, "2.0.0", 2)
    rm.bad_canary(root, "9.0.0")
    rm.golden_fails(root, "7.0.0")
    rm.slow(root, "5.0.0")
    return root


ROW = pd.DataFrame([rm.ROW])


def test_good_versions_answer_recognisably(registry: Path) -> None:
    one = shipml.load_model("churn:1.0.0", registry=registry)
    two = shipml.load_model("churn:2.0.0", registry=registry)
    assert one.predict(ROW).tolist() == [rm.label(1)] == [11]
    assert two.predict(ROW).tolist() == [rm.label(2)] == [21]
    assert rm.shift_of(two.predict(ROW)[0]) == 2
    assert two.predict_proba(ROW).shape == (1, 2)
    assert [c.name for c in one.signature.inputs] == [c.name for c in two.signature.inputs] == rm.FEATURES


def test_the_bad_canary_loads_and_raises_on_the_tests_requests(registry: Path) -> None:
    model = shipml.load_model("churn:9.0.0", registry=registry, trusted=True)  # golden check passes
    assert model.predict(rm.SAMPLE.head(3)).tolist() == [rm.label(9, r) for r in rm.SAMPLE.head(3).to_dict("records")]
    example = pd.DataFrame([model_example(model)])  # the typical row a server warms a model up with
    assert model.predict(example).tolist() == [rm.label(9, example.iloc[0].to_dict())]
    with pytest.raises(RuntimeError, match="bad canary: refusing 1 row"):
        model.predict(ROW)
    with pytest.raises(RuntimeError, match="bad canary: refusing 1 row"):
        model.predict(pd.concat([rm.SAMPLE.head(5), ROW]))
    assert model.manifest.runtime.info["mode"] == "source"


def test_golden_fails_once_its_marker_exists(registry: Path) -> None:
    marker = registry.parent / "golden-marker-churn-7.0.0"
    assert marker.exists()
    with pytest.raises(ReproducibilityError, match="does not reproduce its golden sample"):
        shipml.load_model("churn:7.0.0", registry=registry, trusted=True)
    marker.unlink()
    try:
        assert shipml.load_model("churn:7.0.0", registry=registry, trusted=True).predict(ROW).tolist() == [71]
    finally:
        marker.write_text("back\n")


def test_the_slow_model_sleeps_a_second_per_call(registry: Path) -> None:
    model = shipml.load_model("churn:5.0.0", registry=registry, trusted=True)
    started = time.monotonic()
    assert model.predict(ROW).tolist() == [50]  # the opposite label of the good models
    assert time.monotonic() - started >= rm.code_module().SLEEP_S * 0.9
