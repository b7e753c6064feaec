"""scikit-learn estimators and Pipelines, saved with skops (no pickle).

skops loads only the types it is told to trust. shipml trusts skops' defaults plus scikit-learn's own types
(they are code already installed, reconstructed from plain state); any other type (a LightGBM model inside a
Pipeline, a user's transformer) needs ``trusted=True``, and the types trusted that way are recorded in the
manifest and passed back to skops on load, so nothing new can be smuggled in by a changed file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from shipml._optional import import_optional
from shipml.errors import IntegrityError, UnsafeModelError
from shipml.runtimes.base import InputFormat, SaveContext, Saved, is_instance_of

FILE = "model.skops"


def _skops() -> Any:
    return import_optional("skops.io", "sklearn")


def _untrusted(sio: Any, path: Path) -> tuple[list[str], list[str]]:
    """(types needing the user's trust, scikit-learn's own types that skops does not trust by default)."""
    types = sio.get_untrusted_types(file=path)
    return [t for t in types if not t.startswith("sklearn.")], [t for t in types if t.startswith("sklearn.")]


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
        untrusted, _ = _untrusted(sio, path)
        if untrusted and not context.trusted:
            path.unlink()
            raise UnsafeModelError(
                "skops cannot prove these types are safe to load: " + ", ".join(untrusted)
                + ". Pass trusted=True (CLI: --trust) if you trust this model.",
                untrusted,
            )
        requirements = ["scikit-learn", "skops", "numpy", "scipy"]
        requirements += sorted({t.split(".")[0].replace("_", "-") for t in untrusted} - {"builtins", "collections"})
        task: Literal["classification"] | None = (
            "classification" if hasattr(model, "predict_proba") and hasattr(model, "classes_") else None)
        return Saved(files=[FILE], requirements=requirements, info={"trusted_types": untrusted},
                     trusted=bool(untrusted), trusted_types=untrusted, task=task)

    def load(self, directory: Path, info: dict[str, Any]) -> SklearnLoaded:
        sio = _skops()
        path = directory / FILE
        trusted = list(info.get("trusted_types", []))
        untrusted, own = _untrusted(sio, path)
        unexpected = sorted(set(untrusted) - set(trusted))
        if unexpected:
            raise IntegrityError(f"{FILE} asks to load types that were never trusted: {', '.join(unexpected)}")
        return SklearnLoaded(sio.load(path, trusted=untrusted + own))


RUNTIME = SklearnRuntime()
