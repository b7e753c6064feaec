"""Open Inference Protocol v2 (KServe v2, Triton HTTP/REST) messages, with Triton's binary tensor data
extension.

Pure codec: bytes in, numpy out and back. The server reads the ``Inference-Header-Content-Length`` header and
passes it here as ``header_length``; this module knows nothing else about HTTP.

A model's inputs are its signature columns. A client sends either one tensor per column (shape ``[n]`` or
``[n, 1]``, named after the column) or, when every column is numeric, a single ``[n, k]`` tensor named
``input-0`` whose columns are in signature order. The outputs are ``predict`` (labels or values) and, for a
classifier with probabilities, ``predict_proba`` (``[n, n_classes]``).

Wire facts (see ``v2_tensor`` for tensor data): a request is a JSON object, optionally followed by the binary
data of the inputs that carry a ``binary_data_size`` parameter, concatenated in the order those inputs are listed;
``header_length`` is then the byte length of the JSON object. An output is sent as binary when its requested
output says ``"binary_data": true``, or, when it does not say, when the request's parameters say
``"binary_data_output": true`` (tritonclient sets this when no outputs are named).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shipml.errors import ProtocolError
from shipml.package.signature import ColumnSpec, OutputSpec, Signature
from shipml.protocol import json_body, v2_tensor
from shipml.protocol.v2_tensor import DATATYPES, FLOAT_DATATYPES, INTEGER_DATATYPES

__all__ = [
    "BINARY_EXTENSION",
    "MATRIX_INPUT",
    "InferRequest",
    "RequestedOutput",
    "decode_infer_request",
    "encode_error",
    "encode_infer_response",
    "model_metadata",
    "output_names",
    "server_metadata",
]

BINARY_EXTENSION = "binary_tensor_data"
#: The name of the single-matrix input, accepted when every signature column is numeric.
MATRIX_INPUT = "input-0"
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

#: The datatype each column kind is described with in model metadata.
COLUMN_DATATYPE = {"int": "INT64", "float": "FP64", "bool": "BOOL", "string": "BYTES", "datetime": "BYTES"}
_NUMBERS = INTEGER_DATATYPES | FLOAT_DATATYPES
#: The datatypes a per-column tensor may have, by column kind. Validation checks the values themselves later
#: (an int column sent as FP64 must still hold whole numbers).
_ALLOWED = {"int": _NUMBERS, "float": _NUMBERS, "bool": frozenset({"BOOL"}), "string": frozenset({"BYTES"}),
            "datetime": frozenset({"BYTES"})}
_MATRIX_ALLOWED = _NUMBERS
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request.

    ``columns`` is a mapping of column name to 1-D array (one tensor per column, in signature order, only the
    columns sent) or a 2-D array (the single-matrix form, columns in signature order); either is what
    ``shipml.package.validation.check`` accepts.
    """

    id: str | None
    parameters: dict[str, Any]
    columns: dict[str, np.ndarray] | np.ndarray
    n_rows: int
    outputs: tuple[RequestedOutput, ...] = field(default_factory=tuple)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def binary_outputs(self) -> frozenset[str]:
        return frozenset(o.name for o in self.outputs if o.binary)


# -- metadata ------------------------------------------------------------------------------------------------

def server_metadata(version: str, extensions: list[str]) -> dict[str, Any]:
    """The server metadata object; the binary tensor data extension is always listed."""
    listed = list(dict.fromkeys([*extensions, BINARY_EXTENSION]))
    return {"name": "shipml", "version": version, "extensions": listed}


def model_metadata(name: str, versions: list[str], platform: str, signature: Signature) -> dict[str, Any]:
    """The model metadata object: one input per signature column; outputs ``predict`` and ``predict_proba``.

    When every column is numeric, ``parameters`` says that a single ``[-1, k]`` FP32/FP64 tensor named
    ``input-0`` (columns in the order of ``inputs``) is accepted too.
    """
    meta: dict[str, Any] = {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [{"name": c.name, "datatype": COLUMN_DATATYPE[c.dtype], "shape": [-1]}
                   for c in signature.inputs],
        "outputs": _output_metadata(signature.outputs),
    }
    if signature.all_numeric:
        meta["parameters"] = {
            "matrix_input": MATRIX_INPUT,
            "matrix_input_shape": f"[-1, {len(signature.inputs)}]",
            "matrix_input_datatypes": "FP32,FP64",
        }
    return meta


def output_names(outputs: OutputSpec) -> list[str]:
    """The outputs a model with these outputs produces."""
    return [PREDICT, PREDICT_PROBA] if outputs.probabilities else [PREDICT]


def _output_metadata(outputs: OutputSpec) -> list[dict[str, Any]]:
    described = [{"name": PREDICT, "datatype": _label_datatype(outputs), "shape": [-1, *outputs.shape]}]
    if outputs.probabilities:
        n_classes = len(outputs.classes) if outputs.classes is not None else -1
        described.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, n_classes]})
    return described


