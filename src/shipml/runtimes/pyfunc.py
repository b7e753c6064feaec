"""Custom Python models: a subclass of :class:`PythonModel`, its source code and its files, packaged together.

What is saved (under the package's ``model/`` directory)::

    pyfunc.json      how to rebuild the model: mode, module, class name, classes
    code/            the source of the module defining the class, plus the user's ``code_paths``
    artifacts/       the user's ``artifacts`` (weights, vocabularies, ...), read back by ``PythonModel.load``
    model.pkl        only in "cloudpickle" mode: the instance pickled by value

Three modes, chosen at save time:

- ``"source"``: the class lives in a real ``.py`` file of the user's project. The file (or, for a module
  inside a package, the package's modules that are imported) is copied into ``code/``; loading imports the
  class from ``code/`` - never from whatever module of the same name happens to be on ``sys.path`` -,
  instantiates it without arguments and calls ``load(artifacts)``.
- ``"installed"``: the class comes from an installed distribution (site-packages); loading imports it from
  there.
- ``"cloudpickle"``: the class cannot be imported by name (defined in ``__main__``, a notebook or a
  function): the instance is pickled by value with cloudpickle.

Every mode runs the user's code when loading, so this runtime always needs ``trusted=True``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import pickle
import shutil
import sys
import sysconfig
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from shipml._optional import import_optional
from shipml.errors import ManifestError, UnsafeModelError, UnsupportedModelError
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

SPEC_FILE = "pyfunc.json"
CODE_DIR = "code"
ARTIFACTS_DIR = "artifacts"
PICKLE_FILE = "model.pkl"
OPTIONS = frozenset({"code_paths", "artifacts", "requirements"})

Mode = Literal["source", "installed", "cloudpickle"]
NEED = TrustNeed(runs_code=True, reason="is a custom Python model (pyfunc): loading it runs its own code")

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
#: Imports from a package's code/ directory change sys.path and sys.modules for a moment: one at a time.
_IMPORT_LOCK = threading.Lock()


class PythonModel(ABC):
    """Base class for a model written in plain Python. Subclass it and implement :meth:`predict`.

    Optionally implement ``predict_proba(self, X) -> array (n_rows, n_classes)`` and set ``classes`` (the
    class labels in the column order of ``predict_proba``). The class must be constructible without arguments:
    its state comes from :meth:`load`, which reads the files given as ``artifacts`` at save time::

        class Scorer(shipml.PythonModel):
            def load(self, artifacts: Path) -> None:
                self.weights = np.load(artifacts / "weights")

            def predict(self, X: pd.DataFrame) -> np.ndarray:
                return X.to_numpy() @ self.weights

        shipml.save_model(Scorer(), "scorer", sample=X, trusted=True,
                          runtime_options={"artifacts": {"weights": "weights.npy"}})
    """

    classes: list[Any] | None = None

    def load(self, artifacts: Path) -> None:  # noqa: B027 - optional hook, nothing to read by default
        """Read the model's files: ``artifacts / name`` for each ``artifacts`` entry given at save time."""

    @abstractmethod
    def predict(self, X: pd.DataFrame) -> Any:
        """Predictions for every row of ``X`` (columns and dtypes of the sample given at save time)."""


@dataclass(frozen=True)
class _Source:
    """Where a class can be imported from: its module, and the files that make that module importable."""

    mode: Mode
    module: str
    files: dict[str, Path]  # path relative to code/ -> file on disk
    distribution: str | None = None


class PyfuncLoaded:
    def __init__(self, model: PythonModel, spec: dict[str, Any]) -> None:
        self.model = model
        self.input_format: InputFormat = "frame"
        self._proba = callable(getattr(model, "predict_proba", None))
        classes = getattr(model, "classes", None)
        if classes is None:
            classes = spec.get("classes")
        self.classes: list[Any] | None = [c.item() if isinstance(c, np.generic) else c for c in classes] \
            if classes is not None and self._proba else None

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict(X))

    def predict_proba(self, X: Any) -> np.ndarray | None:
        if not self._proba:
            return None
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)  # type: ignore[attr-defined]


