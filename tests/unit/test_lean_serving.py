"""A process serving numeric LightGBM models does not import pandas, pyarrow or scikit-learn (~150 MB and ~1 s
of start-up it would not use): not at start, not for predictions, not for input with nulls. Only a request with
a value of the wrong type (a string in a numeric column) makes it import pandas, to say precisely what is wrong.
A model that needs them (a LightGBM model fed pandas categoricals) still gets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import shipml
from shipml.spec import DeploymentSpec

SERVE = """
import asyncio, sys
from shipml.cli import cli  # what `shipml serve` imports
from shipml.cli.serve import serve_command
from shipml.server.app import ShipmlApp
from shipml.spec import DeploymentSpec

async def main():
    spec = DeploymentSpec.model_validate_json(sys.argv[1])
    app = ShipmlApp(spec)
    await app.load_models()
    assert app.is_ready, [e.errors for e in app.endpoints.values()]
    runner = next(iter(app.endpoints.values())).runner()
    good = {name: 0.5 for name in runner.names}
    out = await runner.infer([good, good])
    print("predictions", out.predictions.tolist())
    nullable = {**good, runner.names[0]: None}
    try:
        await runner.infer([nullable])
    except Exception as exc:
        print("null", type(exc).__name__)
    print("imported", sorted(m for m in ("pandas", "pyarrow", "sklearn", "scipy.stats") if m in sys.modules))
    try:
        await runner.infer([{**good, runner.names[1]: "oops"}])
    except Exception as exc:
        print("wrong type", type(exc).__name__)
    print("imported", sorted(m for m in ("pandas", "pyarrow", "sklearn", "scipy.stats") if m in sys.modules))
    await app.shutdown()

asyncio.run(main())
"""


def serve_once(registry: Path, ref: str, code: str = SERVE) -> list[str]:
    """What SERVE printed, serving ``ref`` in a fresh process."""
    spec = DeploymentSpec.model_validate({"registry": str(registry), "endpoints": [{"name": "m", "models": [ref]}]})
    done = subprocess.run([sys.executable, "-c", code, spec.model_dump_json()], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])


def test_numeric_lightgbm_is_served_without_pandas(tmp_path: Path, frame: pd.DataFrame) -> None:
    y = (frame["a"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(frame, y)
    shipml.save_model(model, "num", sample=frame, registry=tmp_path)
    lines = serve_once(tmp_path, "num")
    expected = model.predict(pd.DataFrame([[0.5] * 4] * 2, columns=frame.columns)).tolist()
    assert lines[0] == f"predictions {expected}"
    assert lines[1] == "null SchemaError"  # the column had no nulls in training
    assert lines[2] == "imported []"
    assert lines[3] == "wrong type SchemaError"
    assert "sklearn" not in lines[4]


def test_lightgbm_with_pandas_categoricals_still_gets_pandas(tmp_path: Path, frame: pd.DataFrame) -> None:
    data = frame.assign(d=pd.Categorical(np.where(frame["d"] > 0, "x", "y")))
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(data, (frame["a"] > 0).astype(int))
    shipml.save_model(model, "cat", sample=data, registry=tmp_path)
    lines = serve_once(tmp_path, "cat", SERVE.replace("good = {name: 0.5 for name in runner.names}",
                                                      "good = {**{name: 0.5 for name in runner.names}, 'd': 'x'}"))
    rows = pd.DataFrame({"a": [0.5] * 2, "b": [0.5] * 2, "c": [0.5] * 2,
                         "d": pd.Categorical(["x", "x"], categories=data["d"].cat.categories)})
    assert lines[0] == f"predictions {model.predict(rows).tolist()}"
    assert "pandas" in lines[-1]
