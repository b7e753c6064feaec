"""The monitoring report's data, collected from a real prediction log: a tiny real classifier served 12 hours of
batches through PredictionLog (training-distribution rows, then ``income`` shifted), with feedback through
FeedbackLog and alert events in alerts.jsonl."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from shipml.errors import InvalidNameError, NotFoundError
from shipml.monitoring.alerts import AlertEvent
from shipml.monitoring.log import path_component
from shipml.monitoring.logread import read_log
from shipml.monitoring.performance import realised
from shipml.monitoring.report import ALERTS_FILE, Report
from shipml.monitoring.report_collect import PSI_WINDOW_ROWS, bucket_width, collect, monitor, read_alerts, reference_of
from shipml.package.loaded import LoadedModel
from shipml.registry import Registry
from tests.unit import drift_models
from tests.unit.report_support import WrittenLog, write_log

HOUR = 3600.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, WrittenLog, Registry]:
    root = tmp_path_factory.mktemp("report")
    model = drift_models.classifier(root)
    start = math.floor(time.time() / HOUR) * HOUR - 13 * HOUR
    written = write_log(model, root / "log", start=start)
    alerts = root / "log" / path_component("churn") / ALERTS_FILE
    event = AlertEvent("input-drift", "firing", "warning", "churn", "churn", model.version, "income", None, "psi",
                       4.2, "psi > 0.2", start + 7 * HOUR, start + 7.1 * HOUR)
    other = AlertEvent("input-drift", "firing", "warning", "clf", "clf", "1.0.0", "x0", None, "psi", 1.0,
                       "psi > 0.2", start + 7 * HOUR, start + 7.1 * HOUR)
    alerts.write_bytes(orjson.dumps(event.to_dict()) + b"\n" + b"{not json\n" + orjson.dumps(other.to_dict())
                       + b"\n")
    return model, written, Registry(root / "registry")


@pytest.fixture(scope="module")
def report(served: tuple[LoadedModel, WrittenLog, Registry]) -> Report:
    _model, written, registry = served
    return monitor(registry, "churn", written.directory)


def test_the_shifted_feature_is_ranked_first(report: Report) -> None:
    names = [f.name for f in report.features]
    assert names[0] == "income"
    assert sorted(names) == sorted(drift_models.FEATURES)
    assert report.features[0].psi > 0.25
    assert all(f.psi < 0.1 for f in report.features[1:]), [(f.name, f.psi) for f in report.features]
    income = report.feature("income")
    assert income.kind == "numeric" and income.figures["out_of_range_share"] > 0.3
    assert income.distribution.labels[-1] == "null" and len(income.distribution.edges) >= 2
    assert sum(income.distribution.current) == pytest.approx(1.0)
    assert sum(income.distribution.reference) == pytest.approx(1.0)
    state = report.feature("state")
    assert state.kind == "categorical" and "CA" in state.distribution.labels


def test_rows_requests_versions_and_times(report: Report, served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    model, written, _ = served
    assert report.rows == report.drift_rows == len(written.frame)
    assert report.requests == len(set(written.request_ids))
    assert report.versions == (model.version,) and report.reference_version == model.version
    assert report.first_time == pytest.approx(written.times.min(), abs=1e-3)
    assert report.last_time == pytest.approx(written.times.max(), abs=1e-3)
    s = report.series
    assert sum(s.rows) == report.rows and sum(s.requests) == report.requests
    assert sum(s.rows_by_version[model.version]) == report.rows
    assert len(s.starts) <= 48 and all(b - a == s.width_s for a, b in zip(s.starts, s.starts[1:], strict=False))
    assert s.starts[0] <= written.times.min() < s.starts[0] + s.width_s
    assert all(0 < v < 1000 for v in s.latency_ms["p50"] if not math.isnan(v))


def test_psi_over_time_rises_when_the_shift_starts(report: Report, served: tuple[LoadedModel, WrittenLog, Registry]
                                                   ) -> None:
    _model, written, _ = served
    middle = (written.start + written.end) / 2
    psi = report.series.psi["income"]
    assert report.series.psi_window_rows == PSI_WINDOW_ROWS
    # 30 rows a quarter hour: a window of 200+ rows spans 7 buckets (1 h 45 min)
    starts = report.series.starts
    before = [p for start, p in zip(starts, psi, strict=True) if start + report.series.width_s <= middle]
    after = [p for start, p in zip(starts, psi, strict=True) if start >= middle + 2 * HOUR]
    assert len(before) >= 20 and len(after) >= 15 and not any(math.isnan(p) for p in before[7:] + after)
    assert max(before[7:]) < 0.5 and min(after) > 2.0
    assert all(math.isnan(p) for p in before[:6])  # too few rows yet


def test_realised_accuracy_equals_the_offline_accuracy_on_the_labelled_rows(
        report: Report, served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    model, written, _ = served
    index = {(rid, row): i for i, (rid, row) in enumerate(zip(written.request_ids, written.rows, strict=True))}
    chosen = np.array([index[key] for key in written.labels])
    frame = written.frame.iloc[chosen]
    targets = np.array(list(written.labels.values()))
    offline = realised(targets, model.predict(frame), model.predict_proba(frame), model.classes, "classification")
    assert report.labelled_rows == len(written.labels)
    assert report.unmatched_labels == 0
    assert report.realised["accuracy"] == pytest.approx(offline["accuracy"])
    assert report.realised["roc_auc"] == pytest.approx(offline["roc_auc"])
    assert 0.5 < report.estimated["estimated_accuracy"] <= 1.0
    assert sum(report.series.labelled) == report.labelled_rows


def test_prediction_shares_per_bucket(report: Report, served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    model, written, _ = served
    shares = report.series.prediction
    assert set(shares) == {str(c) for c in model.classes or []}
    for i, rows in enumerate(report.series.rows):
        if rows:
            assert sum(shares[c][i] for c in shares) == pytest.approx(1.0)
    assert report.prediction is not None
    assert report.prediction.distribution.labels[:2] == ("0", "1")
    ones = float(np.mean(written.predictions == 1))
    assert report.prediction.distribution.current[1] == pytest.approx(ones)


def test_alerts_of_the_model_are_read_and_a_bad_line_is_noted(report: Report) -> None:
    assert [(a["alert"], a["feature"], a["state"]) for a in report.alerts] == [("input-drift", "income", "firing")]
    assert len(report.fired()) == 1
    assert any("1 line(s) of alerts.jsonl" in n for n in report.notes)


def test_since_bounds_rows_labels_and_alerts(served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    _model, written, registry = served
    middle = (written.start + written.end) / 2
    late = collect(written.directory, reference_of(registry.get("churn")), since=middle)
    expected = int(np.count_nonzero(written.times >= middle))
    assert late.rows == expected and late.first_time is not None and late.first_time >= middle
    assert late.features[0].name == "income" and late.features[0].psi > 1.0
    assert late.labelled_rows == sum(1 for (rid, row) in written.labels
                                     if written.times[written.request_ids.index(rid)] >= middle)
    assert [a["feature"] for a in late.alerts] == ["income"]  # it fired 7.1 h after the log's start
    early = collect(written.directory, reference_of(registry.get("churn")), until=middle)
    assert early.rows == len(written.frame) - expected
    assert all(f.psi < 0.1 for f in early.features), [(f.name, f.psi) for f in early.features]
    assert early.labelled_rows + late.labelled_rows == len(written.labels)
    assert early.alerts == ()


def test_the_json_is_strict(report: Report) -> None:
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["features"][0]["name"] == "income"
    assert back["features"][0]["figures"]["chi2"] is None  # NaN for a numeric feature: null
    assert len(back["series"]["starts"]) == len(back["series"]["psi"]["income"])


def test_a_version_or_alias_reports_that_version_only(served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    model, written, registry = served
    registry.set_alias("churn", "production", model.version)
    pinned = monitor(registry, "churn@production", written.directory)
    assert pinned.ref == "churn@production" and pinned.rows == len(written.frame)
    assert monitor(registry, f"churn:{model.version}", written.directory).rows == len(written.frame)


def test_clear_errors(served: tuple[LoadedModel, WrittenLog, Registry], tmp_path: Path) -> None:
    _model, written, registry = served
    with pytest.raises(NotFoundError, match="no prediction log at"):
        monitor(registry, "churn", tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match=r"holds no prediction of 'other' \(it holds: churn\)"):
        monitor(registry, "other", written.directory)
    with pytest.raises(NotFoundError, match=r"no version 9\.9\.9"):
        monitor(registry, "churn:9.9.9", written.directory)
    with pytest.raises(InvalidNameError):
        monitor(registry, "./a/path", written.directory)


def test_an_empty_period_gives_an_empty_report(served: tuple[LoadedModel, WrittenLog, Registry]) -> None:
    _model, written, registry = served
    empty = collect(written.directory, reference_of(registry.get("churn")), since=written.end + 10 * HOUR)
    assert empty.rows == 0 and empty.features == () and empty.series.starts == ()
    assert any("no prediction" in n for n in empty.notes)
    json.dumps(empty.to_dict(), allow_nan=False)


def test_bucket_width_keeps_the_count_bounded() -> None:
    assert bucket_width(0.0, 59.0, 48) == 60.0
    assert bucket_width(0.0, 24 * HOUR - 1, 48) == 1800.0
    assert bucket_width(0.0, 24 * HOUR, 48) == HOUR  # the end is in a 49th half hour
    assert bucket_width(0.0, 24 * HOUR, 24) == 2 * HOUR  # 1 h buckets would give 25 (the end is included)
    assert bucket_width(0.0, 365 * 86400.0, 48) == 30 * 86400.0


def test_read_alerts_without_a_file(tmp_path: Path) -> None:
    assert read_alerts(tmp_path, "churn") == ()


# -- several versions, a regressor, bounded reading -----------------------------------------------------------------
def test_a_plain_name_reports_every_version_and_drift_of_the_newest(tmp_path: Path) -> None:
    old = drift_models.classifier(tmp_path)
    new = drift_models.classifier(tmp_path, rows=2000)  # the same name again: the next version
    assert old.version != new.version
    start = math.floor(time.time() / HOUR) * HOUR - 10 * HOUR
    first = write_log(old, tmp_path / "log", start=start, hours=4)
    second = write_log(new, tmp_path / "log", start=start + 5 * HOUR, hours=4, seed=8, id_prefix="new-")
    registry = Registry(tmp_path / "registry")
    both = monitor(registry, "churn", tmp_path / "log")
    assert both.versions == (old.version, new.version) and both.reference_version == new.version
    assert both.rows == len(first.frame) + len(second.frame)
    assert both.drift_rows == len(second.frame)  # drift: the newest version's rows against its own profile
    assert {v: sum(rows) for v, rows in both.series.rows_by_version.items()} == {
        old.version: len(first.frame), new.version: len(second.frame)}
    assert both.labelled_rows == len(first.labels) + len(second.labels)
    pinned = monitor(registry, f"churn:{old.version}", tmp_path / "log")
    assert pinned.versions == (old.version,) and pinned.rows == pinned.drift_rows == len(first.frame)
    assert pinned.labelled_rows == len(first.labels)


def report_rows(directory: Path) -> int:
    return read_log(directory, columns=["row"]).num_rows


def shifted_x2(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.uniform(0, 10, n) + 8})


def same_x(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.uniform(0, 10, n)})


def test_a_regressor_reports_mean_and_errors(tmp_path: Path) -> None:
    model = drift_models.regressor(tmp_path)
    start = math.floor(time.time() / HOUR) * HOUR - 8 * HOUR
    written = write_log(model, tmp_path / "log", start=start, hours=6, before=same_x, after=shifted_x2,
                        truth=lambda X: (2 * X["x1"] + X["x2"]).to_numpy())
    assert report_rows(tmp_path / "log") == len(written.frame)
    report = monitor(Registry(tmp_path / "registry"), "price", tmp_path / "log")
    assert report.task == "regression" and report.classes is None
    assert report.features[0].name == "x2" and report.feature("x1").psi < 0.1
    assert set(report.realised) == {"mae", "rmse"} and report.estimated == {}
    assert 0 < report.realised["mae"] < 0.5  # the model learnt the rule: small errors
    assert set(report.series.prediction) == {"mean", "p10", "p90"}
    means = [m for m in report.series.prediction["mean"] if not math.isnan(m)]
    assert means[-1] > means[0] + 5  # x2 moved up by 8: so did the prediction
    assert report.prediction is not None and report.prediction.kind == "numeric" and report.prediction.psi > 0.25
    assert not any("probabilities" in n for n in report.notes)  # a regressor has none to miss
    json.dumps(report.to_dict(), allow_nan=False)


def test_since_does_not_open_older_files(served: tuple[LoadedModel, WrittenLog, Registry], tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A damaged file of an old day, written long ago: read (and warned about) without --since, never opened with
    it; the report is the same either way."""
    _model, written, registry = served
    log = tmp_path / "log"
    shutil.copytree(written.directory, log)
    old_day = log / "churn" / registry.get("churn").version / "2020-01-01"
    old_day.mkdir()
    (old_day / "part-20200101T000000-1-000001.parquet").write_bytes(b"PAR1 not parquet")
    reference = reference_of(registry.get("churn"))
    with caplog.at_level(logging.WARNING, logger="shipml.monitoring"):
        everything = collect(log, reference)
    assert "skipped unreadable log file" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shipml.monitoring"):
        recent = collect(log, reference, since=written.start)
    assert caplog.text == ""
    assert recent.rows == everything.rows == len(written.frame)
