"""Tensor data of the Open Inference Protocol v2: datatypes, and tensor contents as JSON or as binary.

Wire facts this module relies on (KServe Open Inference Protocol REST spec; Triton's binary tensor data
extension, ``docs/protocol/extension_binary_data.md``; tritonclient's ``InferInput.set_data_from_numpy`` and
``InferResult.as_numpy``):

- JSON ``data`` is the tensor in row-major order, flat or as nested lists.
- Binary data is little-endian, row-major, without padding, in the native size of the datatype; a BOOL element
  is one byte (1 or 0); a BYTES element is a 4-byte little-endian unsigned length followed by that many bytes.

Decoding never loops over elements in Python except for BYTES, whose elements have to be cut out one by one.
Arrays decoded from binary data are read-only views of the request body (``np.frombuffer``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from shipml.errors import ProtocolError

#: Every datatype with a fixed element size, as a little-endian numpy dtype.
FIXED_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
INTEGER_DATATYPES = frozenset(k for k, v in FIXED_DTYPES.items() if v.kind in "iu")
FLOAT_DATATYPES = frozenset(k for k, v in FIXED_DTYPES.items() if v.kind == "f")
DATATYPES = frozenset(FIXED_DTYPES) | {"BYTES"}

_LENGTH = struct.Struct("<I")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


# -- decoding ------------------------------------------------------------------------------------------------

def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """The tensor ``name`` from its JSON ``data`` (flat or nested, row-major), with the given shape."""
    if datatype == "BYTES":
        return _bytes_from_json(name, shape, data)
    target = FIXED_DTYPES[datatype]
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"tensor {name!r}: data is not a regular (non-ragged) list of values") from e
    _check_size(name, shape, array.size)
    if array.size == 0:
        return np.empty(shape, dtype=target.newbyteorder("="))
    kind = array.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise ProtocolError(f"tensor {name!r}: BOOL data must be true/false values")
    elif target.kind in "iu":
        array = _integers(name, datatype, data, array)
    elif kind == "O":
        # A null in floating-point data stands for a missing value, as NaN does (see protocol/json_body.py).
        try:
            array = np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"tensor {name!r}: {datatype} data must be numbers (or null)") from e
    elif kind not in "iuf":
        raise ProtocolError(f"tensor {name!r}: {datatype} data must be numbers, got {_describe(array)}")
    return array.astype(target.newbyteorder("="), copy=False).reshape(shape)


def from_binary(name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview) -> np.ndarray:
    """The tensor ``name`` from its binary data (its own slice of the request body)."""
    if datatype == "BYTES":
        return _decode_utf8(name, split_bytes(name, chunk, element_count(shape))).reshape(shape)
    target = FIXED_DTYPES[datatype]
    expected = element_count(shape) * target.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            f"tensor {name!r}: binary_data_size is {len(chunk)} bytes, but shape {list(shape)} of {datatype} "
            f"needs {expected}")
    if target.kind == "b":
        flags: np.ndarray = np.frombuffer(chunk, dtype=np.uint8) != 0
        return flags.reshape(shape)
    return np.frombuffer(chunk, dtype=target).reshape(shape)


def split_bytes(name: str, chunk: memoryview, count: int) -> list[bytes]:
    """The ``count`` elements of a binary BYTES tensor (each: a 4-byte little-endian length, the bytes)."""
    size = len(chunk)
    if count * _LENGTH.size > size:
        raise ProtocolError(
            f"tensor {name!r}: binary_data_size is {size} bytes, too small for {count} BYTES elements "
            f"(each needs at least {_LENGTH.size} bytes for its length)")
    items: list[bytes] = []
    offset = 0
    for i in range(count):
        if offset + _LENGTH.size > size:
            raise ProtocolError(f"tensor {name!r}: binary data ends before BYTES element {i}")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += _LENGTH.size
        if offset + length > size:
            raise ProtocolError(
                f"tensor {name!r}: BYTES element {i} claims {length} bytes, past the end of the tensor's "
                f"binary data ({size} bytes)")
        items.append(bytes(chunk[offset:offset + length]))
        offset += length
    if offset != size:
        raise ProtocolError(
            f"tensor {name!r}: binary_data_size is {size} bytes, but its {count} BYTES elements use {offset}")
    return items


def _integers(name: str, datatype: str, data: Any, inferred: np.ndarray) -> np.ndarray:
    """JSON data for an integer tensor, exactly: no fraction, nothing outside the datatype's range."""
    target = FIXED_DTYPES[datatype]
    info = np.iinfo(target)
    out_of_range = f"tensor {name!r}: a value is outside the range of {datatype} [{info.min}, {info.max}]"
    kind = inferred.dtype.kind
    if kind in "iu":
        if inferred.min() < info.min or inferred.max() > info.max:
            raise ProtocolError(out_of_range)
        return inferred
    if kind != "f":
        raise ProtocolError(f"tensor {name!r}: {datatype} data must be integers, got {_describe(inferred)}")
    if not np.isfinite(inferred).all():
        raise ProtocolError(f"tensor {name!r}: {datatype} data must be integers, got NaN or an infinity (a"
                            f" missing value needs a floating-point tensor)")
    # numpy infers float64 for floats, and also for int64 and uint64 values mixed (above 2**63): convert the
    # parsed values themselves, so large integers stay exact, then refuse any fraction.
    try:
        exact = np.asarray(data, dtype=target.newbyteorder("="))
    except OverflowError as e:
        raise ProtocolError(out_of_range) from e
    if not np.array_equal(exact, inferred):
        raise ProtocolError(f"tensor {name!r}: {datatype} data must be integers, got numbers with a fraction")
    return exact


