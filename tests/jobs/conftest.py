"""Real tiny models saved into a registry in tmp_path, and input files written from their data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml


@dataclass
class Saved:
    registry: shipml.Registry
    ref: str
    model: object
    features: list[str]


def numeric_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"x{i}" for i in range(4)])
    frame.insert(0, "id", np.arange(n, dtype=np.int64))
    return frame


def mixed_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"r{i:05d}" for i in range(n)],
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "state": rng.choice(["CA", "NY", "TX", "WA"], n),
    })


@pytest.fixture
def lgb_model(registry: shipml.Registry) -> Saved:
    train = numeric_frame(500, seed=1)
    X = train.drop(columns="id")
    y = (X["x0"] + X["x1"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(X, y)
    registry.save(model, "lgb", sample=X)
    return Saved(registry, "lgb", model, list(X.columns))


@pytest.fixture
def pipeline_model(registry: shipml.Registry) -> Saved:
    train = mixed_frame(400, seed=1)
    X = train.drop(columns="id")
    y = ((X["income"] > 50_000) ^ (X["state"] == "CA")).astype(int).to_numpy()
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"]),
        ])),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(X, y)
    registry.save(model, "pipe", sample=X)
    return Saved(registry, "pipe", model, list(X.columns))


def write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as Parquet, CSV or JSON lines, by ``path``'s extension."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=300)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, double_precision=15)
    return path


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"id": str})
    return pd.read_json(path, lines=True, dtype=False)
