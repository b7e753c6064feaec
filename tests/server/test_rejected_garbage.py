"""A rejected request leaves no reference cycle behind (issue 12, item 5), through both transports in-process.

A cycle keeps everything it reaches - the request's parsed body, its problems - until the cyclic collector runs,
and the server runs it rarely (runner.tune_gc) with its models frozen out of its sight: 10,000 large 422s grew
the server by ~60 MB. The batcher's future held the SchemaError whose traceback held the frame awaiting the
future. Each request here runs twice (the first may fill caches), then the collector must find nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shipml
from shipml.server.app import ShipmlApp
from shipml.server.rsgi import ShipmlRSGI
from shipml.spec import DeploymentSpec

NAMES = [f"x{i}" for i in range(6)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShipmlApp, asyncio.AbstractEventLoop]]:
    root = tmp_path_factory.mktemp("garbage")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 6)), columns=NAMES)
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, (X["x0"] > 0).astype(int))
    shipml.save_model(model, "clf", sample=X, registry=root)
    logger = logging.getLogger("shipml")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a 5xx logs its traceback: not what is tested here
    with in_process(root, max_rows=40) as served:
        yield served
    logger.setLevel(level)


@contextmanager
def in_process(registry: Path, max_rows: int) -> Iterator[tuple[ShipmlApp, asyncio.AbstractEventLoop]]:
    """The app serving ``clf`` from ``registry`` (compiled trees off), loaded on a loop of its own."""
    spec = DeploymentSpec.model_validate({
        "registry": str(registry), "server": {"access_log": False, "compile": "off"}, "limits": {"max_rows": max_rows},
        "endpoints": [{"name": "clf", "models": ["clf"]}]})
    loop = asyncio.new_event_loop()
    app = ShipmlApp(spec)
    loop.run_until_complete(app.load_models())
    try:
        yield app, loop
    finally:
        loop.run_until_complete(app.shutdown())
        close(loop)


def close(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop`` once the tasks left on it (the body deadlines' timer between two ticks) are cancelled."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.close()


class Scope:
    proto = "http"

    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.headers = method, path, headers


class Protocol:
    """granian's side of one request whose body came with its headers."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status = 0

    def __aiter__(self) -> Protocol:
        return self

    async def __anext__(self) -> bytes:
        if not self.body:
            raise StopAsyncIteration
        body, self.body = self.body, b""
        return body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status


async def through_rsgi(app: ShipmlApp, method: str, path: str, body: bytes, content_type: str) -> int:
    protocol = Protocol(body)
    headers = {"content-type": content_type, "content-length": str(len(body))}
    await ShipmlRSGI(app).__rsgi__(Scope(method, path, headers), protocol)  # type: ignore[arg-type]
    return protocol.status


async def through_asgi(app: ShipmlApp, method: str, path: str, body: bytes, content_type: str) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    await app(scope, receive, send)
    return int(sent[0]["status"])


#: Cell values the checks refuse. (Lists and objects in a cell are issue 12's item 1: some reach the model.)
cells = st.one_of(st.none(), st.text(max_size=4), st.just(float("inf")))


@st.composite
def rejected(draw: st.DrawFn) -> tuple[str, str, bytes, str]:
    """A request the server refuses: bad cells in records or columns, unknown or missing columns, too many
    rows, a body that is not JSON or not JSON at all, an unknown model."""
    kind = draw(st.sampled_from(["records", "columns", "extra", "missing", "rows", "json", "media", "model"]))
    n = draw(st.integers(1, 30))
    records = [dict.fromkeys(NAMES, 0.5) for _ in range(n)]
    if kind in ("records", "columns"):
        for i in draw(st.sets(st.integers(0, n - 1), min_size=1)):
            records[i][draw(st.sampled_from(NAMES))] = draw(cells)
    if kind == "extra":
        for r in records:
            r.update(dict.fromkeys(draw(st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=50)), 1))
    if kind == "missing":
        for r in records:
            del r[draw(st.sampled_from(NAMES))]
    if kind == "rows":
        records *= 41 // n + 1
    payload: Any = {"instances": records}
    if kind == "columns":
        payload = {"inputs": {name: [r[name] for r in records] for name in NAMES}}
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY) if kind != "json" else \
        draw(st.binary(max_size=50)).replace(b"{", b"[") + b"{"
    path = "/models/nobody/predict" if kind == "model" else draw(st.sampled_from(
        ["/predict", "/models/clf/predict", "/v1/models/clf:predict"]))
    content_type = "text/csv" if kind == "media" else "application/json"
    return "POST", path, body, content_type


@settings(max_examples=25, deadline=None)
@given(request=rejected(), transport=st.sampled_from([through_rsgi, through_asgi]))
def test_a_rejected_request_leaves_no_reference_cycle(served: tuple[ShipmlApp, asyncio.AbstractEventLoop],
                                                      request: tuple[str, str, bytes, str], transport: Any) -> None:
    app, loop = served
    status = loop.run_until_complete(transport(app, *request))
    assert status >= 400
    gc.collect()
    gc.freeze()  # what exists now is out of the collector's sight (as in the server): it looks at the new only
    gc.disable()
    try:
        assert loop.run_until_complete(transport(app, *request)) == status
        found = gc.collect()
    finally:
        gc.enable()
        gc.unfreeze()
    assert found == 0, f"{found} objects in reference cycles after one rejected request ({status})"
