"""Tiny real models of every exported family, trained here and saved into a registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, TransformerMixin, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numbers (one with nulls), an integer, a boolean, and a category with nulls."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "tenure": rng.uniform(0, 10, n),
        "state": rng.choice(["CA", "NY", "TX", "WA"], n).astype(object),
        "plan": rng.choice(["basic", "pro"], n),
    })
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    frame.loc[rng.random(n) < 0.1, "state"] = np.nan
    return frame


def _target(frame: pd.DataFrame) -> np.ndarray:
    score = frame["income"].fillna(40_000) / 10_000 + frame["tenure"] - (frame["state"] == "CA") * 2
    return np.where(score > 7.5, "churn", "stay")


def _prep(scale: bool) -> ColumnTransformer:
    """Trees take the numbers unscaled: a scaler computed in 32-bit floats moves values by ~1e-7, enough to send a
    row down the other branch of a split (the parity proof refuses such an export; seen with a random forest)."""
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]) if scale else SimpleImputer()
    return ColumnTransformer([
        ("num", numbers, ["age", "income", "tenure"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["state", "plan"]),
    ])


def _pipeline(estimator: Any, scale: bool = True) -> Callable[[], tuple[Any, pd.DataFrame, Any]]:
    def build() -> tuple[Any, pd.DataFrame, Any]:
        frame = mixed_frame()
        y = _target(frame)
        if is_regressor(estimator):
            y = frame["age"] * 100.0 + frame["income"].fillna(0) / 10
        return Pipeline([("pre", _prep(scale)), ("model", estimator)]).fit(frame, y), frame, None

    return build


def _numeric(rows: int = 500, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5)) * [1, 10, 100, 1, 0.1]
    X[rng.random(X.shape) < 0.08] = np.nan
    return X, np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) / 10


def _sk_matrix() -> tuple[Any, Any, Any]:
    X, score = _numeric()
    X = np.nan_to_num(X)
    return LogisticRegression(max_iter=1000).fit(X, (score > 0).astype(int)), X, None


def _lgb_binary() -> tuple[Any, Any, Any]:
    X, score = _numeric()
    return lgb.LGBMClassifier(n_estimators=40, num_leaves=7, verbose=-1).fit(X, (score > 0).astype(int)), X, None


def _lgb_multiclass() -> tuple[Any, Any, Any]:
    X, score = _numeric(seed=2)
    y = np.digitize(score, [-1.0, 1.0])
    labels = np.array(["low", "mid", "high"])[y]
    return lgb.LGBMClassifier(n_estimators=30, num_leaves=7, verbose=-1).fit(X, labels), X, None


def _lgb_regressor() -> tuple[Any, Any, Any]:
    X, score = _numeric(seed=3)
    return lgb.LGBMRegressor(n_estimators=40, num_leaves=7, verbose=-1).fit(X, score * 50), X, None


def _xgb_binary() -> tuple[Any, Any, Any]:
    X, score = _numeric(seed=4)
    return xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X, (score > 0).astype(int)), X, None


def _xgb_multiclass_early_stopped() -> tuple[Any, Any, Any]:
    X, score = _numeric(seed=5)
    y = np.digitize(score, [-1.0, 1.0])
    model = xgb.XGBClassifier(n_estimators=200, max_depth=3, early_stopping_rounds=3)
    model.fit(X[:400], y[:400], eval_set=[(X[400:], y[400:])], verbose=False)
    return model, X, None


def _xgb_regressor() -> tuple[Any, Any, Any]:
    X, score = _numeric(seed=6)
    return xgb.XGBRegressor(n_estimators=30, max_depth=3).fit(X, score * 1000), X, None


#: name -> what to train (model, sample, target); every family and task shipml exports
FAMILIES: dict[str, Callable[[], tuple[Any, Any, Any]]] = {
    "sk_logistic_mixed": _pipeline(LogisticRegression(max_iter=1000)),
    "sk_forest_mixed": _pipeline(RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0), scale=False),
    "sk_boosting_mixed": _pipeline(GradientBoostingClassifier(n_estimators=25, random_state=0), scale=False),
    "sk_boosting_regressor": _pipeline(GradientBoostingRegressor(n_estimators=25, random_state=0), scale=False),
    "sk_linear_regressor": _pipeline(LinearRegression()),
    "sk_logistic_matrix": _sk_matrix,
    "lgb_binary": _lgb_binary,
    "lgb_multiclass": _lgb_multiclass,
    "lgb_regressor": _lgb_regressor,
    "xgb_binary": _xgb_binary,
    "xgb_multiclass_early_stopped": _xgb_multiclass_early_stopped,
    "xgb_regressor": _xgb_regressor,
}


def register(registry: shipml.Registry, name: str) -> str:
    model, sample, target = FAMILIES[name]()
    shipml.save_model(model, name, sample=sample, target=target, registry=registry)
    return name


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A user's own transformer: no converter knows it."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X, dtype=float) * 2
