"""A plain Python model (no framework): only the pickle runtime can save it, and only when trusted."""

from __future__ import annotations

from typing import Any

import numpy as np


class ThresholdModel:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, X: Any) -> np.ndarray:
        return (np.asarray(X, dtype=float)[:, 0] > self.threshold).astype(int)
