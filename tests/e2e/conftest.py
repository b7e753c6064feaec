"""Models shared by the end-to-end server tests, trained and registered once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml

SLOW_MODEL_SOURCE = '''
import time

import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel


class SleepyRegressor(PythonModel):
    """Predicts x0; sleeps for the largest `delay` of the batch first (training saw only delay 0)."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        delay = float(X["delay"].max()) if len(X) else 0.0
        if delay > 0:
            time.sleep(min(delay, 5.0))
        return X["x0"].to_numpy(dtype=float)
'''


def numeric_data(rows: int = 400, columns: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"x{i}" for i in range(columns)])


def mixed_data(rows: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "tenure": rng.integers(0, 72, rows),
        "charges": rng.normal(70, 20, rows).round(2),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
        "paperless": rng.random(rows) > 0.5,
    })


@pytest.fixture(params=["uvicorn", "granian"])
def http_backend(request: pytest.FixtureRequest) -> str:
    """The HTTP server a test runs on: the tests that take this fixture run once on each."""
    return str(request.param)


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clf``: LightGBM on 6 floats (1.0.0 and 1.1.0); ``churn``: sklearn pipeline with an integer, a float,
    a category and a bool column and string classes; ``sleepy``: a custom model that sleeps on request."""
    root = tmp_path_factory.mktemp("served")
    X = numeric_data()
    y = (X["x0"] + X["x1"] > 0).astype(int)
    shipml.save_model(lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(X, y), "clf",
                      sample=X, registry=root)
    shipml.save_model(lgb.LGBMClassifier(n_estimators=5, num_leaves=3, verbose=-1).fit(X, y), "clf",
                      sample=X, registry=root)
    M = mixed_data()
    labels = np.where((M["tenure"] < 20) & (M["plan"] == "basic"), "leaves", "stays")
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["tenure", "charges"]),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "paperless"])]),
        LogisticRegression(max_iter=500))
    shipml.save_model(pipeline.fit(M, labels), "churn", sample=M, registry=root)
    module_dir = tmp_path_factory.mktemp("sleepy_code")
    (module_dir / "sleepy_model.py").write_text(SLOW_MODEL_SOURCE)
    spec = importlib.util.spec_from_file_location("sleepy_model", module_dir / "sleepy_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sleepy_model"] = module
    spec.loader.exec_module(module)
    S = numeric_data(50, 1).assign(delay=0.0)
    shipml.save_model(module.SleepyRegressor(), "sleepy", sample=S, trusted=True, registry=root)
    return root
