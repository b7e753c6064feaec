from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.contract.case import Case, Trained


def mixed_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "state": rng.choice(["CA", "NY", "TX", "WA"], n),
        "member": rng.random(n) > 0.5,
    })
    y = ((df["income"] > 50_000) ^ (df["state"] == "CA")).astype(int).to_numpy()
    return df, y


def _pipeline(_: Path) -> Trained:
    df, y = mixed_frame()
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"]),
            ("flag", "passthrough", ["member"]),
        ])),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(df, y)
    return Trained(model, df, y, model.predict, model.predict_proba)


def _hgb_string_labels(_: Path) -> Trained:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = np.array(["low", "mid", "high"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    model = HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba, own_file_types=True)


def _forest_regressor(_: Path) -> Trained:
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(150, 3)), columns=["x1", "x2", "x3"])
    y = X["x1"] * 2 + rng.normal(size=150)
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y)
    return Trained(model, X, y, model.predict, exact=False, own_file_types=True)


CASES = [
    Case("sklearn-pipeline-mixed", "sklearn", _pipeline),
    Case("sklearn-hgb-string-labels", "sklearn", _hgb_string_labels),
    Case("sklearn-forest-regressor", "sklearn", _forest_regressor),
]
