"""What a runtime's contract cases provide. Each ``cases_<runtime>.py`` beside this file defines ``CASES``, a
list of :class:`Case`; ``test_contract.py`` runs the whole contract suite over every case of every file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Trained:
    """A tiny real model, trained in the test's tmp_path, with how the user's own code predicts with it."""

    model: Any
    sample: Any  # training inputs: DataFrame or 2-D array
    target: Any
    predict: Callable[[Any], np.ndarray]  # the original model's predictions on ``sample``
    proba: Callable[[Any], np.ndarray] | None = None
    trusted: bool = False
    save_kwargs: dict[str, Any] = field(default_factory=dict)
    exact: bool = True  # predictions compared exactly (labels) or with allclose (regression)
    # A package directory outside a registry is not sealed: it needs trust when the model does (``trusted``) and
    # when its skops file holds types shipml admits without trust only in files it wrote (trees, see
    # shipml.runtimes.sklearn.OWN_FILE_TYPES).
    own_file_types: bool = False

    @property
    def trusted_outside_registry(self) -> bool:
        return self.trusted or self.own_file_types


@dataclass
class Case:
    id: str
    runtime: str  # the runtime name the manifest must record
    make: Callable[[Path], Trained]


def numeric_frame(n: int = 300, k: int = 5, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Float columns x0..x{k-1} and a binary target (x0 + x1 > 0)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"x{i}" for i in range(k)])
    y = (X["x0"] + X["x1"] > 0).astype(int).to_numpy()
    return X, y
