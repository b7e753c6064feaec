"""A process that serves one app (``shipml serve``, a Ray Serve replica) freezes what it loaded out of the garbage
collector's sight and collects young objects less often; an app embedded in another program leaves its
process's collector alone."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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


CAP = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from shipml.server.runner import connection_cap
print(connection_cap(4096), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_connection_cap_fits_the_open_files_limit() -> None:
    """The soft limit is raised as far as needed and allowed; a cap the hard limit cannot hold is lowered, with a
    warning (a server out of descriptors fails every accept)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.skip(f"the open-files hard limit is {hard}")
    low = subprocess.run([sys.executable, "-c", CAP, "1024", "1024"], capture_output=True, text=True, timeout=60,
                         check=True)
    assert low.stdout.split() == ["768", "1024"]
    assert "the open-files limit (1024) allows 768 connections per worker" in low.stderr
    raised = subprocess.run([sys.executable, "-c", CAP, "1024", str(hard)], capture_output=True, text=True,
                            timeout=60, check=True)
    assert raised.stdout.split() == ["4096", str(4096 + 256)]
    assert raised.stderr == ""
