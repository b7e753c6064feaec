"""Everyday scikit-learn objects save without trust and load back reproducing their golden sample (issue #12,
item 14); a genuinely unsafe type still needs trust.

Each model is trained here on mixed data (numeric columns with missing values, string categories with nulls)
and saved with ``trusted=False``. It is loaded back the way the registry loads a version it stored: with the
manifest's digest recorded at save time (``manifest_sha256``), which makes the package sealed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    StackingClassifier,
    VotingClassifier,
)
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import shipml
from shipml.errors import UnsafeModelError
from shipml.package.loaded import load_package
from shipml.package.manifest import MANIFEST, manifest_digest
from shipml.runtimes.sklearn import DATA_TYPES, OWN_FILE_TYPES

NUMERIC = ["age", "income"]
CATEGORICAL = ["city", "plan"]


def mixed(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Numeric columns with missing values, string categories with nulls; a class and a numeric target."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    age[::9] = np.nan
    income = rng.normal(50_000, 12_000, n).round(2)
    income[::13] = np.nan
    city = rng.choice(np.array(["paris", "lyon", "nice", None], dtype=object), n)
    plan = rng.choice(["basic", "pro"], n)
    X = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})
    score = np.nan_to_num(income, nan=50_000) / 10_000 + (plan == "pro") * 2 + (city == "paris") * 1.5
    y_class = (score > np.median(score)).astype(int)
    return X, y_class, score


def prep(numeric: Any = None, categorical: Any = None) -> ColumnTransformer:
    """Impute then encode: what an everyday tabular pipeline does before its estimator."""
    return ColumnTransformer([
        ("num", numeric if numeric is not None else make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
        ("cat", categorical if categorical is not None else make_pipeline(
            SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), CATEGORICAL),
    ])


def ordinal_then(estimator: Any) -> Pipeline:
    """Categories as ordinal codes (columns 0, 1), numbers passed through with their NaN: for estimators that
    take categorical features and missing values natively."""
    return make_pipeline(ColumnTransformer([
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1),
         CATEGORICAL),
        ("num", "passthrough", NUMERIC),
    ]), estimator)


def clf(estimator: Any, numeric: Any = None, categorical: Any = None) -> Pipeline:
    return make_pipeline(prep(numeric, categorical), estimator)


#: id -> (model, task). Every one must save without trust.
EVERYDAY: dict[str, tuple[Callable[[], Any], str]] = {
    "simple-imputer-mean": (lambda: clf(LogisticRegression(), numeric=SimpleImputer()), "class"),
    "simple-imputer-most-frequent": (lambda: clf(LogisticRegression(),
                                                 numeric=SimpleImputer(strategy="most_frequent")), "class"),
    "simple-imputer-constant": (lambda: clf(LogisticRegression(), SimpleImputer(strategy="constant", fill_value=0),
                                            make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                                          OneHotEncoder(handle_unknown="ignore"))), "class"),
    "knn-imputer": (lambda: clf(LogisticRegression(), numeric=make_pipeline(KNNImputer(), StandardScaler())),
                    "class"),
    "standard-scaler": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), StandardScaler())),
                        "class"),
    "min-max-scaler": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), MinMaxScaler())),
                       "class"),
    "robust-scaler": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), RobustScaler())),
                      "class"),
    "max-abs-scaler": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), MaxAbsScaler())),
                       "class"),
    "quantile-transformer": (lambda: clf(LogisticRegression(), numeric=make_pipeline(
        SimpleImputer(), QuantileTransformer(n_quantiles=50))), "class"),
    "power-transformer": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), PowerTransformer())),
                          "class"),
    "one-hot-encoder": (lambda: clf(LogisticRegression()), "class"),
    "ordinal-encoder": (lambda: clf(LogisticRegression(), categorical=OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)), "class"),
    "target-encoder": (lambda: clf(LogisticRegression(), categorical=make_pipeline(
        SimpleImputer(strategy="most_frequent"), TargetEncoder(random_state=0))), "class"),
    "polynomial-features": (lambda: clf(Ridge(), numeric=make_pipeline(SimpleImputer(), StandardScaler(),
                                                                      PolynomialFeatures(2))), "regression"),
    "kbins-discretizer": (lambda: clf(LogisticRegression(), numeric=make_pipeline(
        SimpleImputer(), KBinsDiscretizer(n_bins=4, quantile_method="averaged_inverted_cdf"))), "class"),
    "column-selector": (lambda: make_pipeline(ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), make_column_selector(dtype_include="number")),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         make_column_selector(dtype_exclude="number")),
    ]), LogisticRegression()), "class"),
    "logistic-regression": (lambda: clf(LogisticRegression(C=0.5)), "class"),
    "sgd-classifier": (lambda: clf(SGDClassifier(random_state=0)), "class"),
    "linear-regression": (lambda: clf(LinearRegression()), "regression"),
    "ridge": (lambda: clf(Ridge()), "regression"),
    "random-forest-classifier": (lambda: clf(RandomForestClassifier(n_estimators=8, random_state=0)), "class"),
    "random-forest-regressor": (lambda: clf(RandomForestRegressor(n_estimators=8, random_state=0)), "regression"),
    "extra-trees-classifier": (lambda: clf(ExtraTreesClassifier(n_estimators=8, random_state=0)), "class"),
    "extra-trees-regressor": (lambda: clf(ExtraTreesRegressor(n_estimators=8, random_state=0)), "regression"),
    "gradient-boosting-classifier": (lambda: clf(GradientBoostingClassifier(n_estimators=10, random_state=0)),
                                     "class"),
    "gradient-boosting-regressor": (lambda: clf(GradientBoostingRegressor(n_estimators=10, random_state=0)),
                                    "regression"),
    "hist-gradient-boosting-classifier-categorical": (lambda: ordinal_then(HistGradientBoostingClassifier(
        max_iter=15, categorical_features=[0, 1], random_state=0)), "class"),
    "hist-gradient-boosting-regressor-categorical": (lambda: ordinal_then(HistGradientBoostingRegressor(
        max_iter=15, categorical_features=[0, 1], random_state=0)), "regression"),
    "decision-tree-classifier": (lambda: clf(DecisionTreeClassifier(max_depth=5, random_state=0)), "class"),
    "decision-tree-regressor": (lambda: clf(DecisionTreeRegressor(max_depth=5, random_state=0)), "regression"),
    "k-neighbors-classifier": (lambda: clf(KNeighborsClassifier()), "class"),
    "k-neighbors-classifier-ball-tree": (lambda: clf(KNeighborsClassifier(algorithm="ball_tree")), "class"),
    "k-neighbors-regressor": (lambda: clf(KNeighborsRegressor()), "regression"),
    "svc-probability": (lambda: clf(SVC(probability=True, random_state=0)), "class"),
    "svr": (lambda: clf(SVR()), "regression"),
    "mlp-classifier": (lambda: clf(MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)), "class"),
    "mlp-regressor": (lambda: clf(MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0)),
                      "regression"),
    "gaussian-nb": (lambda: make_pipeline(prep(categorical=make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore", sparse_output=False))),
        GaussianNB()), "class"),
    "voting-soft": (lambda: clf(VotingClassifier([("lr", LogisticRegression()),
                                                  ("dt", DecisionTreeClassifier(max_depth=3, random_state=0))],
                                                 voting="soft")), "class"),
    "stacking": (lambda: clf(StackingClassifier([("lr", LogisticRegression()),
                                                 ("rf", RandomForestClassifier(n_estimators=5, random_state=0))])),
                 "class"),
    "calibrated": (lambda: clf(CalibratedClassifierCV(LogisticRegression(), cv=3)), "class"),
}


def _fit(make: Callable[[], Any], task: str) -> tuple[Any, pd.DataFrame]:
    X, y_class, y_num = mixed()
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of tiny fits are not what is tested here
        model.fit(X, y_class if task == "class" else y_num)
    return model, X


@pytest.mark.parametrize("model_id", list(EVERYDAY))
def test_everyday_model_saves_without_trust_and_reproduces(model_id: str, tmp_path: Path) -> None:
    make, task = EVERYDAY[model_id]
    model, X = _fit(make, task)
    mv = shipml.save_model(model, "m", sample=X, registry=tmp_path / "reg")  # trusted=False
    manifest = mv.manifest
    assert manifest.runtime.name == "sklearn"
    assert not manifest.trust.required and manifest.trust.types == []
    # loaded as the registry loads a version it stored: its manifest's digest was recorded at save time
    loaded = load_package(mv.path, manifest_sha256=manifest_digest((mv.path / MANIFEST).read_bytes()))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))  # the golden check already passed, too
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-9, atol=1e-12)


def test_the_allowlists_hold_no_callable_but_the_one_checked_in_place() -> None:
    """No builtins at all, no function, nothing named like eval/exec/system; the single callable
    (HistGradientBoosting's check_array partial) is admitted only in files shipml wrote."""
    import importlib

    for name in DATA_TYPES | OWN_FILE_TYPES:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert isinstance(obj, type) or name == "sklearn.utils.validation.check_array", name
        assert not name.startswith(("builtins.", "os.", "subprocess.", "sys.", "posix.", "importlib."))
    assert not DATA_TYPES & OWN_FILE_TYPES
    assert "functools.partial" not in DATA_TYPES and "sklearn.utils.validation.check_array" not in DATA_TYPES


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A user's own transformer: its code is the user's, not scikit-learn's."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        self.fitted_ = True
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X, dtype=float) * 2


