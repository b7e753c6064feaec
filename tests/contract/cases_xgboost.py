from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from tests.contract.case import Case, Trained, numeric_frame

SMALL = {"n_estimators": 8, "max_depth": 3, "n_jobs": 1}



def _classifier(_: Path) -> Trained:
    X, y = numeric_frame()
    model = xgb.XGBClassifier(**SMALL).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba)


def _multiclass(_: Path) -> Trained:
    X, _y = numeric_frame(seed=1)
    y = ((X["x0"] > 0).astype(int) + (X["x2"] > 0.5).astype(int)).to_numpy()
    model = xgb.XGBClassifier(**SMALL).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba)


def _regressor(_: Path) -> Trained:
    X, _y = numeric_frame(seed=2)
    target = X["x0"] * 3.0 + X["x3"]
    model = xgb.XGBRegressor(**SMALL).fit(X, target)
    return Trained(model, X, target, model.predict, exact=False)


def _booster_numpy(_: Path) -> Trained:
    X, y = numeric_frame(seed=3)
    array = X.to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(array, label=y), num_boost_round=8)

    def proba(data: np.ndarray) -> np.ndarray:
        p = booster.predict(xgb.DMatrix(data))
        return np.column_stack([1 - p, p])

    return Trained(booster, array, y, lambda d: (booster.predict(xgb.DMatrix(d)) > 0.5).astype(int), proba)


def _early_stopping(_: Path) -> Trained:
    X, y = numeric_frame(n=400, seed=5)
    noisy = np.where(np.random.default_rng(5).random(len(y)) < 0.2, 1 - y, y)  # so that it stops early
    model = xgb.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.3, n_jobs=1,
                              early_stopping_rounds=3, eval_metric="logloss")
    model.fit(X.iloc[:300], noisy[:300], eval_set=[(X.iloc[300:], noisy[300:])], verbose=False)
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()  # the case tests what it says
    return Trained(model, X, noisy, model.predict, model.predict_proba)


def _categorical_frame(_: Path) -> Trained:
    X, base = numeric_frame(seed=4)
    X["colour"] = pd.Categorical(np.random.default_rng(4).choice(["red", "green", "blue"], len(X)))
    y = (base ^ np.asarray(X["colour"] == "red")).astype(int)
    model = xgb.XGBClassifier(**SMALL, enable_categorical=True).fit(X, y)
    return Trained(model, X, y, model.predict, model.predict_proba)


def _ranker(_: Path) -> Trained:
    X, _y = numeric_frame(n=200, seed=6)
    relevance = np.clip(np.round(X["x0"].to_numpy() + 1), 0, 3).astype(int)
    qid = np.repeat(np.arange(20), 10)
    model = xgb.XGBRanker(**SMALL).fit(X, relevance, qid=qid)
    return Trained(model, X, relevance, model.predict, exact=False)


CASES = [
    Case("xgboost-classifier", "xgboost", _classifier),
    Case("xgboost-multiclass", "xgboost", _multiclass),
    Case("xgboost-regressor", "xgboost", _regressor),
    Case("xgboost-booster-numpy", "xgboost", _booster_numpy),
    Case("xgboost-early-stopping", "xgboost", _early_stopping),
    Case("xgboost-categorical", "xgboost", _categorical_frame),
    Case("xgboost-ranker", "xgboost", _ranker),
]
