"""The Open Inference Protocol v2 codec against the real tritonclient: its encoder builds the requests we decode,
its parser reads the responses we encode. No server involved."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton

from shipml.errors import ProtocolError, ShipmlError
from shipml.package.signature import OutputSpec, Signature, as_frame, infer_inputs
from shipml.package.validation import check
from shipml.protocol import v2

Client = triton.InferenceServerClient


def signature_of(frame: pd.DataFrame, outputs: OutputSpec) -> Signature:
    sample, kind = as_frame(frame)
    return Signature(inputs=infer_inputs(sample), input_kind=kind, outputs=outputs)


@pytest.fixture
def mixed() -> Signature:
    frame = pd.DataFrame({
        "age": [20, 35, 50],
        "income": [1.5, 2.5, 3.5],
        "state": ["CA", "NY", "TX"],
        "member": [True, False, True],
        "joined": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
    })
    return signature_of(frame, OutputSpec(task="classification", classes=["no", "yes"], probabilities=True,
                                          prediction_dtype="object"))


@pytest.fixture
def numeric() -> Signature:
    frame = pd.DataFrame({"a": [0.0, 1.0], "b": [1, 2], "c": [0.5, 0.25], "d": [True, False]})
    return signature_of(frame, OutputSpec(task="classification", classes=[0, 1, 2], probabilities=True,
                                          prediction_dtype="int64"))


def tensor(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    datatype = "BYTES" if array.dtype == object else str(triton.np_to_triton_dtype(array.dtype))
    t = triton.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def request(*inputs: triton.InferInput, **kwargs: Any) -> tuple[bytes, int | None]:
    body, header_length = Client.generate_request_body(list(inputs), **kwargs)
    return bytes(body), header_length


def raw_request(doc: dict[str, Any], binary: bytes = b"") -> tuple[bytes, int | None]:
    header = orjson.dumps(doc)
    return header + binary, (len(header) if binary else None)


# -- metadata -----------------------------------------------------------------------------------------------------

def test_server_metadata_lists_binary_extension_once() -> None:
    meta = v2.server_metadata("1.2.3", ["model_repository", "binary_tensor_data"])
    assert meta == {"name": "shipml", "version": "1.2.3",
                    "extensions": ["model_repository", "binary_tensor_data"]}
    assert v2.server_metadata("1.2.3", [])["extensions"] == ["binary_tensor_data"]


def test_model_metadata_describes_each_column_and_both_outputs(mixed: Signature) -> None:
    meta = v2.model_metadata("churn", ["1", "2"], "sklearn", mixed)
    assert meta["name"] == "churn"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "state", "datatype": "BYTES", "shape": [-1]},
        {"name": "member", "datatype": "BOOL", "shape": [-1]},
        {"name": "joined", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert "parameters" not in meta  # a string column: no single-matrix form
    orjson.dumps(meta)


def test_model_metadata_offers_the_matrix_when_all_numeric(numeric: Signature) -> None:
    meta = v2.model_metadata("iris", ["3"], "lightgbm", numeric)
    assert meta["parameters"] == {"matrix_input": "input-0", "matrix_input_shape": "[-1, 4]",
                                  "matrix_input_datatypes": "FP32,FP64"}
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]


def test_model_metadata_regression_has_only_predict() -> None:
    sig = signature_of(pd.DataFrame({"x": [1.0, 2.0]}), OutputSpec(task="regression"))
    assert v2.model_metadata("r", ["1"], "sklearn", sig)["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1]}]


# -- requests: one tensor per column --------------------------------------------------------------------------------

NUMERIC_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numeric_column_round_trips_exactly(mixed: Signature, dtype: type, binary: bool) -> None:
    if np.dtype(dtype).kind == "f":
        values: np.ndarray = np.array([-1.5, 0.0, np.finfo(dtype).max, np.finfo(dtype).tiny], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        values = np.array([info.min, 0, 1, info.max], dtype=dtype)
    body, header_length = request(tensor("income", values, binary))
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert isinstance(decoded.columns, dict)
    got = decoded.columns["income"]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, values)
    assert decoded.n_rows == 4


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bool_and_bytes_columns_round_trip(mixed: Signature, binary: bool) -> None:
    member = np.array([True, False, False, True])
    state = np.array(["CA", "", "São Paulo ✓", "NY"], dtype=object)
    joined = np.array(["2024-01-01", "2024-02-01T10:00:00", "2024-03-01", "2024-01-15"], dtype=object)
    body, header_length = request(tensor("member", member, binary), tensor("state", state, binary),
                                  tensor("joined", joined, binary), request_id="req-7")
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert decoded.id == "req-7"
    assert isinstance(decoded.columns, dict)
    assert decoded.columns["member"].dtype == np.bool_
    np.testing.assert_array_equal(decoded.columns["member"], member)
    assert decoded.columns["state"].tolist() == state.tolist()
    assert decoded.columns["joined"].tolist() == joined.tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_full_request_in_column_tensors_passes_validation(mixed: Signature, binary: bool) -> None:
    inputs = [
        tensor("age", np.array([[25], [40]], dtype=np.int64), binary),  # [n, 1] is a column too
        tensor("income", np.array([2.0, 3.0], dtype=np.float32), not binary),  # binary and JSON mixed
        tensor("state", np.array(["NY", "TX"], dtype=object), binary),
        tensor("member", np.array([False, True]), not binary),
        tensor("joined", np.array(["2024-01-10", "2024-02-20"], dtype=object), binary),
    ]
    body, header_length = request(*inputs)
    decoded = v2.decode_infer_request(body, header_length, mixed, max_rows=2)
    assert isinstance(decoded.columns, dict)
    assert list(decoded.columns) == mixed.names
    assert all(a.shape == (2,) for a in decoded.columns.values())
    checked = check(decoded.columns, mixed)
    assert checked.ok, checked.problems
    assert checked.table.columns["age"].tolist() == [25.0, 40.0]


def test_hand_written_json_with_nested_data(mixed: Signature) -> None:
    body, header_length = raw_request({
        "id": "abc",
        "parameters": {"trace": "x"},
        "inputs": [{"name": "age", "shape": [3, 1], "datatype": "INT64", "data": [[1], [2], [3]]},
                   {"name": "income", "shape": [3], "datatype": "FP64", "data": [1, 2.5, None]}],
    })
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert decoded.id == "abc"
    assert decoded.parameters == {"trace": "x"}
    assert isinstance(decoded.columns, dict)
    assert decoded.columns["age"].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(decoded.columns["income"], [1.0, 2.5, np.nan])  # JSON null: missing
    assert decoded.outputs == (v2.RequestedOutput("predict", False), v2.RequestedOutput("predict_proba", False))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_zero_rows(mixed: Signature, binary: bool) -> None:
    body, header_length = request(tensor("income", np.empty(0), binary),
                                  tensor("state", np.empty(0, dtype=object), binary))
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert decoded.n_rows == 0
    assert isinstance(decoded.columns, dict)
    assert decoded.columns["income"].shape == decoded.columns["state"].shape == (0,)


# -- requests: a single matrix --------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_matrix(numeric: Signature, dtype: type, binary: bool) -> None:
    matrix: np.ndarray = np.array([[0.5, 1.0, 0.25, 1.0], [1.0, 2.0, 0.5, 0.0], [0.0, 1.0, 0.5, 1.0]], dtype=dtype)
    body, header_length = request(tensor("input-0", matrix, binary))
    decoded = v2.decode_infer_request(body, header_length, numeric)
    assert isinstance(decoded.columns, np.ndarray)
    assert decoded.columns.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.columns, matrix)
    assert decoded.n_rows == 3
    checked = check(decoded.columns, numeric)
    assert checked.ok, checked.problems
    np.testing.assert_array_equal(checked.table.columns["c"], matrix[:, 2].astype(np.float64))


# -- requested outputs ---------------------------------------------------------------------------------------------

def test_outputs_default_to_binary_when_tritonclient_names_none(mixed: Signature) -> None:
    body, header_length = request(tensor("age", np.array([1, 2]), True))
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert decoded.parameters == {"binary_data_output": True}
    assert decoded.binary_outputs == {"predict", "predict_proba"}


def test_requested_outputs_say_which_and_how(mixed: Signature) -> None:
    outputs = [triton.InferRequestedOutput("predict_proba", binary_data=False),
               triton.InferRequestedOutput("predict", binary_data=True)]
    body, header_length = request(tensor("age", np.array([1, 2]), False), outputs=outputs)
    decoded = v2.decode_infer_request(body, header_length, mixed)
    assert decoded.outputs == (v2.RequestedOutput("predict_proba", False), v2.RequestedOutput("predict", True))
    assert decoded.output_names == ["predict_proba", "predict"]
    assert decoded.binary_outputs == {"predict"}


def test_regression_has_only_predict_output() -> None:
    sig = signature_of(pd.DataFrame({"x": [1.0, 2.0]}), OutputSpec(task="regression"))
    body, header_length = raw_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]})
    assert v2.decode_infer_request(body, header_length, sig).output_names == ["predict"]


# -- responses -----------------------------------------------------------------------------------------------------

RESPONSE_ARRAYS = {
    "bool": np.array([True, False, True]),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "int32": np.array([-5, 0, 7], dtype=np.int32),
    "int64": np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]),
    "uint16": np.array([0, 1, 65535], dtype=np.uint16),
    "uint64": np.array([0, 1, np.iinfo(np.uint64).max], dtype=np.uint64),
    "float16": np.array([0.1, -2.0, 65504.0], dtype=np.float16),
    "float32": np.array([[0.1, 0.9], [0.25, 0.75], [1.0, 0.0]], dtype=np.float32),
    "float64": np.array([[0.1, 0.9], [np.nan, 1e300], [1.0, -0.0]]),
    "float64_big_endian": np.array([0.1, -2.5e-300], dtype=">f8"),
    "empty": np.empty((0, 3)),
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", list(RESPONSE_ARRAYS))
def test_numeric_outputs_round_trip_through_tritonclient(kind: str, binary: bool) -> None:
    array = RESPONSE_ARRAYS[kind]
    body, header_length = v2.encode_infer_response("m", "4", "rid", {"predict": array},
                                                   {"predict"} if binary else frozenset())
    assert (header_length is not None) == binary
    result = Client.parse_response_body(body, header_length=header_length)
    got = result.as_numpy("predict")
    assert got.dtype == array.dtype.newbyteorder("=")
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "4", "rid")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_string_labels_become_bytes(binary: bool) -> None:
    labels = np.array(["yes", "no", "peut-être ✓", ""], dtype=object)
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [0.0, 1.0]])
    binary_names = {"predict", "predict_proba"} if binary else set()
    body, header_length = v2.encode_infer_response("m", "1", None, {"predict": labels, "predict_proba": proba},
                                                   binary_names)
    result = Client.parse_response_body(body, header_length=header_length)
    assert result.get_output("predict")["datatype"] == "BYTES"
    got = result.as_numpy("predict")
    expected = [s.encode() for s in labels] if binary else labels.tolist()  # binary BYTES parse to bytes
    assert got.tolist() == expected
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), proba)
    assert "id" not in result.get_response()


@pytest.mark.parametrize("labels", [np.array(["a", "bb"]), np.array([b"a", b"bb"]),
                                    np.array(["a", "bb"], dtype=object)], ids=["str_", "bytes_", "object"])
def test_any_string_array_is_sent_as_bytes(labels: np.ndarray) -> None:
    body, header_length = v2.encode_infer_response("m", "1", None, {"predict": labels}, {"predict"})
    result = Client.parse_response_body(body, header_length=header_length)
    assert result.as_numpy("predict").tolist() == [b"a", b"bb"]


def test_object_array_of_numbers_is_numeric() -> None:
    body, header_length = v2.encode_infer_response("m", "1", None, {"predict": np.array([0, 2, 1], dtype=object)})
    result = Client.parse_response_body(body, header_length=header_length)
    assert result.get_output("predict")["datatype"] == "INT64"
    assert result.as_numpy("predict").tolist() == [0, 2, 1]


def test_binary_outputs_follow_the_header_in_order() -> None:
    outputs = {"predict": np.array([1, 2], dtype=np.int64), "predict_proba": np.array([[0.5, 0.5], [1.0, 0.0]])}
    body, header_length = v2.encode_infer_response("m", "1", "r", outputs, {"predict", "predict_proba"})
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [16, 32]
    assert body[header_length:] == outputs["predict"].tobytes() + outputs["predict_proba"].tobytes()


def test_encode_error() -> None:
    assert orjson.loads(v2.encode_error("tensor 'x': bad")) == {"error": "tensor 'x': bad"}


# -- errors ----------------------------------------------------------------------------------------------------------

def decode_error(body: bytes, header_length: int | None, sig: Signature, **kwargs: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        v2.decode_infer_request(body, header_length, sig, **kwargs)
    assert info.value.status == 400
    assert isinstance(info.value, ShipmlError)
    assert info.value.public_message == str(info.value)
    return str(info.value)


def test_unknown_tensor_name(mixed: Signature, numeric: Signature) -> None:
    body, header_length = request(tensor("agee", np.array([1]), True))
    message = decode_error(body, header_length, mixed)
    assert "unknown tensor 'agee'" in message
    assert "'age'" in message
    body, header_length = request(tensor("x", np.array([1.0]), False))
    assert "or a single 'input-0' matrix" in decode_error(body, header_length, numeric)


def test_unknown_tensor_name_with_many_inputs() -> None:
    sig = signature_of(pd.DataFrame({f"f{i}": [0.5] for i in range(50)}), OutputSpec(task="regression"))
    body, header_length = request(tensor("g0", np.array([1.0]), True))
    message = decode_error(body, header_length, sig)
    assert "'f19', ... (50 in all)]" in message
    assert "'f20'" not in message


def test_shape_and_data_length_mismatch(mixed: Signature) -> None:
    body, header_length = raw_request({"inputs": [
        {"name": "age", "shape": [3], "datatype": "INT64", "data": [1, 2]}]})
    message = decode_error(body, header_length, mixed)
    assert "'age'" in message
    assert "shape [3] has 3 elements, but data has 2" in message


def test_binary_size_does_not_fit_the_shape(mixed: Signature) -> None:
    t = tensor("age", np.array([1, 2, 3], dtype=np.int64), True)
    t.set_shape([4])
    body, header_length = request(t)
    message = decode_error(body, header_length, mixed)
    assert "'age'" in message
    assert "binary_data_size is 24 bytes, but shape [4] of INT64 needs 32" in message


@pytest.mark.parametrize(("name", "array", "expected"), [
    ("state", np.array([1.0], dtype=np.float32), "datatype FP32 is not allowed for a string column; send BYTES"),
    ("age", np.array(["1"], dtype=object), "datatype BYTES is not allowed for a int column; send INT64"),
    ("member", np.array([1], dtype=np.int64), "datatype INT64 is not allowed for a bool column; send BOOL"),
    ("joined", np.array([1], dtype=np.int64), "datatype INT64 is not allowed for a datetime column"),
])
def test_datatype_not_allowed_for_column(mixed: Signature, name: str, array: np.ndarray, expected: str) -> None:
    body, header_length = request(tensor(name, array, False))
    message = decode_error(body, header_length, mixed)
    assert f"tensor {name!r}" in message
    assert expected in message


def test_unknown_datatype(mixed: Signature) -> None:
    body, header_length = raw_request({"inputs": [
        {"name": "income", "shape": [1], "datatype": "BF16", "parameters": {"binary_data_size": 2}}]}, b"\0\0")
    message = decode_error(body, header_length, mixed)
    assert "tensor 'income': datatype 'BF16' is not supported" in message


@pytest.mark.parametrize(("data", "expected"), [
    ([1.5, 2.0], "INT64 data must be integers, got numbers with a fraction"),
    (["1", "2"], "INT64 data must be integers, got strings"),
    ([True, False], "INT64 data must be integers, got booleans"),
    ([[1], [2, 3]], "not a regular (non-ragged) list"),
])
def test_json_data_of_the_wrong_kind(mixed: Signature, data: Any, expected: str) -> None:
    body, header_length = raw_request({"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": data}]})
    message = decode_error(body, header_length, mixed)
    assert "tensor 'age'" in message
    assert expected in message


def test_json_integer_out_of_range(mixed: Signature) -> None:
    body, header_length = raw_request({"inputs": [
        {"name": "age", "shape": [2], "datatype": "INT8", "data": [1, 300]}]})
    assert "outside the range of INT8 [-128, 127]" in decode_error(body, header_length, mixed)


def test_json_bytes_must_be_strings(mixed: Signature) -> None:
    body, header_length = raw_request({"inputs": [
        {"name": "state", "shape": [2], "datatype": "BYTES", "data": ["CA", 7]}]})
    assert "tensor 'state': BYTES element 1 is not a string: 7" in decode_error(body, header_length, mixed)


@pytest.mark.parametrize(("cut", "expected"), [
    (-1, "add up to 8 bytes, but 7 bytes follow the JSON header"),
    (None, "add up to 8 bytes, but 9 bytes follow the JSON header"),
])
def test_binary_sizes_not_adding_up(mixed: Signature, cut: int | None, expected: str) -> None:
    body, header_length = request(tensor("income", np.array([1.5]), True))
    body = body[:cut] if cut is not None else body + b"\0"
    message = decode_error(body, header_length, mixed)
    assert "{'income': 8}" in message
    assert expected in message


def test_binary_bytes_element_past_its_tensor(mixed: Signature) -> None:
    binary = (2).to_bytes(4, "little") + b"CA" + (50).to_bytes(4, "little") + b"NY"
    body, header_length = raw_request({"inputs": [
        {"name": "state", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(binary)}}]},
        binary)
    message = decode_error(body, header_length, mixed)
    assert "tensor 'state': BYTES element 1 claims 50 bytes, past the end" in message


def test_binary_bytes_not_utf8(mixed: Signature) -> None:
    body, header_length = request(tensor("state", np.array([b"\xff\xfe"], dtype=object), True))
    assert "tensor 'state': BYTES element 0 is not valid UTF-8" in decode_error(body, header_length, mixed)


def test_binary_without_header_length(mixed: Signature) -> None:
    body, header_length = request(tensor("income", np.array([1.5]), True))
    message = decode_error(body, None, mixed)
    assert "not valid JSON" in message
    assert "Inference-Header-Content-Length must give the JSON's length" in message
    message = decode_error(body[:header_length], None, mixed)  # the JSON alone, its binary data missing
    assert "tensor 'income' has binary_data_size, but the request gave no header length" in message


def test_header_length_beyond_the_body(mixed: Signature) -> None:
    body, header_length = request(tensor("income", np.array([1.5]), True))
    assert header_length is not None
    message = decode_error(body, len(body) + 10, mixed)
    assert f"Inference-Header-Content-Length is {len(body) + 10}, beyond the body of {len(body)} bytes" in message


def test_more_rows_than_max_rows(mixed: Signature) -> None:
    body, header_length = request(tensor("income", np.arange(5, dtype=np.float64), True))
    message = decode_error(body, header_length, mixed, max_rows=4)
    assert "tensor 'income' has 5 rows, more than the limit of 4" in message


def test_tensors_with_different_row_counts(mixed: Signature) -> None:
    body, header_length = request(tensor("income", np.arange(3, dtype=np.float64), True),
                                  tensor("age", np.arange(2), False))
    assert "different row counts: {'income': 3, 'age': 2}" in decode_error(body, header_length, mixed)


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"inputs": [', "request is not valid JSON"),
    (b"\xff\xfe", "request is not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"inputs": []}', "non-empty list of input tensors"),
    (b'{"id": 5, "inputs": []}', "'id' must be a string"),
])
def test_malformed_json(mixed: Signature, body: bytes, expected: str) -> None:
    assert expected in decode_error(body, None, mixed)


def test_malformed_tensor_headers(mixed: Signature) -> None:
    cases = [
        ({"name": "age", "shape": [-1], "datatype": "INT64", "data": [1]}, "'shape' must be a list of non-negative"),
        ({"name": "age", "shape": [1], "datatype": "INT64"}, "tensor 'age': has no 'data'"),
        ({"name": "age", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}, "must be [n] or [n, 1]"),
        ({"shape": [1], "datatype": "INT64", "data": [1]}, "input 0 has no 'name'"),
        ({"name": "age", "shape": [1], "datatype": "INT64", "data": [1],
          "parameters": {"shared_memory_region": "r"}}, "shared memory ('shared_memory_region') is not supported"),
    ]
    for tensor_doc, expected in cases:
        body, header_length = raw_request({"inputs": [tensor_doc]})
        assert expected in decode_error(body, header_length, mixed)


def test_tensor_given_twice(mixed: Signature) -> None:
    body, header_length = request(tensor("age", np.array([1]), True), tensor("age", np.array([2]), False))
    assert "tensor 'age' is given twice" in decode_error(body, header_length, mixed)


def test_matrix_needs_all_numeric_inputs(mixed: Signature) -> None:
    body, header_length = request(tensor("input-0", np.zeros((2, 5), dtype=np.float32), True))
    message = decode_error(body, header_length, mixed)
    assert "tensor 'input-0': a single matrix is accepted only when every input is numeric" in message
    assert "['state', 'joined']" in message


def test_matrix_shape_and_datatype(numeric: Signature) -> None:
    body, header_length = request(tensor("input-0", np.zeros((2, 3), dtype=np.float32), True))
    assert "shape [2, 3] does not fit the single matrix; it must be [n, 4]" in decode_error(
        body, header_length, numeric)
    body, header_length = request(tensor("input-0", np.array([["a"] * 4], dtype=object), True))
    assert "datatype BYTES is not allowed for the single matrix" in decode_error(body, header_length, numeric)
    body, header_length = request(tensor("input-0", np.zeros((1, 4)), True), tensor("a", np.zeros(1), True))
    assert "cannot be combined with other tensors ['a']" in decode_error(body, header_length, numeric)


def test_unknown_or_unsupported_outputs(mixed: Signature) -> None:
    body, header_length = request(tensor("age", np.array([1]), False),
                                  outputs=[triton.InferRequestedOutput("proba")])
    assert "unknown output 'proba'; the model's outputs are ['predict', 'predict_proba']" in decode_error(
        body, header_length, mixed)
    body, header_length = request(tensor("age", np.array([1]), False),
                                  outputs=[triton.InferRequestedOutput("predict", class_count=2)])
    assert "classification extension is not supported" in decode_error(body, header_length, mixed)
