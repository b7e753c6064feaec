"""shipml: take a trained model to production and keep it honest there."""

from shipml.api import load_model, save_model
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
    ReproducibilityError,
    SchemaError,
    ShipmlError,
    UnsafeModelError,
    UnsupportedModelError,
)
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
from shipml.registry import AliasMove, ModelVersion, Registry
from shipml.runtimes.pyfunc import PythonModel

__version__ = "0.1.0"

__all__ = [
    "AliasMove",
    "AlreadyExistsError",
    "BatchReport",
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
