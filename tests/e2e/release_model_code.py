"""Custom models for the release tests. They live in a real module file so that shipml's pyfunc runtime packages
them in "source" mode (this file is copied into each package; the server imports it from there).

Every model takes the release tests' input (float columns x0..x3) and predicts the label ``10 * shift + (x0 > 0)``
(or its opposite), so an answer tells which model gave it. Their state comes from one artifact, ``state.json``:
``{"shift": int, "poison_rows": [[x0, x1, x2, x3], ...], "marker": path or null}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel

STATE = "state.json"
SLEEP_S = 1.0


class _FromState(PythonModel):
    state: dict[str, Any]

    def load(self, artifacts: Path) -> None:
        self.state = json.loads((artifacts / STATE).read_text())

    def labels(self, X: pd.DataFrame) -> np.ndarray:
        return 10 * int(self.state["shift"]) + (X["x0"].to_numpy(dtype=float) > 0).astype(np.int64)


class RaisesOnRequests(_FromState):
    """A bad canary: raises on any batch holding one of its ``poison_rows`` (the rows the release tests send),
    and answers every other row. So it passes its golden check and a server's warm-up on a typical row when it
    loads, and then fails every request of the tests."""

    def load(self, artifacts: Path) -> None:
        super().load(artifacts)
        self.poison = {tuple(row) for row in self.state["poison_rows"]}

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        rows = X[["x0", "x1", "x2", "x3"]].to_numpy(dtype=float)
        poisoned = sum(tuple(row) in self.poison for row in rows.tolist())
        if poisoned:
            raise RuntimeError(f"bad canary: refusing {poisoned} row(s) of {len(rows)}")
        return self.labels(X)


class BreaksAfterSaving(_FromState):
    """Fails its golden check once its marker file exists (the helper creates it right after saving): from then
    on its labels are off by one, so a server loading it refuses it."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        labels = self.labels(X)
        marker = self.state["marker"]
        return labels + 1 if marker is not None and Path(marker).exists() else labels


class SleepsASecond(_FromState):
    """A slow shadow: sleeps SLEEP_S per predict call, then gives the opposite label of the good models."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        time.sleep(SLEEP_S)
        return 10 * int(self.state["shift"]) + (X["x0"].to_numpy(dtype=float) <= 0).astype(np.int64)
