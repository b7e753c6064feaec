"""Real tiny models for release tests, all with the same input (float columns x0..x3), put into a registry:

- :func:`good`: a scikit-learn logistic regression predicting ``10 * shift + (x0 > 0)``; give each version
  its own ``shift`` and every answer says which version gave it (:func:`shift_of`).
- :func:`bad_canary`: a custom model that passes its golden check and warm-up but raises on the tests' requests.
- :func:`golden_fails`: a custom model that was fine when saved and fails its golden check when a server loads it.
- :func:`slow`: a custom model that sleeps a second per predict call (a slow shadow).

The custom models' classes live in ``release_model_code.py``, imported here as a top-level module so that the
package holds that one file ("source" mode) and a server process imports it from the package.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.registry.registry import ModelVersion

NAME = "churn"
FEATURES = ["x0", "x1", "x2", "x3"]
#: A request row that is inside the training ranges and not one of the saved rows; x0 > 0.
ROW = {"x0": 0.5, "x1": -0.25, "x2": 0.125, "x3": 1.0}
BODY = {"instances": [ROW]}
#: The golden sample's rows are taken from these, so every model here predicts them at save time.
SAMPLE = pd.DataFrame(np.random.default_rng(13).normal(size=(60, len(FEATURES))).round(6), columns=FEATURES)


def code_module() -> ModuleType:
    """``release_model_code`` as a top-level module (imported once from its file next to this one)."""
    module = sys.modules.get("release_model_code")
    if module is None:
        path = Path(__file__).with_name("release_model_code.py")
        spec = importlib.util.spec_from_file_location("release_model_code", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["release_model_code"] = module
        spec.loader.exec_module(module)
    return module


def label(shift: int, row: Mapping[Any, float] = ROW) -> int:
    """What the good model of ``shift`` (and the custom ones) predict for ``row``."""
    return 10 * shift + int(row["x0"] > 0)


def shift_of(prediction: Any) -> int:
    return int(prediction) // 10


def prediction_of(body: bytes) -> int:
    """The first prediction of a simple JSON answer (for ``Traffic(extract=...)``)."""
    return int(json.loads(body)["predictions"][0])


def good(registry: Path, version: str, shift: int, *, name: str = NAME) -> ModelVersion:
    y = 10 * shift + (SAMPLE["x0"] > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(SAMPLE, y)
    return shipml.save_model(model, name, sample=SAMPLE, version=version, registry=registry,
                             description=f"release test model, shift {shift}")


def _custom(registry: Path, version: str, cls_name: str, state: dict[str, Any], name: str) -> ModelVersion:
    cls = getattr(code_module(), cls_name)
    with tempfile.TemporaryDirectory(prefix="shipml-release-model-") as tmp:
        artifacts = Path(tmp)
        (artifacts / "state.json").write_text(json.dumps(state))
        model = cls()
        model.load(artifacts)
        return shipml.save_model(model, name, sample=SAMPLE, version=version, registry=registry, trusted=True,
                                 runtime_options={"artifacts": {"state.json": artifacts / "state.json"}},
                                 description=f"release test model {cls_name}")


def bad_canary(registry: Path, version: str, shift: int = 9, *, name: str = NAME) -> ModelVersion:
    """Raises on every request holding :data:`ROW` (every request of the release tests), answers other rows: its
    golden check and a server's warm-up pass, so it is served, and then fails."""
    state = {"shift": shift, "poison_rows": [[ROW[c] for c in FEATURES]], "marker": None}
    return _custom(registry, version, "RaisesOnRequests", state, name)


def golden_fails(registry: Path, version: str, shift: int = 7, *, name: str = NAME,
                 marker: Path | None = None) -> tuple[ModelVersion, Path]:
    """Saved fine; then its marker file (default: next to the registry) is created, and from then on it fails
    its golden check wherever it loads. Returns the version and the marker (delete it to make it pass again)."""
    marker = marker or registry.parent / f"golden-marker-{name}-{version}"
    state = {"shift": shift, "poison_rows": [], "marker": str(marker)}
    mv = _custom(registry, version, "BreaksAfterSaving", state, name)
    marker.write_text("from now on this model's labels are off by one\n")
    return mv, marker


def slow(registry: Path, version: str, shift: int = 5, *, name: str = NAME) -> ModelVersion:
    """Sleeps a second per predict call (saving it takes a few seconds: it predicts the sample several times)."""
    return _custom(registry, version, "SleepsASecond", {"shift": shift, "poison_rows": [], "marker": None}, name)