def _bytes_from_json(name: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list):
        raise ProtocolError(f"tensor {name!r}: BYTES data must be a list of strings")
    try:
        array = np.asarray(data, dtype=object)
    except ValueError as e:
        raise ProtocolError(f"tensor {name!r}: data is not a regular (non-ragged) list of strings") from e
    _check_size(name, shape, array.size)
    flat = array.reshape(-1)
    for i, value in enumerate(flat):
        if not isinstance(value, str):
            raise ProtocolError(f"tensor {name!r}: BYTES element {i} is not a string: {_show(value)}")
    return flat.reshape(shape)


def _decode_utf8(name: str, items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, raw in enumerate(items):
        try:
            out[i] = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"tensor {name!r}: BYTES element {i} is not valid UTF-8 text") from e
    return out


def _check_size(name: str, shape: tuple[int, ...], size: int) -> None:
    expected = element_count(shape)
    if size != expected:
        raise ProtocolError(
            f"tensor {name!r}: shape {list(shape)} has {expected} elements, but data has {size}")


def _describe(array: np.ndarray) -> str:
    return {"b": "booleans", "f": "numbers with a fraction", "U": "strings", "O": "mixed or null values"}.get(
        array.dtype.kind, str(array.dtype))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- encoding ------------------------------------------------------------------------------------------------

def as_output(array: np.ndarray) -> tuple[str, np.ndarray]:
    """The datatype an output is sent as, and the array in a form that datatype can carry.

    Numbers and booleans keep their width; strings, bytes and datetimes become BYTES (an object array of
    ``str`` or ``bytes``); an object array holding only numbers becomes the numeric tensor numpy infers.
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL", array
    if kind in "iuf":
        if kind == "f" and array.dtype.itemsize > 8:
            array = array.astype(np.float64)
        for datatype, dtype in FIXED_DTYPES.items():
            if dtype.kind == kind and dtype.itemsize == array.dtype.itemsize:
                return datatype, array
    if kind in "US":
        return "BYTES", array.astype(object)
    if kind == "M":
        return "BYTES", np.datetime_as_string(array).astype(object)
    if kind == "O" and array.size:
        flat = array.reshape(-1).tolist()
        if all(isinstance(v, str | bytes) for v in flat):
            return "BYTES", array
        inferred = np.asarray(flat)
        if inferred.dtype.kind in "biuf":
            return as_output(inferred.reshape(array.shape))
    text = np.array([str(v) for v in array.reshape(-1).tolist()], dtype=object)
    return "BYTES", text.reshape(array.shape)


def to_json(datatype: str, array: np.ndarray) -> Any:
    """The ``data`` of an output in JSON: a flat row-major list (a numpy array orjson serialises natively)."""
    if datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
                for v in array.reshape(-1).tolist()]
    return np.ascontiguousarray(array.reshape(-1), dtype=array.dtype.newbyteorder("="))


def to_binary(datatype: str, array: np.ndarray) -> bytes:
    """The binary data of an output: little-endian, row-major; BYTES elements length-prefixed."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in _encode_items(array))
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=FIXED_DTYPES[datatype]).tobytes()


def _encode_items(array: np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1).tolist()]
