from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import shipml


@pytest.fixture
def registry(tmp_path: Path) -> shipml.Registry:
    return shipml.Registry(tmp_path / "registry")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever touches the user's ~/.shipml."""
    monkeypatch.setenv("SHIPML_HOME", str(tmp_path / "home-registry"))


@pytest.fixture
def mixed_data() -> tuple[pd.DataFrame, np.ndarray]:
    """A small table with numeric, string and boolean columns, and a binary target."""
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 15_000, n).round(2),
        "state": rng.choice(["CA", "NY", "TX", "WA"], n),
        "member": rng.random(n) > 0.5,
    })
    y = ((df["income"] > 50_000) ^ (df["state"] == "CA")).astype(int).to_numpy()
    return df, y
