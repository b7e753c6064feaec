"""The one contract every framework adapter meets. No web imports, no registry knowledge.

A runtime saves a model object into a directory (in a safe format unless the user trusts the model), and loads
it back as a :class:`Loaded`, which predicts on a batch given in the form it asked for (``input_format``):

- ``"matrix"``: a 2-D numpy array, columns in signature order (fast path for numeric models);
- ``"frame"``: a pandas DataFrame with the sample's column names and dtypes.

Every runtime stamps ``name`` and ``api_version`` into the manifest; loading refuses a package saved by another
runtime or by an API version it does not know.

Trust is the runtime's to judge, from the bytes of its files and never from the manifest: ``trust_needed`` says
what loading the files can do beyond reading data (run code chosen by the file, or load types that only trust
admits), and ``load`` refuses whatever its :class:`Grant` does not cover. A runtime opens its files only through
:class:`ModelFiles`: each one listed in the manifest and checked against its sha256 as it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from shipml.errors import UnsafeModelError

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


class ModelFiles(Protocol):
    """The files of a package's model directory that a runtime may open: each is covered by an artefact entry of
    the manifest and verified against its sha256 as it is read. Names are relative POSIX paths (``model.skops``,
    ``code/pkg/mod.py``)."""

    def names(self) -> list[str]:
        """Every file name the manifest lists under the model directory, sorted."""
        ...

    def read_bytes(self, name: str) -> bytes:
        """The verified bytes of ``name``; IntegrityError when no artefact entry covers it or it changed."""
        ...

    def directory(self) -> Path:
        """The model directory itself, verified as a whole, for a runtime that must hand a path to code the user
        trusts (pyfunc imports its code and passes its artefacts by path)."""
        ...


@dataclass(frozen=True)
class TrustNeed:
    """What loading a model's files needs the user's trust for, read from the runtime and the files' bytes.

    ``runs_code``: the runtime runs code chosen by the file (pickle, pyfunc) - trust, whatever else.
    ``types``: the types the file asks to load that only trust admits (skops). ``reason``: why, in words."""

    runs_code: bool = False
    types: tuple[str, ...] = ()
    reason: str = ""

    @property
    def required(self) -> bool:
        return self.runs_code or bool(self.types)

    def describe(self) -> str:
        if self.reason:
            return self.reason
        if self.runs_code:
            return "runs code when it is loaded"
        return "asks to load types only trust admits: " + ", ".join(self.types)


NOTHING_NEEDED = TrustNeed()


@dataclass(frozen=True)
class Grant:
    """The trust one load was given. ``everything``: the user said so (``trusted=True``, ``--trust``); else
    ``code`` and ``types`` as recorded in an authenticated manifest. ``sealed``: the files are what shipml itself
    wrote (at save, or hash-checked against a manifest the registry authenticated), not bytes from elsewhere."""

    everything: bool = False
    code: bool = False
    types: frozenset[str] = frozenset()
    sealed: bool = False

    def covers(self, need: TrustNeed) -> bool:
        if self.everything:
            return True
        return (self.code or not need.runs_code) and set(need.types) <= self.types


def refuse_unless_granted(grant: Grant, need: TrustNeed, what: str) -> None:
    """Raise UnsafeModelError when ``grant`` does not cover ``need`` (``what`` names the file or runtime)."""
    if not grant.covers(need):
        raise UnsafeModelError(f"{what} {need.describe()}, and trust was not granted for it",
                               list(need.types) or [what])


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

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        """What loading ``files`` needs trust for, judged from the runtime and the files' bytes (``sealed``: the
        files are what shipml wrote). Never reads the manifest."""
        ...

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> Loaded:
        """The model in ``files``; refuses (UnsafeModelError) whatever ``grant`` does not cover. ``info`` comes
        from the manifest: facts for predicting, never a reason to trust anything."""
        ...


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