UNSAFE: dict[str, tuple[Callable[[], Any], str]] = {
    "user-transformer": (lambda: clf(LogisticRegression(), numeric=make_pipeline(SimpleImputer(), Doubler())),
                         "Doubler"),
    "function-transformer-lambda": (lambda: clf(LogisticRegression(), numeric=make_pipeline(
        SimpleImputer(), FunctionTransformer(lambda a: a * 2))), "<lambda>"),
    "function-transformer-builtin": (lambda: clf(LogisticRegression(), numeric=make_pipeline(
        SimpleImputer(), FunctionTransformer(abs))), "builtins.abs"),
}


@pytest.mark.parametrize("model_id", list(UNSAFE))
def test_a_genuinely_unsafe_type_still_needs_trust(model_id: str, tmp_path: Path) -> None:
    make, named = UNSAFE[model_id]
    model, X = _fit(make, "class")
    with pytest.raises(UnsafeModelError, match="trusted=True") as caught:
        shipml.save_model(model, "m", sample=X, registry=tmp_path / "reg")
    assert any(named in t for t in caught.value.unsafe_types), caught.value.unsafe_types
    if model_id == "function-transformer-lambda":
        return  # a lambda defined in a test module cannot be found by name when loading; trust cannot help it
    mv = shipml.save_model(model, "m", sample=X, registry=tmp_path / "reg", trusted=True)
    assert mv.manifest.trust.required and any(named in t for t in mv.manifest.trust.types)
    assert mv.manifest.trust.granted_by is not None


def test_tree_types_need_trust_outside_a_registry(tmp_path: Path) -> None:
    """skops refuses trees by default (a crafted file can make scikit-learn read out of bounds): shipml admits them
    without trust only in files it wrote, i.e. sealed by the registry's record of the manifest."""
    model, X = _fit(EVERYDAY["random-forest-classifier"][0], "class")
    mv = shipml.save_model(model, "m", sample=X, registry=tmp_path / "reg")
    with pytest.raises(UnsafeModelError, match=r"sklearn\.tree\._tree\.Tree") as caught:
        shipml.load_model(mv.path)
    assert caught.value.unsafe_types == ["sklearn.tree._tree.Tree"]
    assert "sklearn.tree._tree.Tree" in sio.get_untrusted_types(file=mv.path / "model" / "model.skops")
    np.testing.assert_array_equal(shipml.load_model(mv.path, trusted=True).predict(X), model.predict(X))
