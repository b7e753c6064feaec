"""What cannot be exported is refused with the reason: which step, which estimator (never a converter's
traceback), and nothing is written."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

import shipml
from shipml.cli import cli
from shipml.errors import UnsupportedModelError
from shipml.export import export_onnx
from shipml.runtimes.pyfunc import PythonModel
from tests.export.models import Doubler, mixed_frame


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return np.where(frame["tenure"] > 5, "churn", "stay")


def _refused(registry: shipml.Registry, name: str, out: Path) -> str:
    with pytest.raises(UnsupportedModelError) as caught:
        export_onnx(registry.load(name), out)
    assert not out.exists()
    assert [p for p in out.parent.iterdir() if p.name.startswith(".")] == []
    message = str(caught.value)
    assert "Traceback" not in message and "\n" not in message
    return message


def test_a_custom_transformer_is_refused_naming_its_step(registry: shipml.Registry, tmp_path: Path) -> None:
    frame = mixed_frame()[["age", "tenure", "plan"]]
    model = Pipeline([("pre", ColumnTransformer([("mine", Doubler(), ["age", "tenure"]),
                                                 ("cat", OneHotEncoder(), ["plan"])])),
                      ("clf", LogisticRegression())]).fit(frame, _labels(mixed_frame()))
    shipml.save_model(model, "custom", sample=frame, registry=registry, trusted=True)
    message = _refused(registry, "custom", tmp_path / "out")
    assert "step 'pre/mine' is a Doubler (tests.export.models)" in message
    assert "skl2onnx has no converter" in message


def test_a_function_transformer_is_refused_naming_its_function(registry: shipml.Registry, tmp_path: Path) -> None:
    frame = mixed_frame()[["age", "tenure"]]
    model = Pipeline([("log", FunctionTransformer(np.log1p)), ("clf", LogisticRegression())]).fit(
        frame, _labels(mixed_frame()))
    shipml.save_model(model, "function", sample=frame, registry=registry, trusted=True)
    message = _refused(registry, "function", tmp_path / "out")
    assert "step 'log' is a FunctionTransformer calling log1p" in message


class Constant(PythonModel):
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(X))


def test_a_pyfunc_model_is_refused(registry: shipml.Registry, tmp_path: Path) -> None:
    shipml.save_model(Constant(), "code", sample=mixed_frame()[["age"]], registry=registry, trusted=True)
    message = _refused(registry, "code", tmp_path / "out")
    assert "runtime is 'pyfunc'" in message and "Python code" in message


def test_lightgbm_on_pandas_categoricals_is_refused(registry: shipml.Registry, tmp_path: Path) -> None:
    frame = mixed_frame()[["age", "tenure", "plan"]].assign(plan=lambda f: f["plan"].astype("category"))
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(frame, _labels(mixed_frame()))
    shipml.save_model(model, "categorical", sample=frame, registry=registry)
    message = _refused(registry, "categorical", tmp_path / "out")
    assert "pandas categorical columns ['plan']" in message


def test_datetime_inputs_are_refused(registry: shipml.Registry, tmp_path: Path) -> None:
    frame = pd.DataFrame({"when": pd.date_range("2026-01-01", periods=50, freq="D"), "x": np.arange(50.0)})

    class Clock(PythonModel):
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.zeros(len(X))

    shipml.save_model(Clock(), "clock", sample=frame, registry=registry, trusted=True)
    assert "datetime inputs ['when'] have no ONNX tensor type" in _refused(registry, "clock", tmp_path / "out")


def test_a_converter_failure_names_the_step_and_estimator(registry: shipml.Registry, tmp_path: Path) -> None:
    """skl2onnx 1.20 fails on scikit-learn 1.9's HistGradientBoosting trees; whichever way it goes, the user gets
    a bundle with parity proved or one line naming the step and estimator."""
    frame = mixed_frame()[["age", "tenure"]]
    model = Pipeline([("clf", HistGradientBoostingClassifier(max_iter=10))]).fit(frame, _labels(mixed_frame()))
    shipml.save_model(model, "hist", sample=frame, registry=registry, trusted=True)
    try:
        result = export_onnx(registry.load("hist"), tmp_path / "out", rows=300)
    except UnsupportedModelError as exc:
        message = str(exc)
        assert "skl2onnx failed on step 'clf' (HistGradientBoostingClassifier): " in message, message
        assert "Traceback" not in message and "\n" not in message
    else:
        assert result.parity.n_differing == 0


def test_the_cli_says_why_in_one_line(registry: shipml.Registry, tmp_path: Path) -> None:
    shipml.save_model(Constant(), "code", sample=mixed_frame()[["age"]], registry=registry, trusted=True)
    result = CliRunner().invoke(cli, ["--registry", str(registry.root), "export", "code", "-o", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot export code:1.0.0 to ONNX: its runtime is 'pyfunc'")
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()