def _label_datatype(outputs: OutputSpec) -> str:
    if outputs.task == "regression":
        return "FP64"
    classes = outputs.classes
    if outputs.task == "classification" and classes:
        if all(isinstance(c, bool) for c in classes):
            return "BOOL"
        if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            return "INT64"
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
            return "FP64"
        return "BYTES"
    kind = np.dtype(outputs.prediction_dtype).kind if _is_numpy_dtype(outputs.prediction_dtype) else "O"
    return {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64"}.get(kind, "BYTES")


def _is_numpy_dtype(name: str) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


# -- requests ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Input:
    """One input tensor's header, checked, before its data is decoded."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    doc: dict[str, Any]
    binary_size: int | None


def decode_infer_request(body: bytes, header_length: int | None, signature: Signature, *,
                         max_rows: int | None = None) -> InferRequest:
    """Decode an inference request body (JSON, optionally followed by binary tensor data).

    Raises :class:`ProtocolError` naming the tensor and the problem. Whether the values fit the signature
    (ranges, categories, nulls, missing columns) is left to validation.
    """
    view = memoryview(body)
    header, binary = _split_body(view, header_length)
    doc = _parse_json(header, header_length)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"request 'id' must be a string, got {type(request_id).__name__}")
    parameters = _parameters(doc.get("parameters"), "the request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("request must have 'inputs': a non-empty list of input tensors")
    inputs = [_read_input(i, raw) for i, raw in enumerate(raw_inputs)]
    matrix = _check_names(inputs, signature)
    n_rows = _check_shapes(inputs, signature, matrix, max_rows)
    arrays = _decode_data(inputs, binary, header_length)
    outputs = _requested_outputs(doc.get("outputs"), parameters, signature.outputs)
    columns: dict[str, np.ndarray] | np.ndarray = (
        arrays[MATRIX_INPUT] if matrix else {n: arrays[n].reshape(-1) for n in signature.names if n in arrays})
    return InferRequest(id=request_id, parameters=parameters, columns=columns, n_rows=n_rows, outputs=outputs)


def _split_body(view: memoryview, header_length: int | None) -> tuple[memoryview, memoryview]:
    if header_length is None:
        return view, view[len(view):]
    if header_length < 0:
        raise ProtocolError(f"Inference-Header-Content-Length must not be negative, got {header_length}")
    if header_length > len(view):
        raise ProtocolError(
            f"Inference-Header-Content-Length is {header_length}, beyond the body of {len(view)} bytes")
    return view[:header_length], view[header_length:]


def _parse_json(header: memoryview, header_length: int | None) -> dict[str, Any]:
    try:
        doc = json_body.loads(header)
    except json_body.JSONBodyError as e:
        # the hint only where it is true: a whole JSON object was read and more bytes followed it
        hint = (" (when binary tensor data follows the JSON, Inference-Header-Content-Length must give the "
                "JSON's length)") if header_length is None and e.trailing else ""
        raise ProtocolError(f"request is not valid JSON: {e}{hint}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("request must be a JSON object with 'inputs'")
    return doc


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"'parameters' of {where} must be an object")
    for key in _UNSUPPORTED_PARAMETERS:
        if key in raw:
            raise ProtocolError(f"{where}: shared memory ({key!r}) is not supported by this server")
    return raw


def _read_input(index: int, raw: Any) -> _Input:
    if not isinstance(raw, dict):
        raise ProtocolError(f"input {index} must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"input {index} has no 'name'")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"tensor {name!r}: datatype {datatype!r} is not supported; use one of {sorted(DATATYPES)}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(
            f"tensor {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    parameters = _parameters(raw.get("parameters"), f"tensor {name!r}")
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ProtocolError(f"tensor {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
    if size is not None and "data" in raw:
        raise ProtocolError(f"tensor {name!r}: has both 'data' and binary_data_size; send one")
    if size is None and "data" not in raw:
        raise ProtocolError(f"tensor {name!r}: has no 'data' (and no binary_data_size)")
    return _Input(name, datatype, tuple(shape), raw, size)


def _check_names(inputs: list[_Input], signature: Signature) -> bool:
    """Whether the request uses the single-matrix form; unknown and duplicate names are refused."""
    names = signature.names
    known = set(names)
    seen: set[str] = set()
    for t in inputs:
        if t.name in seen:
            raise ProtocolError(f"tensor {t.name!r} is given twice")
        seen.add(t.name)
    matrix = MATRIX_INPUT in seen and MATRIX_INPUT not in known
    if matrix and len(inputs) > 1:
        raise ProtocolError(
            f"tensor {MATRIX_INPUT!r} (the single-matrix form) cannot be combined with other tensors "
            f"{sorted(seen - {MATRIX_INPUT})}; send either one matrix or one tensor per column")
    if matrix and not signature.all_numeric:
        text = [c.name for c in signature.inputs if not c.numeric]
        raise ProtocolError(
            f"tensor {MATRIX_INPUT!r}: a single matrix is accepted only when every input is numeric, and "
            f"{_listing(text)} are not; send one tensor per column: {_listing(names)}")
    if not matrix:
        for t in inputs:
            if t.name not in known:
                also = f" (or a single {MATRIX_INPUT!r} matrix)" if signature.all_numeric else ""
                raise ProtocolError(f"unknown tensor {t.name!r}; the model's inputs are {_listing(names)}{also}")
    return matrix


def _listing(names: list[str], limit: int = 20) -> str:
    """Names for an error message, the first ``limit`` of them (a model may have thousands of inputs)."""
    if len(names) <= limit:
        return str(names)
    return f"{str(names[:limit])[:-1]}, ... ({len(names)} in all)]"


def _check_shapes(inputs: list[_Input], signature: Signature, matrix: bool, max_rows: int | None) -> int:
    """The number of rows, after checking every tensor's datatype and shape against the signature."""
    rows: dict[str, int] = {}
    specs = {c.name: c for c in signature.inputs}
    for t in inputs:
        if matrix:
            _check_matrix(t, len(specs))
        else:
            _check_column(t, specs[t.name])
        rows[t.name] = t.shape[0]
        if max_rows is not None and t.shape[0] > max_rows:
            raise ProtocolError(f"tensor {t.name!r} has {t.shape[0]} rows, more than the limit of {max_rows}")
    if len(set(rows.values())) > 1:
        raise ProtocolError(f"tensors have different row counts: {rows}")
    return next(iter(rows.values()))


def _check_matrix(t: _Input, k: int) -> None:
    if t.datatype not in _MATRIX_ALLOWED:
        raise ProtocolError(
            f"tensor {t.name!r}: datatype {t.datatype} is not allowed for the single matrix; "
            f"send FP32 or FP64")
    if len(t.shape) != 2 or t.shape[1] != k:
        raise ProtocolError(
            f"tensor {t.name!r}: shape {list(t.shape)} does not fit the single matrix; it must be [n, {k}] "
            f"(one column per model input)")


def _check_column(t: _Input, spec: ColumnSpec) -> None:
    allowed = _ALLOWED[spec.dtype]
    if t.datatype not in allowed:
        raise ProtocolError(
            f"tensor {t.name!r}: datatype {t.datatype} is not allowed for a {spec.dtype} column; send "
            f"{COLUMN_DATATYPE[spec.dtype]}")
    if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
        raise ProtocolError(
            f"tensor {t.name!r}: shape {list(t.shape)} is not a column; it must be [n] or [n, 1]")


def _decode_data(inputs: list[_Input], binary: memoryview,
                 header_length: int | None) -> dict[str, np.ndarray]:
    sized = [t for t in inputs if t.binary_size is not None]
    if sized and header_length is None:
        raise ProtocolError(
            f"tensor {sized[0].name!r} has binary_data_size, but the request gave no header length "
            f"(Inference-Header-Content-Length)")
    total = sum(t.binary_size or 0 for t in sized)
    if total != len(binary):
        per_tensor = {t.name: t.binary_size for t in sized}
        raise ProtocolError(
            f"binary data sizes {per_tensor} add up to {total} bytes, but {len(binary)} bytes follow the "
            f"JSON header")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for t in inputs:
        if t.binary_size is None:
            arrays[t.name] = v2_tensor.from_json(t.name, t.datatype, t.shape, t.doc["data"])
        else:
            chunk = binary[offset:offset + t.binary_size]
            offset += t.binary_size
            arrays[t.name] = v2_tensor.from_binary(t.name, t.datatype, t.shape, chunk)
    return arrays


def _requested_outputs(raw: Any, parameters: Mapping[str, Any],
                       outputs: OutputSpec) -> tuple[RequestedOutput, ...]:
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise ProtocolError(f"parameter 'binary_data_output' must be true or false, got {default_binary!r}")
    available = output_names(outputs)
    if raw is None or raw == []:
        return tuple(RequestedOutput(n, default_binary) for n in available)
    if not isinstance(raw, list):
        raise ProtocolError("'outputs' must be a list of requested outputs")
    requested: dict[str, RequestedOutput] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"requested output {i} must be an object with a 'name'")
        name = item["name"]
        if name not in available:
            raise ProtocolError(f"unknown output {name!r}; the model's outputs are {available}")
        if name in requested:
            raise ProtocolError(f"output {name!r} is requested twice")
        params = _parameters(item.get("parameters"), f"output {name!r}")
        if params.get("classification"):
            raise ProtocolError(f"output {name!r}: the classification extension is not supported")
        binary = params.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output {name!r}: binary_data must be true or false, got {binary!r}")
        requested[name] = RequestedOutput(name, binary)
    return tuple(requested.values())


# -- responses -----------------------------------------------------------------------------------------------

def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: dict[str, np.ndarray],
                          binary: Set[str] = frozenset(),
                          parameters: dict[str, Any] | None = None) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when any output is sent as binary (else None).

    Outputs named in ``binary`` follow the JSON object as binary data, in the order of ``outputs``; the server
    sends the returned length as Inference-Header-Content-Length. String labels are sent as BYTES.
    """
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        datatype, tensor = v2_tensor.as_output(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
        if name in binary:
            blob = v2_tensor.to_binary(datatype, tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = v2_tensor.to_json(datatype, tensor)
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = described
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def encode_error(message: str) -> bytes:
    """The error object of the protocol: ``{"error": message}``."""
    return orjson.dumps({"error": message})
