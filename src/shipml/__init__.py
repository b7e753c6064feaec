"""shipml: take a trained model to production and keep it honest there.

Names are imported on first use (PEP 562): ``import shipml`` stays cheap, and a serving process never loads
the training-side libraries (pandas, scikit-learn) that its models do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shipml.errors import (
    AlreadyExistsError,
    ConflictError,
    DependencyError,
    EnvironmentMismatchError,
    GateError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    NotFoundError,
    RegistryCorrupt,
    ReproducibilityError,
    SchemaError,
    ShipmlError,
    UnsafeModelError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from shipml.api import load_model, save_model
    from shipml.evaluation import (
        Evaluation,
        PromotionRefused,
        PromotionResult,
        Requirement,
        compute_metrics,
        evaluate,
        promote,
    )
    from shipml.jobs import BatchReport, predict_file
    from shipml.package.importer import import_model
    from shipml.package.loaded import LoadedModel, Prediction, ValidationReport
    from shipml.package.signature import Problem, Signature
    from shipml.package.validation import InputPolicy
    from shipml.registry import AliasMove, Canary, CanaryLimits, ModelVersion, Registry, ReleaseState
    from shipml.runtimes.pyfunc import PythonModel

__version__ = "0.1.0"

_WHERE: dict[str, str] = {
    "Evaluation": "shipml.evaluation",
    "PromotionRefused": "shipml.evaluation",
    "PromotionResult": "shipml.evaluation",
    "Requirement": "shipml.evaluation",
    "compute_metrics": "shipml.evaluation",
    "evaluate": "shipml.evaluation",
    "promote": "shipml.evaluation",
    "AliasMove": "shipml.registry",
    "Canary": "shipml.registry",
    "CanaryLimits": "shipml.registry",
    "ReleaseState": "shipml.registry",
    "BatchReport": "shipml.jobs",
    "InputPolicy": "shipml.package.validation",
    "LoadedModel": "shipml.package.loaded",
    "ModelVersion": "shipml.registry",
    "Prediction": "shipml.package.loaded",
    "Problem": "shipml.package.signature",
    "PythonModel": "shipml.runtimes.pyfunc",
    "Registry": "shipml.registry",
    "Signature": "shipml.package.signature",
    "ValidationReport": "shipml.package.loaded",
    "import_model": "shipml.package.importer",
    "load_model": "shipml.api",
    "predict_file": "shipml.jobs",
    "save_model": "shipml.api",
}


__all__ = [
    "AliasMove",
    "AlreadyExistsError",
    "BatchReport",
    "Canary",
    "CanaryLimits",
    "ConflictError",
    "DependencyError",
    "EnvironmentMismatchError",
    "Evaluation",
    "GateError",
    "InputPolicy",
    "IntegrityError",
    "InvalidNameError",
    "LoadedModel",
    "ManifestError",
    "ModelVersion",
    "NotFoundError",
    "Prediction",
    "Problem",
    "PromotionRefused",
    "PromotionResult",
    "PythonModel",
    "Registry",
    "RegistryCorrupt",
    "ReleaseState",
    "ReproducibilityError",
    "Requirement",
    "SchemaError",
    "ShipmlError",
    "Signature",
    "UnsafeModelError",
    "UnsupportedModelError",
    "ValidationReport",
    "__version__",
    "compute_metrics",
    "evaluate",
    "import_model",
    "load_model",
    "predict_file",
    "promote",
    "save_model",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shipml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
