"""The demo's deliberately bad candidate: a custom model (shipml's pyfunc runtime) with a broken input step.

It answers the rows it was saved with, so it passes the golden check that every server runs when it loads a
model, and it fails on every other row - on real traffic. A canary catches what the golden check cannot: the
demo sends it 20% of the requests and the server aborts it on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel

ROWS = "rows.json"


class BrokenScalerCandidate(PythonModel):
    def load(self, artifacts: Path) -> None:
        self.known = {tuple(row) for row in json.loads((artifacts / ROWS).read_text())}

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        rows = [tuple(row) for row in X.to_numpy(dtype=float).tolist()]
        if any(row not in self.known for row in rows):
            raise ValueError("scaler statistics missing for this input (a broken preprocessing step)")
        return np.ones(len(rows), dtype=np.int64)
