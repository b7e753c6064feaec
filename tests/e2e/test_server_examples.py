"""The examples a real server shows (``GET /models/NAME``, ``/openapi.json``) are valid requests made from the
signature and profile, not training rows: with a model whose golden rows are distinctive (amounts with every
digit, visit counts over a wide range, timestamps to the second), no example row equals a golden row and no
distinctive golden value appears in either document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow


def training_frame(rows: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cities = [f"city{i:02d}" for i in range(30)]
    weights = 1 / np.arange(1, 31)
    return pd.DataFrame({
        "amount": rng.normal(1000, 250, rows),
        "visits": rng.integers(0, 100_000, rows),
        "city": rng.choice(cities, rows, p=weights / weights.sum()),
        "member": rng.random(rows) > 0.4,
        "signup": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10**8, rows), unit="s"),
    })


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    X = training_frame()
    y = np.where((X["amount"] > 1000) & X["member"], "buys", "browses")
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["amount", "visits"]),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "member"])]),
        LogisticRegression(max_iter=500))
    shipml.save_model(pipeline.fit(X, y), "shop", sample=X, registry=root)
    return root


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(registry: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[Server]:
    s = start(registry, tmp_path_factory.mktemp("examples-server"), http=request.param,
              endpoints=[{"name": "shop", "models": ["shop"]}],
              input_policy={"out_of_range": "reject", "unseen_category": "reject"})
    yield s
    assert s.stop() == 0


def golden_rows(registry: Path) -> list[dict[str, Any]]:
    inputs = shipml.load_model("shop", registry=registry).golden()["inputs"]
    return [{name: values[i] for name, values in inputs.items()} for i in range(len(inputs["amount"]))]


def examples(server: Server) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """Each document's example rows, with the document's text."""
    info = httpx.get(server.url + "/models/shop")
    openapi = httpx.get(server.url + "/openapi.json")
    operation = openapi.json()["paths"]["/models/shop/predict"]["post"]
    return {"model_info": (info.json()["example"]["instances"], info.text),
            "openapi": (operation["requestBody"]["content"]["application/json"]["example"]["instances"],
                        openapi.text)}


def test_examples_are_valid_requests(server: Server) -> None:
    for where, (rows, _) in examples(server).items():
        assert rows, where
        answer = httpx.post(server.url + "/models/shop/predict", json={"instances": rows})
        assert answer.status_code == 200, (where, answer.text)
        assert "warnings" not in answer.json(), (where, answer.json())


def test_examples_are_no_training_rows(server: Server, registry: Path) -> None:
    golden = golden_rows(registry)
    assert len(golden) >= 50
    distinctive = {repr(row["amount"]) for row in golden} | {row["signup"] for row in golden}
    for where, (rows, text) in examples(server).items():
        for row in rows:
            assert row not in golden, where
            assert row["amount"] not in {g["amount"] for g in golden}
        for value in distinctive:
            assert value not in text, (where, value)


def test_examples_are_typical(server: Server) -> None:
    X = training_frame()
    for where, (rows, _) in examples(server).items():
        row = rows[0]
        assert abs(row["amount"] - X["amount"].median()) < 10, where
        assert abs(row["visits"] - X["visits"].median()) < 1000, where
        assert row["city"] == X["city"].value_counts().idxmax()
        assert row["member"] == bool(X["member"].mode()[0])
        assert pd.Timestamp(row["signup"]).normalize() == pd.Timestamp(row["signup"])  # a day, not a second
