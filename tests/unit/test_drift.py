"""Drift of served rows against a real model's training profile: rows like the training data give low figures on
every feature; one shifted feature (numbers, categories, nulls, out-of-range values) stands out alone, first."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from shipml.monitoring.drift import Counts, DriftReport, drift, drift_of_table
from shipml.monitoring.reference import Reference
from shipml.package.loaded import LoadedModel
from tests.unit.drift_models import FEATURES, classifier, frame, regressor

LOW = 0.1
HIGH = 0.25


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return classifier(tmp_path_factory.mktemp("drift"))


@pytest.fixture(scope="module")
def reference(model: LoadedModel) -> Reference:
    return Reference.from_model(model)


def served(model: LoadedModel, reference: Reference, rows: pd.DataFrame) -> DriftReport:
    """Counted as the server counts a batch: the checked table's columns and the model's predictions on it."""
    checked = model.check(rows, model.policy.__class__(out_of_range="warn", unseen_category="warn"))
    predictions = model.infer(checked.table).predictions
    counts = Counts(reference)
    counts.add(checked.table.columns, predictions)
    return drift(reference, counts, min_rows=100)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_rows_from_the_training_distribution_drift_little(model: LoadedModel, reference: Reference,
                                                           seed: int) -> None:
    report = served(model, reference, frame(2000, seed=seed))
    assert report.enough and report.rows == 2000
    assert {f.name for f in report.features} == set(FEATURES)
    for f in report.features:
        assert f.psi < LOW, f
        assert f.out_of_range_share < 0.01
        assert f.kind == ("numeric" if f.name in ("age", "income", "when") else "categorical")
        if f.kind == "numeric":
            assert f.ks < 0.1 and math.isnan(f.chi2) and math.isnan(f.cramers_v) and math.isnan(f.unseen_share)
        else:
            assert math.isnan(f.ks) and f.cramers_v < 0.1 and f.unseen_share == 0.0
    assert report.prediction is not None and report.prediction.psi < LOW
    assert set(report.prediction.shares) == {"0", "1"}


def _scale_income(rows: pd.DataFrame) -> None:
    rows["income"] = rows["income"] * 1.4


def _older(rows: pd.DataFrame) -> None:
    rows["age"] = np.minimum(rows["age"] + 25, 79)  # still inside the training range


def _new_states(rows: pd.DataFrame) -> None:
    rows.loc[rows.index[: len(rows) // 2], "state"] = "ZZ"  # a category training never saw


def _state_mix(rows: pd.DataFrame) -> None:
    rows["state"] = np.where(np.arange(len(rows)) % 2 == 0, "OR", rows["state"])  # a rare one becomes common


def _missing_income(rows: pd.DataFrame) -> None:
    rows.loc[rows.index[: len(rows) // 3], "income"] = np.nan


def _future(rows: pd.DataFrame) -> None:
    rows["when"] = rows["when"] + pd.Timedelta(days=800)  # after every training date


def _members(rows: pd.DataFrame) -> None:
    rows["member"] = False


SHIFTS: dict[str, tuple[str, Callable[[pd.DataFrame], None]]] = {
    "numeric shift": ("income", _scale_income),
    "numeric shift inside the range": ("age", _older),
    "unseen categories": ("state", _new_states),
    "category mix": ("state", _state_mix),
    "rising nulls": ("income", _missing_income),
    "out of range": ("when", _future),
    "bool shift": ("member", _members),
}


@pytest.mark.parametrize("case", list(SHIFTS))
def test_one_shifted_feature_stands_out_first(model: LoadedModel, reference: Reference, case: str) -> None:
    name, shift = SHIFTS[case]
    rows = frame(2000, seed=21)
    shift(rows)
    report = served(model, reference, rows)
    assert report.features[0].name == name, [(f.name, round(f.psi, 3)) for f in report.features]
    assert report.feature(name).psi > HIGH
    for f in report.features[1:]:
        assert f.psi < LOW, f
    shifted = report.feature(name)
    if case == "unseen categories":
        assert shifted.unseen_share == pytest.approx(0.5)
        assert shifted.out_of_range_share == pytest.approx(0.5)
        assert shifted.chi2 > 100 and shifted.cramers_v > 0.3
    if case == "rising nulls":
        assert shifted.null_share > 0.3 and shifted.reference_null_share == pytest.approx(0.05, abs=0.02)
    if case == "out of range":
        assert shifted.out_of_range_share > 0.5 and shifted.ks > 0.5


def test_report_is_json_and_ranked_worst_first(model: LoadedModel, reference: Reference) -> None:
    rows = frame(500, seed=3)
    _scale_income(rows)
    report = served(model, reference, rows)
    data = orjson.loads(orjson.dumps(report.to_dict()))  # JSON-safe: NaN is null
    psis = [f["psi"] for f in data["features"]]
    assert psis == sorted(psis, reverse=True)
    numeric = next(f for f in data["features"] if f["name"] == "age")
    assert numeric["chi2"] is None and numeric["unseen_share"] is None
    assert len(numeric["bins"]["labels"]) == len(numeric["bins"]["reference"]) == len(numeric["bins"]["current"])
    assert data["prediction"]["kind"] == "categorical" and data["prediction"]["mean"] is None


def test_too_few_rows_give_nan_figures_ranked_by_name_order(model: LoadedModel, reference: Reference) -> None:
    report = served(model, reference, frame(50, seed=4))  # min_rows is 100
    assert report.rows == 50 and not report.enough
    assert all(math.isnan(f.psi) and math.isnan(f.null_share) for f in report.features)
    assert [f.name for f in report.features] == FEATURES
    assert report.prediction is not None and math.isnan(report.prediction.psi)
    assert orjson.loads(orjson.dumps(report.to_dict()))["features"][0]["psi"] is None
    empty = drift(reference, Counts(reference))
    assert empty.rows == 0 and not empty.enough


def test_drift_of_a_table_equals_drift_of_served_rows(model: LoadedModel, reference: Reference) -> None:
    import pyarrow as pa

    rows = frame(1000, seed=5)
    _new_states(rows)
    by_server = served(model, reference, rows)
    for table in (rows, pa.Table.from_pandas(rows, preserve_index=False)):
        by_file = drift_of_table(reference, table)
        assert [f.name for f in by_file.features] == [f.name for f in by_server.features]
        for a, b in zip(by_file.features, by_server.features, strict=True):
            assert a.shares == b.shares, a.name


def test_regression_prediction_drift(tmp_path: Path) -> None:
    model = regressor(tmp_path)
    reference = Reference.from_model(model)
    assert reference.prediction is not None and reference.prediction.kind == "numeric"
    assert reference.classes is None
    rng = np.random.default_rng(9)
    same = pd.DataFrame({"x1": rng.normal(size=1000), "x2": rng.uniform(0, 10, 1000)})
    shifted = same.assign(x2=same["x2"] + 4)
    figures = []
    for rows in (same, shifted):
        checked = model.check(rows)
        predictions = model.infer(checked.table).predictions
        counts = Counts(reference)
        counts.add(checked.table.columns, predictions)
        figures.append(drift(reference, counts))
    calm, moved = figures
    assert calm.prediction is not None and moved.prediction is not None
    assert calm.prediction.psi < LOW < HIGH < moved.prediction.psi
    assert calm.prediction.mean == pytest.approx(reference.prediction.mean, abs=0.3)
    assert moved.prediction.mean == pytest.approx(reference.prediction.mean + 4, abs=0.3)
    assert math.isnan(moved.prediction.chi2) and moved.prediction.shares == {}
    assert moved.features[0].name == "x2"
