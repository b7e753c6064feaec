"""XGBoost Booster and its scikit-learn API (XGBClassifier, XGBRegressor, XGBRanker), saved as UBJSON: no
pickle.

Prediction always goes through ``Booster.inplace_predict`` on a numeric matrix (a DataFrame only when the
model has categorical features): no sklearn-wrapper validation, no DMatrix built per batch. The wrapper's
semantics are reproduced from facts recorded at save time: the class labels, and the iteration range (an
XGBClassifier/XGBRegressor trained with early stopping predicts with its best iteration; a bare Booster, like
``Booster.predict``, with every tree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipml._optional import import_optional
from shipml.errors import SchemaError, UnsupportedModelError
from shipml.runtimes.base import (
    NOTHING_NEEDED,
    Grant,
    InputFormat,
    ModelFiles,
    SaveContext,
    Saved,
    TrustNeed,
    binary_proba,
    is_instance_of,
)

FILE = "model.ubj"

#: Objectives whose output is class probabilities, and those whose output is already a class (index).
PROBA_OBJECTIVES = ("binary:logistic", "multi:softprob")
LABEL_OBJECTIVES = ("binary:hinge", "multi:softmax")


def _xgb() -> Any:
    return import_optional("xgboost", "xgboost")


def _config(booster: Any) -> dict[str, Any]:
    learner: dict[str, Any] = json.loads(booster.save_config())["learner"]
    return learner


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _booster(model: Any, xgb: Any) -> Any:
    if isinstance(model, xgb.Booster):
        return model
    if not model.__sklearn_is_fitted__():
        raise UnsupportedModelError(f"{type(model).__name__} is not fitted: fit it before saving")
    return model.get_booster()


def _kind_and_classes(model: Any, xgb: Any, objective: str, num_class: int) -> tuple[str, list[Any] | None]:
    """("classifier" | "regressor" | "ranker" | "scorer", classes). A scorer gives raw margins, no labels."""
    if objective.startswith("rank:") or is_instance_of(model, "xgboost", "XGBRanker"):
        return "ranker", None
    if objective == "binary:logitraw":
        return "scorer", None
    if isinstance(model, xgb.XGBClassifier):
        return "classifier", [_plain(c) for c in model.classes_]
    if objective.startswith("binary:"):
        return "classifier", [0, 1]
    if objective.startswith("multi:"):
        return "classifier", list(range(num_class))
    return "regressor", None


def _iteration_range(model: Any, xgb: Any, best_iteration: int | None) -> list[int]:
    """What the user's own predict uses: the sklearn wrapper stops at the best iteration found by early
    stopping; ``Booster.predict`` uses every tree unless told otherwise."""
    if best_iteration is None or isinstance(model, xgb.Booster):
        return [0, 0]
    return [0, best_iteration + 1]


def _check_features(booster: Any, context: SaveContext) -> None:
    names = booster.feature_names
    columns = [str(c) for c in context.sample.columns]
    if context.input_kind == "dataframe" and names is not None and list(names) != columns:
        raise SchemaError(f"sample columns {columns} differ from the model's features {list(names)}"
                          " (same names, same order needed)")
    if booster.num_features() != len(columns):
        raise SchemaError(f"sample has {len(columns)} columns, the model takes {booster.num_features()}")


class XGBoostLoaded:
    def __init__(self, booster: Any, info: dict[str, Any]) -> None:
        self.booster = booster
        self.kind: str = info["kind"]
        self.objective: str = info["objective"]
        self.classes: list[Any] | None = info.get("classes")
        self.input_format: InputFormat = "frame" if info.get("categorical") else "matrix"
        self._iteration_range = tuple(info.get("iteration_range", (0, 0)))
        self._proba = self.kind == "classifier" and self.objective in PROBA_OBJECTIVES
        self._labels = np.asarray(self.classes, dtype=object if any(
            isinstance(c, str) for c in self.classes) else None) if self.classes else None

    def _raw(self, X: Any) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(X, iteration_range=self._iteration_range))

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        out = self._raw(X)
        proba = binary_proba(out) if out.ndim == 1 else out.astype(np.float64)
        assert self._labels is not None  # only called for classifiers with probabilities (has_proba)
        return self._labels[np.argmax(proba, axis=1)], proba

    def predict(self, X: Any) -> np.ndarray:
        if self._proba:
            return self.predict_with_proba(X)[0]
        out = self._raw(X)
        if self.kind == "classifier" and self._labels is not None:
            # multi:softmax gives the class index, binary:hinge 0/1 (the wrapper thresholds it at 0.5).
            index = out if self.objective.startswith("multi:") else out > 0.5
            return self._labels[index.astype(np.int64)]
        return out

    def predict_proba(self, X: Any) -> np.ndarray | None:
        if not self._proba:
            return None
        return self.predict_with_proba(X)[1]


class XGBoostRuntime:
    name: ClassVar[str] = "xgboost"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return is_instance_of(model, "xgboost", "Booster", "XGBModel")

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        xgb = _xgb()
        booster = _booster(model, xgb)
        config = _config(booster)
        objective = str(config["objective"]["name"])
        booster_type = str(config["gradient_booster"]["name"])
        if booster_type == "gblinear":
            raise UnsupportedModelError("XGBoost's gblinear booster cannot predict in place; shipml serves"
                                        " tree boosters (gbtree, dart) only")
        num_class = int(config["learner_model_param"].get("num_class", "0"))
        kind, classes = _kind_and_classes(model, xgb, objective, num_class)
        if kind == "classifier" and objective not in PROBA_OBJECTIVES + LABEL_OBJECTIVES:
            raise UnsupportedModelError(f"an XGBoost classifier with objective {objective!r} gives neither"
                                        f" probabilities nor labels shipml can read (use one of"
                                        f" {', '.join(PROBA_OBJECTIVES + LABEL_OBJECTIVES)})")
        _check_features(booster, context)
        best = booster.attr("best_iteration")
        best_iteration = int(best) if best is not None else None
        categorical = "c" in (booster.feature_types or [])
        if categorical and context.input_kind != "dataframe":
            raise SchemaError("this XGBoost model has categorical features: give the sample as a DataFrame"
                              " with pandas categorical columns")
        (directory / FILE).write_bytes(bytes(booster.save_raw(raw_format="ubj")))
        info: dict[str, Any] = {
            "kind": kind, "objective": objective, "classes": classes, "booster": booster_type,
            "iteration_range": _iteration_range(model, xgb, best_iteration),
            "categorical": categorical, "nthread": int(context.options.get("nthread", 1)),
        }
        if best_iteration is not None:
            info["best_iteration"] = best_iteration
        return Saved(files=[FILE], requirements=["xgboost"], info=info,
                     task="classification" if kind == "classifier" else "regression" if kind == "regressor"
                     else "other")

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return NOTHING_NEEDED  # UBJSON: XGBoost parses it, nothing in it runs

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> XGBoostLoaded:
        booster = _xgb().Booster()
        booster.load_model(bytearray(files.read_bytes(FILE)))
        # One thread per prediction: a server runs many requests in parallel (options: {"nthread": n}).
        booster.set_param({"nthread": int(info.get("nthread", 1))})
        return XGBoostLoaded(booster, info)


RUNTIME = XGBoostRuntime()
