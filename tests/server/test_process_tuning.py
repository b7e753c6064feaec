"""A process that serves one app (``shipml serve``, a Ray Serve replica) freezes what it loaded out of the garbage
collector's sight and collects young objects less often; an app embedded in another program leaves its
process's collector alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.server.runner import GC_THRESHOLDS
from shipml.spec import DeploymentSpec

LOAD = """
import asyncio, gc, sys
from shipml.server.app import ShipmlApp
from shipml.server.runner import build_app
from shipml.spec import DeploymentSpec

async def main(own):
    spec = DeploymentSpec.model_validate_json(sys.argv[1])
    app = build_app(spec)[0] if own else ShipmlApp(spec)
    await app.load_models()
    assert app.is_ready
    print(gc.get_freeze_count() > 1000)
    await app.shutdown()

asyncio.run(main(sys.argv[2] == "own"))
"""


def test_only_a_process_of_its_own_is_tuned(tmp_path: Path) -> None:
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=["a", "b", "c"])
    shipml.save_model(LogisticRegression().fit(X, X["a"] > 0), "m", sample=X, registry=tmp_path)
    spec = DeploymentSpec.model_validate({"registry": str(tmp_path), "endpoints": [{"name": "m", "models": ["m"]}]})
    frozen = {}
    for how in ("own", "embedded"):
        done = subprocess.run([sys.executable, "-c", LOAD, spec.model_dump_json(), how], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        frozen[how] = done.stdout.strip()
    assert frozen == {"own": "True", "embedded": "False"}
    done = subprocess.run([sys.executable, "-c", "import gc; from shipml.server.runner import tune_gc; tune_gc();"
                           " print(gc.get_threshold())"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == str(GC_THRESHOLDS)
