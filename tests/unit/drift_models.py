"""Real tiny models for the drift tests, saved with shipml into tmp_path: a classifier over an int, a nullable
float, a category, a bool and a datetime (dropped by the model, kept by the signature), and a regressor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from shipml.package.loaded import LoadedModel

STATES = ["CA", "NY", "TX", "WA", "OR"]
STATE_P = [0.4, 0.25, 0.2, 0.1, 0.05]
FEATURES = ["age", "income", "state", "member", "when"]


def frame(n: int, seed: int) -> pd.DataFrame:
    """Rows from the training distribution (any seed: the same distribution)."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000, 15_000, n).round(2)
    income[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": income,
        "state": rng.choice(STATES, n, p=STATE_P),
        "member": rng.random(n) > 0.3,
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 24, n), "h"),
    })


def classifier(root: Path, rows: int = 3000) -> LoadedModel:
    X = frame(rows, seed=0)
    y = ((X["income"].fillna(50_000) > 50_000) ^ (X["state"] == "CA")).astype(int).to_numpy()
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"]),
            ("flag", "passthrough", ["member"]),
        ], remainder="drop")),  # "when" is an input the model ignores: the signature and profile keep it
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(X, y)
    shipml.save_model(model, "churn", sample=X, target=y, registry=root / "registry", golden_rows=20)
    return shipml.load_model("churn", registry=root / "registry")


def regressor(root: Path, rows: int = 2000) -> LoadedModel:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.uniform(0, 10, rows)})
    y = 2 * X["x1"] + X["x2"] + rng.normal(scale=0.1, size=rows)
    shipml.save_model(LinearRegression().fit(X, y), "price", sample=X, target=y, registry=root / "registry",
                      golden_rows=20)
    return shipml.load_model("price", registry=root / "registry")