class PyfuncRuntime:
    name: ClassVar[str] = "pyfunc"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return is_instance_of(model, "shipml.runtimes.pyfunc", "PythonModel")

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        if not context.trusted:
            raise UnsafeModelError(
                f"{kind} is a custom Python model: loading it runs its own code. Pass trusted=True"
                " (CLI: --trust) if you trust this code and whoever will load it.", [kind])
        if not isinstance(model, PythonModel):
            raise UnsupportedModelError(f"{kind} is not a shipml.PythonModel subclass")
        unknown = sorted(set(context.options) - OPTIONS)
        if unknown:
            raise UnsupportedModelError(f"unknown pyfunc runtime_options {unknown}; known: {sorted(OPTIONS)}")
        code_dir, artifacts_dir = directory / CODE_DIR, directory / ARTIFACTS_DIR
        code_dir.mkdir()
        artifacts_dir.mkdir()
        _copy_artifacts(context.options.get("artifacts") or {}, artifacts_dir)
        extra_code = _copy_code_paths(context.options.get("code_paths") or [], code_dir)

        cls = type(model)
        source = _find_source(cls)
        files = [PICKLE_FILE]
        requirements = ["numpy", "pandas"]
        if source is None:
            (directory / PICKLE_FILE).write_bytes(_pickle_by_value(model))
            requirements.append("cloudpickle")
            mode: Mode = "cloudpickle"
        else:
            _check_constructible(cls)
            for relative, path in source.files.items():
                top = relative.split("/")[0]
                if top in extra_code:
                    raise UnsupportedModelError(f"code_paths entry {top!r} clashes with the module"
                                                f" {source.module!r} that defines {cls.__qualname__}")
                (code_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, code_dir / relative)
            if source.distribution:
                requirements.append(source.distribution)
            mode, files = source.mode, []
        requirements += [str(r) for r in context.options.get("requirements") or []]

        classes = getattr(model, "classes", None)
        has_proba = callable(getattr(model, "predict_proba", None))
        spec = {
            "mode": mode,
            "module": cls.__module__,
            "class": cls.__qualname__,
            "classes": [c.item() if isinstance(c, np.generic) else c for c in classes]
            if classes is not None else None,
        }
        (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        nested = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                        if p.is_file() and p.parent != directory)
        files = [SPEC_FILE, *files, *nested]
        return Saved(files=files, requirements=requirements, info={"mode": mode, "class": kind},
                     trusted=True, trusted_types=[kind],
                     task="classification" if has_proba and classes is not None else None)

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return NEED

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> PyfuncLoaded:
        refuse_unless_granted(grant, NEED, "the model")
        spec = json.loads(files.read_bytes(SPEC_FILE))
        if not isinstance(spec, dict):
            raise ManifestError(f"{SPEC_FILE} is not a JSON object")
        directory = files.directory()
        code_dir = directory / CODE_DIR
        mode = spec.get("mode")
        if mode == "cloudpickle":
            data = files.read_bytes(PICKLE_FILE)  # verified bytes: trusted, and checked against their sha256
            with _importing_from(code_dir):
                model = pickle.loads(data)
        elif mode in ("source", "installed"):
            if mode == "source":
                with _importing_from(code_dir) as import_module:
                    module = import_module(spec["module"])
            else:
                module = importlib.import_module(spec["module"])
            cls = _attribute(module, spec["class"])
            if not (isinstance(cls, type) and issubclass(cls, PythonModel)):
                raise ManifestError(f"{spec['module']}.{spec['class']} is not a shipml.PythonModel subclass")
            model = cls()
        else:
            raise ManifestError(f"{SPEC_FILE}: unknown mode {mode!r}")
        if not isinstance(model, PythonModel):
            raise ManifestError(f"{PICKLE_FILE} does not hold a shipml.PythonModel")
        model.load(directory / ARTIFACTS_DIR)
        return PyfuncLoaded(model, spec)


# -- saving helpers ----------------------------------------------------------------------------------------
def _copy_artifacts(artifacts: dict[str, Any], target: Path) -> None:
    if not isinstance(artifacts, dict):
        raise UnsupportedModelError("runtime_options['artifacts'] must map names to file or directory paths")
    for name, given in artifacts.items():
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
            raise UnsupportedModelError(f"artifact name {name!r} must be a plain file name (no slashes)")
        path = Path(given)
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=_IGNORE)
        elif path.is_file():
            shutil.copyfile(path, target / name)
        else:
            raise FileNotFoundError(2, "artifact not found", str(path))


