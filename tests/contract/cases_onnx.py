"""skl2onnx conversions. The reference predictions are what the user's own code gets: an onnxruntime session
run directly on the sample (a regressor's (n, 1) output flattened, a ZipMap's dicts put in class order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.contract.case import Case, Trained


def _session(model: Any) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _logistic_matrix(_: Path) -> Trained:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = to_onnx(LogisticRegression().fit(X, y), X[:1].astype(np.float32), options={"zipmap": False})
    session = _session(model)

    def run(data: np.ndarray) -> list[Any]:
        return session.run(None, {"X": np.asarray(data, dtype=np.float32)})  # type: ignore[no-any-return]

    return Trained(model, X, y, lambda d: run(d)[0], lambda d: run(d)[1])


def _mixed_pipeline_zipmap(_: Path) -> Trained:
    rng = np.random.default_rng(1)
    n = 300
    X = pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(np.float64),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "state": rng.choice(["CA", "NY", "TX", "WA"], n),
    })
    y = np.where((X["income"] > 50_000) ^ (X["state"] == "CA"), "churn", "stay")
    pipeline = Pipeline([
        ("pre", ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                                   ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"])])),
        ("clf", LogisticRegression()),
    ]).fit(X, y)
    model = convert_sklearn(pipeline, initial_types=[
        ("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
        ("state", StringTensorType([None, 1]))])
    session = _session(model)

    def run(data: pd.DataFrame) -> list[Any]:
        feed = {"age": data[["age"]].to_numpy(np.float32), "income": data[["income"]].to_numpy(np.float32),
                "state": data[["state"]].to_numpy(object)}
        return session.run(None, feed)  # type: ignore[no-any-return]

    def proba(data: pd.DataFrame) -> np.ndarray:
        return pd.DataFrame(run(data)[1])[["churn", "stay"]].to_numpy()  # ZipMap: one dict per row

    return Trained(model, X, y, lambda d: run(d)[0], proba)


def _regressor(_: Path) -> Trained:
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    target = X["a"] * 3.0 - X["c"]
    fitted = GradientBoostingRegressor(n_estimators=10, max_depth=3).fit(X.to_numpy(), target)
    model = to_onnx(fitted, X.to_numpy()[:1].astype(np.float32))
    session = _session(model)

    def predict(data: pd.DataFrame) -> np.ndarray:
        return session.run(None, {"X": data.to_numpy(np.float32)})[0].ravel()  # type: ignore[no-any-return]

    return Trained(model, X, target, predict, exact=False)


CASES = [
    Case("onnx-logistic-matrix", "onnx", _logistic_matrix),
    Case("onnx-pipeline-zipmap", "onnx", _mixed_pipeline_zipmap),
    Case("onnx-regressor", "onnx", _regressor),
]
