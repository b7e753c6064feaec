from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from tests.contract.case import Case, Trained, numeric_frame


def _classifier(_: Path) -> Trained:
    X, y = numeric_frame()
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba)


def _multiclass_string_labels(_: Path) -> Trained:
    X, _ = numeric_frame(seed=1)
    labels = np.array(["a", "b", "c"])[(X["x0"] > 0).astype(int) + (X["x2"] > 0.5).astype(int)]
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, labels)
    return Trained(model, X, labels, model.predict, model.predict_proba)


def _regressor(_: Path) -> Trained:
    X, _ = numeric_frame(seed=2)
    target = X["x0"] * 3.0 + X["x3"]
    model = lgb.LGBMRegressor(n_estimators=10, num_leaves=7, verbose=-1).fit(X, target)
    return Trained(model, X, target, model.predict, exact=False)


def _booster_numpy(_: Path) -> Trained:
    X, y = numeric_frame(seed=3)
    array = X.to_numpy()
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(array, y), 10)

    def proba(data: np.ndarray) -> np.ndarray:
        p = booster.predict(data)
        return np.column_stack([1 - p, p])

    return Trained(booster, array, y, lambda d: (booster.predict(d) > 0.5).astype(int), proba)


def _categorical_frame(_: Path) -> Trained:
    X, y = numeric_frame(seed=4)
    X["colour"] = pd.Categorical(np.random.default_rng(4).choice(["red", "green", "blue"], len(X)))
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba)


CASES = [
    Case("lightgbm-classifier", "lightgbm", _classifier),
    Case("lightgbm-multiclass-strings", "lightgbm", _multiclass_string_labels),
    Case("lightgbm-regressor", "lightgbm", _regressor),
    Case("lightgbm-booster-numpy", "lightgbm", _booster_numpy),
    Case("lightgbm-categorical", "lightgbm", _categorical_frame),
]
