"""Any Python object with ``predict``, pickled with cloudpickle (or given as a pickle/joblib file).

Loading a pickle runs code chosen by whoever wrote the file, so this runtime always needs trust, whatever a
manifest says: the user's own (``trusted=True``, ``--trust``), or the trust recorded in a manifest the registry
authenticated (who, when), covering the sha256 of the file that was trusted.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipml.errors import ManifestError, UnsafeModelError
from shipml.runtimes.base import (
    Grant,
    InputFormat,
    ModelFiles,
    SaveContext,
    Saved,
    TrustNeed,
    refuse_unless_granted,
)

FILE = "model.pkl"
NEED = TrustNeed(runs_code=True, reason=f"is a pickle ({FILE}): loading it runs whatever code it holds")


class PickleLoaded:
    def __init__(self, model: Any, info: dict[str, Any]) -> None:
        if not callable(getattr(model, "predict", None)):
            raise ManifestError(f"{FILE} holds a {type(model).__qualname__}, which has no predict method")
        self.model = model
        self.input_format: InputFormat = info.get("input_format", "frame")
        self.classes: list[Any] | None = info.get("classes")
        self._proba = callable(getattr(model, "predict_proba", None))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict(X))

    def predict_proba(self, X: Any) -> np.ndarray | None:
        return np.asarray(self.model.predict_proba(X), dtype=np.float64) if self._proba else None


class PickleRuntime:
    name: ClassVar[str] = "pickle"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return False  # never chosen by detection: only with explicit trust

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        if not context.trusted:
            raise UnsafeModelError("pickling a model needs trusted=True", [type(model).__qualname__])
        try:
            import cloudpickle

            data = cloudpickle.dumps(model)
        except ImportError:
            data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        (directory / FILE).write_bytes(data)
        classes = getattr(model, "classes_", None)
        uses_names = hasattr(model, "feature_names_in_") or context.input_kind == "dataframe"
        info: dict[str, Any] = {
            "input_format": "frame" if uses_names else "matrix",
            "classes": [c.item() if isinstance(c, np.generic) else c for c in classes]
            if classes is not None and hasattr(model, "predict_proba") else None,
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
        }
        module = type(model).__module__.split(".")[0]
        requirements = ["cloudpickle"] + ([module.replace("_", "-")] if module not in ("__main__", "builtins") else [])
        return Saved(files=[FILE], requirements=requirements, info=info, trusted=True,
                     trusted_types=[info["class"]], task="classification" if info["classes"] else None)

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return NEED

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> PickleLoaded:
        refuse_unless_granted(grant, NEED, "the model")
        return PickleLoaded(pickle.loads(files.read_bytes(FILE)), info)


RUNTIME = PickleRuntime()
