"""Two real tiny models for the property tests of the dataplane and of validation, and valid rows for them:
LightGBM on int/float columns, one nullable (the dense path), and a custom Python model on an int, a nullable
float, a string (categories), a bool and a datetime column (the general path)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from hypothesis import strategies as st

import shipml
from shipml.package.loaded import LoadedModel

GENERAL_SOURCE = '''
import numpy as np
import pandas as pd

from shipml.runtimes.pyfunc import PythonModel

PLANS = {"basic": 0.0, "plus": 1.0, "pro": 2.0}


class Scorer(PythonModel):
    """A row-wise score over an int, a nullable float, a category, a bool and a date column."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        days = (X["when"] - pd.Timestamp("2020-01-01")).dt.days.to_numpy(dtype=float)
        return (X["n"].to_numpy(dtype=float) + X["x"].fillna(0.0).to_numpy(dtype=float)
                + X["plan"].astype(str).map(PLANS).to_numpy(dtype=float)
                + X["flag"].to_numpy(dtype=float) * 10 + days / 1000)
'''

DENSE = ["a", "b", "n", "z"]
GENERAL = ["n", "x", "plan", "flag", "when"]
PLANS = ["basic", "plus", "pro"]
START = date(2020, 1, 1)


def dense_model(root: Path) -> LoadedModel:
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 1, 300)
    z[::7] = np.nan
    X = pd.DataFrame({"a": rng.uniform(0, 1, 300), "b": rng.uniform(0, 1, 300), "n": rng.integers(0, 10, 300),
                      "z": z})
    y = ((X["a"] + X["b"] > 1) ^ (X["n"] > 5)).astype(int)
    model = lgb.LGBMClassifier(n_estimators=8, num_leaves=5, min_child_samples=5, verbose=-1).fit(X, y)
    shipml.save_model(model, "dense", sample=X, target=y, registry=root / "registry", golden_rows=20)
    return shipml.load_model("dense", registry=root / "registry")


def general_model(root: Path) -> LoadedModel:
    code = root / "code"
    code.mkdir()
    (code / "fuzz_scorer.py").write_text(GENERAL_SOURCE)
    spec = importlib.util.spec_from_file_location("fuzz_scorer", code / "fuzz_scorer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_scorer"] = module
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    x[::9] = np.nan
    X = pd.DataFrame({"n": rng.integers(0, 50, 200), "x": x, "plan": rng.choice(PLANS, 200),
                      "flag": rng.random(200) > 0.5,
                      "when": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 365, 200), "D")})
    shipml.save_model(module.Scorer(), "general", sample=X, trusted=True, registry=root / "registry",
                      golden_rows=20)
    return shipml.load_model("general", registry=root / "registry")


def dense_row() -> st.SearchStrategy[dict[str, Any]]:
    unit = st.floats(0, 1)
    return st.fixed_dictionaries({"a": st.one_of(unit, st.floats(-3, 3)), "b": unit, "n": st.integers(0, 9),
                                  "z": st.one_of(st.none(), unit)})


def general_row() -> st.SearchStrategy[dict[str, Any]]:
    days = st.integers(0, 364).map(lambda d: (START + timedelta(days=d)).isoformat())
    return st.fixed_dictionaries({"n": st.integers(0, 49), "x": st.one_of(st.none(), st.floats(-2, 2)),
                                  "plan": st.sampled_from(PLANS), "flag": st.booleans(), "when": days})
