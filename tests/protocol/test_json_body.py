"""Reading request bodies as JSON (issue #12, item 8): the literals NaN, Infinity and -Infinity, as Python's json
and tritonclient's JSON mode write them, are read as those floats; everything else is read exactly as orjson
reads it, and what orjson refuses stays refused."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.errors import ProtocolError
from shipml.package.signature import ColumnSpec, OutputSpec, Signature
from shipml.protocol import v2
from shipml.protocol.json_body import JSONBodyError, loads
from tests.json_strategies import json_values, readable


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def as_orjson_reads(value: Any) -> Any:
    """``value`` as orjson gives it back from JSON text: integers beyond 64 bits become floats."""
    if isinstance(value, list):
        return [as_orjson_reads(v) for v in value]
    if isinstance(value, dict):
        return {k: as_orjson_reads(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    return value


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_any_value_python_writes_is_read_back_as_orjson_would_with_nan_and_infinities(value: Any) -> None:
    text = json.dumps(value).encode()
    if not readable(value):  # a number beyond a double's range: orjson refuses it, so does the fallback
        with pytest.raises(JSONBodyError, match="infinity when parsed as double"):
            loads(text)
        return
    got = loads(text)
    assert same(got, as_orjson_reads(value))
    if b"NaN" not in text and b"Infinity" not in text:
        assert same(got, orjson.loads(text))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_floats_including_nan_and_infinities(values: list[float]) -> None:
    for body in ({"instances": [{"x": v} for v in values]}, {"inputs": {"x": values}}):
        got = loads(json.dumps(body).encode())
        read = [r["x"] for r in got["instances"]] if "instances" in got else got["inputs"]["x"]
        np.testing.assert_array_equal(np.array(read, dtype=float), np.array(values, dtype=float))


@pytest.mark.parametrize(("body", "message"), [
    (b"[nan]", "invalid literal"),  # only the exact literals Python writes
    (b"[-NaN]", "Expecting value"),
    (b"[NaN, 1e400]", "1e400 is infinity when parsed as double"),
    (b"[NaN, " + b"9" * 400 + b"]", "is infinity when parsed as double"),
    (b'[NaN, "\\ud800"]', "lone surrogate"),
    (b'{"a": NaN} trailing', "Extra data"),
    (b'{"a": 1} trailing', "unexpected content after document"),
    (b"\xff[NaN]", "not valid UTF-8"),
    (b"[NaN", "delimiter"),
])
def test_what_orjson_refuses_stays_refused(body: bytes, message: str) -> None:
    with pytest.raises(JSONBodyError, match=message):
        loads(body)


def test_only_a_document_followed_by_more_is_trailing() -> None:
    for body, trailing in [(b'{"a": 1}\x00\x01\x02', True), (b'{"a": NaN} x', True), (b'{"a": nan}', False),
                           (b'{"a": ', False)]:
        with pytest.raises(JSONBodyError) as caught:
            loads(body)
        assert caught.value.trailing is trailing, body


def test_valid_surrogate_pairs_and_deep_nesting_are_read() -> None:
    assert loads(b'[NaN, "\\ud83d\\ude00"]')[1] == "\U0001F600"
    deep = b"[" * 500 + b"NaN" + b"]" * 500
    value = loads(deep)
    for _ in range(500):
        value = value[0]
    assert math.isnan(value)


# -- the v2 codec: NaN in JSON tensors, and the hint about binary data -------------------------------------------

@pytest.fixture
def signature() -> Signature:
    return Signature(inputs=[ColumnSpec(name="income", dtype="float", pandas_dtype="float64", nullable=True),
                             ColumnSpec(name="age", dtype="int", pandas_dtype="int64")],
                     input_kind="dataframe", outputs=OutputSpec(task="regression"))


def test_v2_json_tensors_take_nan_and_infinities(signature: Signature) -> None:
    body = json.dumps({"inputs": [
        {"name": "income", "datatype": "FP64", "shape": [4], "data": [1.5, math.nan, math.inf, -math.inf]},
        {"name": "age", "datatype": "INT64", "shape": [4], "data": [1, 2, 3, 4]}]}).encode()
    assert b"NaN" in body and b"-Infinity" in body
    decoded = v2.decode_infer_request(body, None, signature)
    assert isinstance(decoded.columns, dict)
    np.testing.assert_array_equal(decoded.columns["income"], [1.5, np.nan, np.inf, -np.inf])


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_v2_nan_in_an_integer_tensor_is_a_clear_400(signature: Signature, value: float) -> None:
    body = json.dumps({"inputs": [{"name": "age", "datatype": "INT64", "shape": [2], "data": [1, value]}]})
    with pytest.raises(ProtocolError, match="'age': INT64 data must be integers, got NaN or an infinity"):
        v2.decode_infer_request(body.encode(), None, signature)


def test_v2_binary_data_hint_only_when_binary_data_follows(signature: Signature) -> None:
    with pytest.raises(ProtocolError) as caught:
        v2.decode_infer_request(b'{"inputs": [{"name": "age", "datatype": "INT64", "shape": [1], "data": [nan]}]}',
                                None, signature)
    assert "not valid JSON" in str(caught.value) and "Inference-Header-Content-Length" not in str(caught.value)
    with pytest.raises(ProtocolError) as caught:
        v2.decode_infer_request(b'{"inputs": []}\x01\x00\x00\x00', None, signature)
    assert "Inference-Header-Content-Length must give the JSON's length" in str(caught.value)
