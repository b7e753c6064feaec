"""The one contract every framework adapter meets. No web imports, no registry knowledge.

A runtime saves a model object into a directory (in a safe format unless the user trusts the model), and loads
it back as a :class:`Loaded`, which predicts on a batch given in the form it asked for (``input_format``):

- ``"matrix"``: a 2-D numpy array, columns in signature order (fast path for numeric models);
- ``"frame"``: a pandas DataFrame with the sample's column names and dtypes.

Every runtime stamps ``name`` and ``api_version`` into the manifest; loading refuses a package saved by another
runtime or by an API version it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

InputFormat = Literal["matrix", "frame"]


@dataclass(frozen=True)
class SaveContext:
    """What a runtime may need to know when saving: the sample (as a frame) and the user's trust."""

    sample: pd.DataFrame
    input_kind: Literal["dataframe", "ndarray"]
    trusted: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Saved:
    """What a runtime wrote: file names relative to the directory, and facts for the manifest."""

    files: list[str]
    requirements: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    trusted: bool = False
    trusted_types: list[str] = field(default_factory=list)
    task: Literal["classification", "regression", "other"] | None = None


@runtime_checkable
class Loaded(Protocol):
    """A model ready to predict. ``classes`` is None for a regressor."""

    input_format: InputFormat
    classes: list[Any] | None

    def predict(self, X: Any) -> np.ndarray: ...

    def predict_proba(self, X: Any) -> np.ndarray | None:
        """Class probabilities (n_rows, n_classes) in ``classes`` order, or None when the model has none."""
        ...


class LoadedWithProba(Loaded, Protocol):
    """A runtime whose labels come from its probabilities offers both from one call (half the work)."""

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]: ...


class Runtime(Protocol):
    name: ClassVar[str]
    api_version: ClassVar[int]

    def handles(self, model: Any) -> bool:
        """True when ``model`` is an object this runtime can save. Must not import its framework to answer."""
        ...

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved: ...

    def load(self, directory: Path, info: dict[str, Any]) -> Loaded: ...


def is_instance_of(model: Any, module_prefix: str, *class_names: str) -> bool:
    """Whether ``model``'s class (or a base class) is one of ``class_names`` from a module under
    ``module_prefix`` - without importing that module."""
    for klass in type(model).__mro__:
        mod = getattr(klass, "__module__", "") or ""
        if (mod == module_prefix or mod.startswith(module_prefix + ".")) and (
            not class_names or klass.__name__ in class_names
        ):
            return True
    return False


def binary_proba(p: np.ndarray) -> np.ndarray:
    """(n,) probabilities of the positive class as (n, 2) [negative, positive]."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    out = np.empty((p.shape[0], 2))
    np.subtract(1.0, p, out=out[:, 0])
    out[:, 1] = p
    return out
