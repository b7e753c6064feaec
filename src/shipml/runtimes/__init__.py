"""Framework adapters, one per module, all meeting :class:`shipml.runtimes.base.Runtime`.

Modules import their framework only when they save or load, so ``import shipml`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from shipml.errors import ManifestError, UnsafeModelError, UnsupportedModelError
from shipml.runtimes.base import Runtime

#: runtime name -> module defining ``RUNTIME``. Order matters for detection: specific before generic.
_MODULES: dict[str, str] = {
    "lightgbm": "shipml.runtimes.lightgbm",
    "xgboost": "shipml.runtimes.xgboost",
    "onnx": "shipml.runtimes.onnx",
    "pyfunc": "shipml.runtimes.pyfunc",
    "sklearn": "shipml.runtimes.sklearn",
    "pickle": "shipml.runtimes.pickle",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Runtime:
    module = _MODULES.get(name)
    if module is None:
        raise ManifestError(f"unknown runtime {name!r}; this shipml knows {', '.join(_MODULES)}")
    runtime: Runtime = importlib.import_module(module).RUNTIME
    return runtime


def detect(model: Any, *, trusted: bool) -> Runtime:
    """The runtime that saves ``model`` in a safe format; the pickle runtime only when ``trusted``."""
    for name in _MODULES:
        if name == "pickle":
            continue
        runtime = get(name)
        if runtime.handles(model):
            return runtime
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if trusted:
        return get("pickle")
    if callable(getattr(model, "predict", None)):
        raise UnsafeModelError(
            f"no safe format for a {kind}: shipml would have to pickle it, and a pickle runs code when loaded."
            " Pass trusted=True (CLI: --trust) if you trust this model and whoever will load it.",
            [kind],
        )
    raise UnsupportedModelError(f"{kind} is not a model shipml can package (it has no predict method)")
