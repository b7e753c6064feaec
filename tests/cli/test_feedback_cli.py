"""``shipml feedback NAME FILE --log DIR`` end to end: a real tiny model scores a file with ``shipml predict
--log``, labels arrive later as CSV or Parquet, and the realised accuracy equals the offline one on those rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

import shipml
from shipml.cli import cli
from shipml.monitoring.feedback import read_feedback


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, pd.DataFrame, str, Path]:
    """(registry, the scored data with its true labels, the job's request id, the log directory)."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"age": rng.integers(18, 80, 300), "income": rng.normal(50, 15, 300).round(2)})
    y = ((X["income"] + rng.normal(0, 10, 300)) > 50).map({True: "yes", False: "no"})
    registry = tmp_path / "registry"
    shipml.Registry(registry).save(LogisticRegression(max_iter=500).fit(X.iloc[:200], y.iloc[:200]), "churn",
                                   sample=X.iloc[:200])
    data = X.iloc[200:].reset_index(drop=True)
    data.to_csv(tmp_path / "batch.csv", index=False)
    log_dir = tmp_path / "log"
    result = _invoke("predict", "churn", str(tmp_path / "batch.csv"), "-o", str(tmp_path / "scores.parquet"),
                     "--workers", "1", "-q", "--log", str(log_dir), "--registry", str(registry), "--json")
    assert result.exit_code == 0, result.output
    request_id = orjson.loads(result.stdout)["log_request_id"]
    data["truth"] = y.iloc[200:].to_numpy()
    data["prediction"] = pd.read_parquet(tmp_path / "scores.parquet")["prediction"].to_numpy()
    return registry, data, request_id, log_dir


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_feedback_matches_the_logged_rows_and_gives_the_offline_accuracy(
        scored: tuple[Path, pd.DataFrame, str, Path], tmp_path: Path, suffix: str) -> None:
    registry, data, request_id, log_dir = scored
    labels = pd.DataFrame({"request_id": request_id, "row": np.arange(len(data)), "target": data["truth"]})
    labels = pd.concat([labels, pd.DataFrame({"request_id": ["unknown"], "row": [0], "target": ["yes"]})])
    path = tmp_path / f"labels{suffix}"
    labels.to_csv(path, index=False) if suffix == ".csv" else labels.to_parquet(path, index=False)
    result = _invoke("feedback", "churn", str(path), "--log", str(log_dir), "--json", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert out["labels"] == len(data) + 1 and out["matched_rows"] == len(data) and out["unmatched_labels"] == 1
    assert out["metrics"]["accuracy"] == pytest.approx(accuracy_score(data["truth"], data["prediction"]))
    assert out["metrics"]["f1"] == pytest.approx(f1_score(data["truth"], data["prediction"], pos_label="yes"))
    assert read_feedback(log_dir, "churn").num_rows == len(data) + 1  # stored
    text = _invoke("feedback", "churn", str(path), "--log", str(log_dir))
    assert text.exit_code == 0 and "matched 100 logged row(s)" in text.output and "accuracy" in text.output


def test_feedback_errors_are_one_line_and_store_nothing(scored: tuple[Path, pd.DataFrame, str, Path],
                                                        tmp_path: Path) -> None:
    _, _, request_id, log_dir = scored
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,label\n{request_id},yes\n")
    result = _invoke("feedback", "churn", str(bad), "--log", str(log_dir))
    assert result.exit_code == 1 and "no column 'request_id', 'target'" in result.output
    result = _invoke("feedback", "../churn", str(bad), "--log", str(log_dir))
    assert result.exit_code == 1 and "invalid model name" in result.output
    result = _invoke("feedback", "churn", str(tmp_path / "missing.csv"), "--log", str(log_dir))
    assert result.exit_code == 1 and "missing.csv" in result.output
    assert read_feedback(log_dir, "churn").num_rows == 0
