"""Tiny real models in a real registry, shared by the CLI and evaluation tests.

``churn`` 1.0.0 is weak (it looks at age only), 1.1.0 is good (income decides the label); both take the same
columns, so either can be judged on the same labelled file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from shipml.cli import cli

WEAK = "1.0.0"
GOOD = "1.1.0"
TARGET = "churned"


def churn_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "state": rng.choice(["CA", "NY", "TX"], n),
    })
    y = np.where(df["income"] > 50_000, "yes", "no")
    return df, y


def _pipeline(numeric: list[str]) -> Pipeline:
    return Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"]),
        ])),
        ("clf", LogisticRegression(max_iter=500)),
    ])


def build_registry(root: Path) -> shipml.Registry:
    """A registry with churn 1.0.0 (weak) and 1.1.0 (good), and ``valid.csv`` (labelled) next to it."""
    registry = shipml.Registry(root / "registry")
    df, y = churn_frame(300, seed=0)
    weak = _pipeline(["age"]).fit(df, y)
    good = _pipeline(["age", "income"]).fit(df, y)
    shipml.save_model(weak, "churn", sample=df, target=y, registry=registry, version=WEAK,
                      description="age only", tags={"team": "growth"})
    shipml.save_model(good, "churn", sample=df, target=y, registry=registry, version=GOOD,
                      description="age and income")
    valid, y_valid = churn_frame(200, seed=1)
    valid.assign(**{TARGET: y_valid}).to_csv(root / "valid.csv", index=False)
    return registry


def run(workdir: Path, *args: str) -> Result:
    """The shipml CLI on the registry of ``workdir`` (see the ``workdir`` fixture in tests/conftest.py)."""
    return CliRunner().invoke(cli, ["--registry", str(workdir / "registry"), *args], catch_exceptions=False)
