"""The records fast path (``protocol/records.py``) changes nothing a client sees.

Hypothesis writes JSON bodies as text - numbers spelt every way JSON allows (and some it does not), values of
every kind, keys missing, doubled, extra or in any order, other top-level keys, trailing bytes - and:

- whatever the decoder accepts, the general reading (``json_body.loads`` then ``columns.record_rows``) accepts as
  records of exactly the model's inputs, with the same numbers;
- the real app answers every body the same with the fast path as without it (status and body, the request id
  aside), through its ``/predict``, ``/models/{name}/predict`` and v1 routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.package.columns import record_rows, rows_matrix
from shipml.protocol import json_body
from shipml.protocol.records import DecodedRecords, RecordsDecoder
from shipml.server.app import ShipmlApp
from tests.server.test_rejected_garbage import in_process

NAMES = ["x0", "x1", "width-cm", "é", "n"]  # names that are not identifiers, or not ASCII; "n" is an int column


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShipmlApp, asyncio.AbstractEventLoop]]:
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=NAMES[:4])
    X["n"] = rng.integers(0, 10, 300)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=3, verbose=-1).fit(X, (X["x0"] > 0).astype(int))
    shipml.save_model(model, "clf", sample=X, registry=root)
    with in_process(root, max_rows=20) as (app, loop):
        assert app.endpoints["clf"].runner().model.signature.column("n").dtype == "int"
        yield app, loop


GOOD_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-5, 5).map(str),
    st.sampled_from(["-0", "0.0e0", "1E+2", "1e-400", "-1e-400", "4.9e-324", "1.7976931348623157e308",
                     "9007199254740993", "18446744073709551616", "-0.0"]),
)
NUMBERS = st.one_of(GOOD_NUMBERS, st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "01", "1.", ".5",
                                                   "+1", "0x10"]))
VALUES = st.one_of(NUMBERS, NUMBERS, NUMBERS, st.sampled_from(["true", "false", "null", '"1.5"', "[1]", "{}", '""']))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON (or almost JSON) body, as text: mostly records of the model's inputs, each possibly off."""
    records = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 3)):  # mostly records the fast path takes
            members = [(name, draw(GOOD_NUMBERS)) for name in NAMES]
        else:
            members = [(name, draw(VALUES)) for name in NAMES if draw(st.integers(0, 8)) > 0]
        if draw(st.integers(0, 8)) == 0:
            members.append((draw(st.sampled_from([*NAMES, "zz", "X0"])), draw(VALUES)))  # doubled or extra
        members = draw(st.permutations(members))
        records.append("{" + ", ".join(f"{orjson.dumps(k).decode()}: {v}" for k, v in members) + "}")
    instances = "[" + ",".join(records) + "]"
    top = draw(st.sampled_from(["instances", "instances", "instances", "extra", "inputs", "list", "doubled"]))
    text = {"instances": '{"instances": %s}', "extra": '{"instances": %s, "parameters": {"a": 1}}',
            "inputs": '{"inputs": %s}', "list": "%s", "doubled": '{"instances": [], "instances": %s}'}[top] % instances
    text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", " \n", "x", "}", "\x00"]))
    return text.encode()


def general_rows(body: bytes) -> list[tuple[Any, ...]] | None:
    """The records of exactly NAMES the general reading finds in ``body`` (None when it finds no such thing)."""
    try:
        payload = json_body.loads(body)
    except json_body.JSONBodyError:
        return None
    if not isinstance(payload, dict) or set(payload) != {"instances"} or not isinstance(payload["instances"], list):
        return None
    if not all(isinstance(r, dict) for r in payload["instances"]):
        return None
    return record_rows(payload["instances"], NAMES)


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_what_the_decoder_reads_the_general_reading_reads_alike(body: bytes) -> None:
    decoded = RecordsDecoder(NAMES).decode(body)
    if decoded is None:
        return
    general = general_rows(body)
    assert general is not None, body
    assert len(general) == len(decoded)
    if general:
        expected, got = rows_matrix(general, len(NAMES)), rows_matrix(decoded.rows, len(NAMES))
        assert expected is not None and got is not None, body
        assert np.array_equal(expected, got) and np.array_equal(np.signbit(expected), np.signbit(got)), body
    assert decoded.records() == [dict(zip(NAMES, row, strict=True)) for row in decoded.rows]


def test_plain_records_take_the_fast_path() -> None:
    decoder = RecordsDecoder(NAMES)
    body = orjson.dumps({"instances": [dict.fromkeys(NAMES, 1), {**dict.fromkeys(NAMES, 0.5), "n": -3}]})
    decoded = decoder.decode(body)
    assert isinstance(decoded, DecodedRecords)
    assert decoded.rows == [(1.0,) * 5, (0.5, 0.5, 0.5, 0.5, -3.0)]
    assert decoder.decode(body.replace(b'"n":-3', b'"n":null')) is None
    assert decoder.decode(body.replace(b"}]}", b',"zz":1}]}')) is None
    assert decoder.decode(b'{"instances": [], "k": 1}') is None


class BodyRequest:
    """A request whose body came whole with its headers."""

    def __init__(self, path: str, body: bytes) -> None:
        self.method, self.path, self.token_id = "POST", path, None
        self._body = body

    def header(self, name: str) -> str | None:
        return {"content-type": "application/json", "content-length": str(len(self._body))}.get(name)

    async def body(self, limit: int) -> bytes:
        return self._body


def ask(served: tuple[ShipmlApp, asyncio.AbstractEventLoop], path: str, body: bytes) -> tuple[int, Any]:
    app, loop = served
    reply = loop.run_until_complete(app.respond(BodyRequest(path, body)))  # type: ignore[arg-type]
    assert reply is not None
    answer = orjson.loads(reply.body)
    answer.pop("request_id", None)
    return reply.status, answer


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), path=st.sampled_from(["/predict", "/models/clf/predict", "/v1/models/clf:predict"]))
def test_the_app_answers_alike_with_and_without_the_fast_path(served: tuple[ShipmlApp, asyncio.AbstractEventLoop],
                                                              monkeypatch: pytest.MonkeyPatch, body: bytes,
                                                              path: str) -> None:
    runner = served[0].endpoints["clf"].runner()
    fast = ask(served, path, body)
    with monkeypatch.context() as patched:
        patched.setattr(runner, "decoder", None)
        general = ask(served, path, body)
    assert fast == general, body
