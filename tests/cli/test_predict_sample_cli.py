from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import shipml
from tests.cli.gate_models import GOOD, run


def test_predict_sample_table(workdir: Path) -> None:
    result = run(workdir, "predict-sample", f"churn:{GOOD}", str(workdir / "valid.csv"), "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"churn:{GOOD}: 3 row(s) of {workdir / 'valid.csv'}"
    assert lines[1].split() == ["row", "prediction"]
    assert [line.split()[1] for line in lines[3:]] == pd.read_csv(workdir / "valid.csv").head(3).pipe(
        lambda f: ["yes" if v > 50_000 else "no" for v in f["income"]])
    assert "ignored columns the model does not take: churned" in result.stderr


def test_predict_sample_probabilities(workdir: Path) -> None:
    result = run(workdir, "predict-sample", "churn", str(workdir / "valid.csv"), "--proba", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["row", "prediction", "p(no)", "p(yes)"]
    for line in lines[3:]:
        _, _, p_no, p_yes = line.split()
        assert float(p_no) + float(p_yes) == pytest.approx(1, abs=1e-3)


def test_predict_sample_json(workdir: Path) -> None:
    frame = pd.read_csv(workdir / "valid.csv").head(5)
    frame.to_json(workdir / "rows.jsonl", orient="records", lines=True)
    result = run(workdir, "--json", "predict-sample", "churn", str(workdir / "rows.jsonl"), "--proba")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["model"] == f"churn:{GOOD}"
    assert data["rows"] == 5
    assert data["ignored_columns"] == ["churned"]
    first = data["predictions"][0]
    assert first["row"] == 0
    assert first["prediction"] in ("yes", "no")
    assert set(first["probabilities"]) == {"no", "yes"}


def test_predict_sample_signature_problem_is_one_error(workdir: Path) -> None:
    frame = pd.read_csv(workdir / "valid.csv").head(4).astype({"income": object})
    frame.loc[1, "income"] = "lots"
    frame.drop(columns=["state"]).to_csv(workdir / "bad.csv", index=False)
    result = run(workdir, "predict-sample", "churn", str(workdir / "bad.csv"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: input does not match the model's signature: column 'state'")
    assert result.stderr.count("\n") == 1


def test_predict_sample_missing_file(workdir: Path) -> None:
    result = run(workdir, "predict-sample", "churn", str(workdir / "absent.csv"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no such data file")


def test_predict_sample_regression_and_proba_refused(workdir: Path) -> None:
    X = pd.DataFrame({"x": np.arange(20, dtype=float)})
    model = LinearRegression().fit(X, 2 * X["x"])
    shipml.save_model(model, "lin", sample=X, registry=workdir / "registry")
    X.head(3).to_csv(workdir / "x.csv", index=False)
    data = orjson.loads(run(workdir, "--json", "predict-sample", "lin", str(workdir / "x.csv")).stdout)
    assert [r["prediction"] for r in data["predictions"]] == pytest.approx([0.0, 2.0, 4.0])
    result = run(workdir, "predict-sample", "lin", str(workdir / "x.csv"), "--proba")
    assert result.exit_code == 1
    assert result.stderr == "error: lin:1.0.0 gives no probabilities (task: regression)\n"
