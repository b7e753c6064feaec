"""The public surface is what shipml/__init__.py exports, pinned here so that a change to it is deliberate."""

from __future__ import annotations

import subprocess
import sys

import shipml

PUBLIC = {
    "AliasMove", "AlreadyExistsError", "ConflictError", "DependencyError", "EnvironmentMismatchError",
    "Evaluation", "GateError", "InputPolicy", "IntegrityError", "InvalidNameError", "LoadedModel",
    "ManifestError", "ModelVersion", "NotFoundError", "Prediction", "Problem", "PromotionRefused",
    "PromotionResult", "Registry", "RegistryCorrupt", "ReproducibilityError", "Requirement", "SchemaError",
    "ShipmlError", "Signature", "UnsafeModelError", "UnsupportedModelError", "ValidationReport", "__version__",
    "compute_metrics", "evaluate", "import_model", "load_model", "PythonModel", "BatchReport", "predict_file",
    "promote", "save_model", "Canary", "CanaryLimits", "ReleaseState",
}


def test_all_is_pinned() -> None:
    assert set(shipml.__all__) >= PUBLIC
    assert all(hasattr(shipml, name) for name in shipml.__all__)


def test_errors_share_one_base() -> None:
    for name in shipml.__all__:
        obj = getattr(shipml, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, shipml.ShipmlError), name


def test_import_is_light() -> None:
    """import shipml must not pull in a framework, the server, or pandas."""
    code = ("import sys, shipml; heavy = [m for m in ('sklearn', 'lightgbm', 'xgboost', 'onnxruntime', 'torch',"
            " 'uvicorn', 'ray', 'dask', 'pandas', 'pyarrow') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
