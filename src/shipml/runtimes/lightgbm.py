"""LightGBM Booster, LGBMClassifier and LGBMRegressor, saved in LightGBM's native text format.

Prediction always goes through the Booster (the sklearn wrapper adds validation and copies that cost more than
the trees on small batches); class labels are recovered from the probabilities exactly as the wrapper does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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

if TYPE_CHECKING:
    from shipml.runtimes.lightgbm_compiled import CompiledLightGBM

FILE = "model.txt"


def _lgb() -> Any:
    return import_optional("lightgbm", "lightgbm")


def import_lean(*, pandas: bool) -> bool:
    """Import LightGBM without its scikit-learn layer (and without pandas unless ``pandas``), as far as they are
    not imported yet. True when LightGBM was imported without at least one of them.

    ``import lightgbm`` imports scikit-learn (and through it SciPy's bulk) whenever it is installed, and pandas
    (and through it pyarrow) likewise: ~1.5 s and ~150 MB that predicting a numeric matrix with a Booster never
    uses. A process that only serves such models calls this first. Afterwards scikit-learn and pandas import
    normally, but LightGBM in this process neither has its scikit-learn wrappers as scikit-learn estimators nor
    takes DataFrames: a process that will load scikit-learn models holding LightGBM estimators, or LightGBM
    models fed with DataFrames (pandas categoricals), must not call it.
    """
    blocked = [name for name in (("sklearn",) if pandas else ("sklearn", "pandas")) if name not in sys.modules]
    if "lightgbm" in sys.modules or not blocked:
        return False
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return False
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return True


def _objective(booster: Any) -> str:
    return str(booster.dump_model(num_iteration=1).get("objective", "")).split(" ")[0]


class LightGBMLoaded:
    def __init__(self, booster: Any, info: dict[str, Any]) -> None:
        self.booster = booster
        self.kind: str = info["kind"]
        self.classes: list[Any] | None = info.get("classes")
        self.input_format: InputFormat = "frame" if info.get("pandas_categorical") else "matrix"
        self._labels = np.asarray(self.classes, dtype=object if self.classes and any(
            isinstance(c, str) for c in self.classes) else None) if self.classes else None
        self._compiled: CompiledLightGBM | None = None
        # Booster or compiled predictor; swapped by one assignment, so a predicting thread sees one or the other
        self._raw: Callable[[Any], np.ndarray] = self._booster_raw

    def _booster_raw(self, X: Any) -> np.ndarray:
        return np.asarray(self.booster.predict(X))

    @property
    def compiled(self) -> bool:
        """True once predictions go through the compiled model (see :meth:`use_compiled`)."""
        return self._compiled is not None

    def use_compiled(self, compiled: CompiledLightGBM, sample: np.ndarray, *, rtol: float = 1e-9,
                     atol: float = 1e-12) -> bool:
        """Predict with ``compiled`` from now on if it predicts ``sample`` (rows in signature order: the golden
        sample and more) as the Booster does; True when it switched. The Booster stays, for anything else."""
        if self.input_format != "matrix" or compiled.num_feature != self.booster.num_feature():
            return False
        X = np.ascontiguousarray(sample, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            return False
        expected, got = self._booster_raw(X), compiled.predict(X)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
            return False
        self._compiled = compiled
        self._raw = compiled.predict
        return True

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        out = self._raw(X)
        proba = binary_proba(out) if out.ndim == 1 else out
        assert self._labels is not None  # only called for classifiers (has_proba)
        return self._labels[np.argmax(proba, axis=1)], proba

    def predict(self, X: Any) -> np.ndarray:
        if self.kind == "classifier":
            return self.predict_with_proba(X)[0]
        return self._raw(X)

    def predict_proba(self, X: Any) -> np.ndarray | None:
        if self.kind != "classifier":
            return None
        return self.predict_with_proba(X)[1]


class LightGBMRuntime:
    name: ClassVar[str] = "lightgbm"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return is_instance_of(model, "lightgbm", "Booster", "LGBMModel")

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        lgb = _lgb()
        booster = model if isinstance(model, lgb.Booster) else getattr(model, "booster_", None)
        if booster is None:
            raise UnsupportedModelError(f"{type(model).__name__} is not fitted: fit it before saving")
        objective = _objective(booster)
        classes: list[Any] | None = None
        if isinstance(model, lgb.LGBMClassifier):
            kind = "classifier"
            classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
        elif isinstance(model, lgb.Booster) and objective in ("binary", "cross_entropy"):
            kind, classes = "classifier", [0, 1]
        elif isinstance(model, lgb.Booster) and objective in ("multiclass", "multiclassova"):
            kind, classes = "classifier", list(range(booster.num_model_per_iteration()))
        elif objective.startswith(("lambdarank", "rank_xendcg")):
            kind = "ranker"
        else:
            kind = "regressor"
        names = booster.feature_name()
        if context.input_kind == "dataframe" and list(context.sample.columns) != list(names):
            raise SchemaError(f"sample columns {list(context.sample.columns)} differ from the model's features"
                              f" {names} (same names, same order needed)")
        if len(names) != context.sample.shape[1]:
            raise SchemaError(f"sample has {context.sample.shape[1]} columns, the model takes {len(names)}")
        (directory / FILE).write_text(booster.model_to_string(), encoding="utf-8")
        info = {"kind": kind, "objective": objective, "classes": classes,
                "pandas_categorical": bool(booster.pandas_categorical)}
        return Saved(files=[FILE], requirements=["lightgbm"], info=info,
                     task="classification" if kind == "classifier" else "regression" if kind == "regressor"
                     else "other")

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return NOTHING_NEEDED  # a text model: LightGBM parses it, nothing in it runs

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> LightGBMLoaded:
        booster = _lgb().Booster(model_str=files.read_bytes(FILE).decode("utf-8"))
        return LightGBMLoaded(booster, info)


RUNTIME = LightGBMRuntime()