def _copy_code_paths(code_paths: list[Any], target: Path) -> set[str]:
    """Copy each file or directory into ``target``; returns the top-level names it now holds."""
    names: set[str] = set()
    for given in code_paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(2, "code path not found", str(path))
        if path.name in names:
            raise UnsupportedModelError(f"two code_paths entries are named {path.name!r}")
        names.add(path.name)
        if path.is_dir():
            shutil.copytree(path, target / path.name, ignore=_IGNORE)
        else:
            shutil.copyfile(path, target / path.name)
    return names


def _check_constructible(cls: type) -> None:
    try:
        inspect.signature(cls).bind()
    except TypeError as exc:
        raise UnsupportedModelError(
            f"{cls.__qualname__} must be constructible without arguments (loading calls {cls.__qualname__}()"
            " then load(artifacts)); keep its state in artifacts") from exc
    except ValueError:  # no signature to inspect (a builtin base): try at load time
        return


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib", "platstdlib") if k in paths]


def _find_source(cls: type) -> _Source | None:
    """How ``cls`` can be imported by name at load time, or None when it must be pickled by value."""
    module_name = cls.__module__
    module = sys.modules.get(module_name)
    if module_name == "__main__" or module is None or "<locals>" in cls.__qualname__:
        return None
    try:
        if _attribute(module, cls.__qualname__) is not cls:
            return None
    except ManifestError:
        return None
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py") or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    top = module_name.split(".")[0]
    if any(path.is_relative_to(root) for root in _installed_roots()) or any(
            part in ("site-packages", "dist-packages") for part in path.parts):
        dists = importlib.metadata.packages_distributions().get(top, [])
        return _Source("installed", module_name, {}, dists[0] if dists else None)
    if top in sys.stdlib_module_names:
        raise UnsupportedModelError(f"module {top!r} shadows the standard library: rename it before saving")
    if "." not in module_name and path.name != "__init__.py":
        return _Source("source", module_name, {f"{module_name}.py": path})
    return _Source("source", module_name, _package_files(top, sys.modules.get(top)))


def _package_files(top: str, package: ModuleType | None) -> dict[str, Path]:
    """The package's modules that are imported now (so the class's module imports as it did at save time)."""
    roots = [Path(p).resolve() for p in getattr(package, "__path__", [])]
    if not roots:
        raise UnsupportedModelError(f"cannot find the files of package {top!r}")
    root = roots[0]
    files: dict[str, Path] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.split(".")[0] != top or not file or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        if path.is_relative_to(root):
            files[f"{top}/{path.relative_to(root).as_posix()}"] = path
    # every package on the way down needs its __init__.py (namespace packages have none)
    for relative in list(files):
        parent = Path(relative).parent
        while parent.parts:
            init = root.parent / parent / "__init__.py"
            if init.is_file():
                files.setdefault((parent / "__init__.py").as_posix(), init)
            parent = parent.parent
    return files


def _pickle_by_value(model: PythonModel) -> bytes:
    cloudpickle = import_optional("cloudpickle", "pyfunc")
    module = sys.modules.get(type(model).__module__)
    by_value = module is not None and module.__name__ != "__main__"
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps(model)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
    return data


# -- loading helpers ---------------------------------------------------------------------------------------
def _attribute(module: ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ManifestError(f"{module.__name__} has no {qualname}")
        obj = getattr(obj, part)
    return obj


def _top_level_names(code_dir: Path) -> set[str]:
    if not code_dir.is_dir():
        return set()
    return {p.stem if p.suffix == ".py" else p.name for p in code_dir.iterdir()
            if p.is_dir() or p.suffix == ".py"}


@contextmanager
def _importing_from(code_dir: Path) -> Iterator[Any]:
    """Import modules from ``code_dir`` first, whatever modules of the same names are already imported.

    For the moment of the import, modules whose top-level name ``code_dir`` provides leave ``sys.modules`` and
    ``code_dir`` goes first on ``sys.path``; afterwards the modules that were there before come back (the
    loaded model keeps its own), ``sys.path`` is restored, and no bytecode is written into the (immutable)
    package.
    """
    names = _top_level_names(code_dir)
    entry = str(code_dir.resolve())
    with _IMPORT_LOCK:
        displaced = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
        sys.path.insert(0, entry)
        write_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        importlib.invalidate_caches()
        try:
            yield importlib.import_module
        except BaseException:
            for k in [k for k in sys.modules if k.split(".")[0] in names]:
                del sys.modules[k]
            raise
        finally:
            sys.dont_write_bytecode = write_bytecode
            sys.path.remove(entry)
            sys.modules.update(displaced)


RUNTIME = PyfuncRuntime()
