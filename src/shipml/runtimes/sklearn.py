"""scikit-learn estimators and Pipelines, saved with skops (no pickle).

skops loads only the types it is told to trust, and tells which types a file asks for
(``get_untrusted_types``, read from the file's schema; nothing runs). shipml asks the FILE, every time it saves
or loads one, and never its manifest: the types that need the user's trust are those skops does not trust by
default, minus the two allowlists below, which live here in code and nowhere else.

- :data:`DATA_TYPES` carry data only: no callable, nothing that runs on load or predict besides scikit-learn's own
  methods over plain arrays. They load without trust from any file.
- :data:`OWN_FILE_TYPES` are plain scikit-learn state too, but skops refuses them by default because
  scikit-learn indexes their arrays (tree nodes, neighbour indices) without bounds checks: a crafted file can make
  ``predict`` read out of bounds or crash the process. shipml admits them without trust only in a file it wrote
  itself: at save time, or when the file's sha256 is sealed by a manifest the registry authenticated. From a
  package directory outside a registry (``load_model(path)``, ``shipml import DIR``) they need trust.

Everything else skops does not trust by default (a user's own transformer, a function such as a lambda in a
FunctionTransformer, a LightGBM model inside a Pipeline) needs ``trusted=True``; the types trusted that way are
recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from shipml._optional import import_optional
from shipml.errors import UnsafeModelError
from shipml.runtimes.base import (
    Grant,
    InputFormat,
    ModelFiles,
    SaveContext,
    Saved,
    TrustNeed,
    is_instance_of,
    refuse_unless_granted,
)

FILE = "model.skops"

#: Types skops does not trust by default that hold data only, loaded without trust from any file:
#: a numpy dtype (SimpleImputer, StandardScaler... keep the fitted dtype), scikit-learn's Bunch (a dict:
#: VotingClassifier, StackingClassifier), the MLP's optimiser state (arrays and floats, used by partial_fit
#: only), CalibratedClassifierCV's private per-fold calibrators (arrays), and make_column_selector (a pattern and
#: dtypes; ColumnTransformer resolves it when fitting).
DATA_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.utils._bunch.Bunch",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.compose._column_transformer.make_column_selector",
})

#: Types admitted without trust only in a file shipml wrote (see the module docstring): decision trees
#: (DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, IsolationForest), HistGradientBoosting's trees,
#: the KD and ball trees of KNeighbors* with the euclidean metric they use by default, and the one callable
#: HistGradientBoosting keeps for its numeric columns with categorical features
#: (``functools.partial(sklearn.utils.validation.check_array, ...)``, a dtype check).
OWN_FILE_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "functools.partial",
    "sklearn.utils.validation.check_array",
})


def _skops() -> Any:
    return import_optional("skops.io", "sklearn")


def file_types(data: bytes) -> list[str]:
    """Every type the skops file ``data`` asks to load that skops does not trust by default."""
    types: list[str] = _skops().get_untrusted_types(data=data)
    return types


def types_needing_trust(found: list[str], *, sealed: bool) -> tuple[str, ...]:
    allowed = DATA_TYPES | OWN_FILE_TYPES if sealed else DATA_TYPES
    return tuple(sorted(t for t in found if t not in allowed))


def _need(found: list[str], *, sealed: bool) -> TrustNeed:
    types = types_needing_trust(found, sealed=sealed)
    if not types:
        return TrustNeed()
    reason = f"{FILE} asks skops to load types it cannot prove safe: {', '.join(types)}"
    own = [t for t in types if t in OWN_FILE_TYPES]
    if own:
        reason += (f" ({', '.join(own)}: scikit-learn reads their node indices without bounds checks, so shipml"
                   " admits them without trust only in a file it wrote itself, loaded from its registry)")
    return TrustNeed(types=types, reason=reason)


class SklearnLoaded:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.input_format: InputFormat = "frame" if hasattr(model, "feature_names_in_") else "matrix"
        classes = getattr(model, "classes_", None)
        self.classes: list[Any] | None = [c.item() if isinstance(c, np.generic) else c for c in classes] \
            if classes is not None and hasattr(model, "predict_proba") else None
        self._proba = hasattr(model, "predict_proba")

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict(X))

    def predict_proba(self, X: Any) -> np.ndarray | None:
        if not self._proba:
            return None
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)


class SklearnRuntime:
    name: ClassVar[str] = "sklearn"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return is_instance_of(model, "sklearn", "BaseEstimator")

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        sio = _skops()
        path = directory / FILE
        sio.dump(model, path)
        need = _need(file_types(path.read_bytes()), sealed=True)
        if need.required and not context.trusted:
            path.unlink()
            raise UnsafeModelError(need.describe() + ". Pass trusted=True (CLI: --trust) if you trust this model.",
                                   list(need.types))
        requirements = ["scikit-learn", "skops", "numpy", "scipy"]
        requirements += sorted({t.split(".")[0].replace("_", "-") for t in need.types}
                               - {"builtins", "collections", "functools", "sklearn", "numpy"})
        task: Literal["classification"] | None = (
            "classification" if hasattr(model, "predict_proba") and hasattr(model, "classes_") else None)
        return Saved(files=[FILE], requirements=requirements, info={},
                     trusted=need.required, trusted_types=list(need.types), task=task)

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return _need(file_types(files.read_bytes(FILE)), sealed=sealed)

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> SklearnLoaded:
        data = files.read_bytes(FILE)
        sio = _skops()
        if grant.everything:
            return SklearnLoaded(sio.loads(data, trusted=file_types(data)))
        # skops itself enforces the grant: it refuses any type beyond these (and its own defaults)
        allowed = DATA_TYPES | (OWN_FILE_TYPES if grant.sealed else frozenset()) | grant.types
        try:
            return SklearnLoaded(sio.loads(data, trusted=sorted(allowed)))
        except import_optional("skops.io.exceptions", "sklearn").UntrustedTypesFoundException:
            refuse_unless_granted(grant, _need(file_types(data), sealed=grant.sealed), FILE)
            raise  # pragma: no cover - the grant covered what skops refused: skops' own words then


RUNTIME = SklearnRuntime()
