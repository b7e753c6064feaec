"""A real server switches its LightGBM models to their compiled form in the background (shipml[compiled]) and
answers as LightGBM does; a model lleaves cannot compile keeps serving with LightGBM and says why."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest

import shipml
from tests.e2e.conftest import numeric_data
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow


def runtime(server: Server, name: str, settled: bool = True, timeout: float = 180) -> dict[str, object]:
    """The model's runtime facts, once its compile attempt is over (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        facts: dict[str, object] = httpx.get(f"{server.url}/models/{name}").json()["runtime"]
        if not settled or facts["compile_status"] not in ("pending", "compiling") or time.monotonic() > deadline:
            return facts
        time.sleep(0.2)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compiled-registry")
    X = numeric_data(600, 6)
    X.iloc[::17, 2] = np.nan  # missing values take each split's default direction
    y = (X["x0"].fillna(0) + X["x1"] > 0).astype(int)
    shipml.save_model(lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(X, y), "clf",
                      sample=X, registry=root)
    three = (X["x0"].fillna(0) > 0).astype(int) + (X["x1"] > 0.5)
    ova = lgb.LGBMClassifier(objective="multiclassova", n_estimators=10, num_leaves=7, verbose=-1).fit(X, three)
    shipml.save_model(ova, "ova", sample=X, registry=root)
    return root


def test_lightgbm_switches_to_its_compiled_form_and_answers_the_same(registry_dir: Path, tmp_path: Path) -> None:
    server = start(registry_dir, tmp_path, endpoints=[{"name": "clf", "models": ["clf"]},
                                                       {"name": "ova", "models": ["ova"]}])
    try:
        facts = runtime(server, "clf")
        assert facts == {"name": "lightgbm", "compiled": True, "compile_status": "compiled"}
        model = shipml.load_model("clf", registry=registry_dir)
        rows = numeric_data(300, 6, seed=5)
        rows.iloc[::7, 2] = np.nan
        records = [{k: (None if np.isnan(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
        body = httpx.post(server.url + "/models/clf/predict", json={"instances": records}).json()
        assert body["predictions"] == model.predict(rows).tolist()
        np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9, atol=1e-12)

        ova = runtime(server, "ova")  # lleaves would get one-vs-all wrong: refused, served by LightGBM
        assert ova["compiled"] is False and "multiclassova" in str(ova["compile_status"])
        three = shipml.load_model("ova", registry=registry_dir)
        answer = httpx.post(server.url + "/models/ova/predict", json={"instances": records[:50]}).json()
        assert answer["predictions"] == three.predict(rows.head(50)).tolist()
    finally:
        assert server.stop() == 0


def test_compile_off_keeps_lightgbm(registry_dir: Path, tmp_path: Path) -> None:
    server = start(registry_dir, tmp_path, server={"compile": "off"})
    try:
        assert runtime(server, "clf", settled=False) == {"name": "lightgbm", "compiled": False,
                                                          "compile_status": "off"}
    finally:
        assert server.stop() == 0
