"""Custom Python models (``shipml.runtimes.pyfunc.PythonModel``) defined in a real module file written to the
test's tmp_path, with an artefact file that ``load`` reads back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from tests.contract.case import Case, Trained

MODULE_SOURCE = '''
from pathlib import Path

import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel


class LinearScorer(PythonModel):
    """A regressor whose weights live in an artefact file."""

    def load(self, artifacts: Path) -> None:
        self.weights = np.loadtxt(artifacts / "weights")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X.to_numpy(dtype=float) @ self.weights


class ThresholdClassifier(PythonModel):
    """A classifier with string classes and probabilities; its threshold is an artefact."""

    classes = ["low", "high"]

    def load(self, artifacts: Path) -> None:
        self.threshold = float((artifacts / "threshold").read_text())

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(X["x0"].to_numpy(dtype=float) - self.threshold)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(X).argmax(axis=1)]
'''


def write_module(directory: Path, name: str) -> ModuleType:
    """Write the models' module to ``directory/name.py`` and import it as a real file-backed module."""
    path = directory / f"{name}.py"
    path.write_text(MODULE_SOURCE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(120, 3)), columns=["x0", "x1", "x2"])


def _regressor(tmp_path: Path) -> Trained:
    module = write_module(tmp_path, f"pyfunc_case_reg_{abs(hash(tmp_path))}")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    np.savetxt(artifacts / "weights", [0.5, -1.25, 2.0])
    model = module.LinearScorer()
    model.load(artifacts)
    X = _frame(7)
    return Trained(model, X, None, model.predict, trusted=True, exact=False,
                   save_kwargs={"runtime_options": {"artifacts": {"weights": str(artifacts / "weights")}}})


def _classifier(tmp_path: Path) -> Trained:
    module = write_module(tmp_path, f"pyfunc_case_clf_{abs(hash(tmp_path))}")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "threshold").write_text("0.2")
    model = module.ThresholdClassifier()
    model.load(artifacts)
    X = _frame(8)
    options = {"artifacts": {"threshold": str(artifacts / "threshold")}}
    return Trained(model, X, None, model.predict, model.predict_proba, trusted=True,
                   save_kwargs={"runtime_options": options})


CASES = [
    Case("pyfunc-source-regressor", "pyfunc", _regressor),
    Case("pyfunc-source-classifier", "pyfunc", _classifier),
]
