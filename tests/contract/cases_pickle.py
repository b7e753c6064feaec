from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.contract.case import Case, Trained
from tests.contract.custom_model import ThresholdModel


def _trusted_object(_: Path) -> Trained:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 3))
    model = ThresholdModel(threshold=0.1)
    return Trained(model, X, None, model.predict, trusted=True)


CASES = [Case("pickle-trusted-object", "pickle", _trusted_object)]
