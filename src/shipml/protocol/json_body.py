"""Reading a request body as JSON: the one parse function of every route that takes JSON.

JSON has no NaN nor infinities, but Python's ``json`` writes them as the literals ``NaN``, ``Infinity`` and
``-Infinity`` by default, and so do the clients built on it (``requests.post(json=...)``, tritonclient in JSON
mode). They are read as those float values: NaN then means a missing value, like ``null``, and an infinity is a
float like any other (the range checks apply).

orjson reads every body first; only a body it refuses that holds one of those literals is read again, by the
standard library, with its numbers held to what orjson gives (an integer beyond 64 bits as a float, a number
beyond a double's range refused) and its strings to valid Unicode: what is accepted is exactly what orjson
accepts, plus the three literals. A valid body costs nothing more.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

__all__ = ["JSONBodyError", "loads"]

_LITERALS = (b"NaN", b"Infinity")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_INT_RANGE = range(-(2**63), 2**64)


class JSONBodyError(ValueError):
    """A body that is not JSON: ``msg`` and ``pos`` say what is wrong and where; ``trailing`` is true when
    a whole JSON document was read and more followed it (as when binary data follows the JSON)."""

    def __init__(self, msg: str, pos: int | None = None, trailing: bool = False) -> None:
        super().__init__(msg if pos is None else f"{msg} at position {pos}")
        self.msg = msg
        self.pos = pos
        self.trailing = trailing


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """The JSON value of ``body``; raises :class:`JSONBodyError` when it is not JSON.

    No exception is kept in a local variable: one raised from here would hold this frame, and the frame it, a
    reference cycle per refused body that only the (rarely run) cyclic collector frees."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg, pos = exc.msg, exc.pos
    data = body.encode() if isinstance(body, str) else bytes(body)
    if not any(literal in data for literal in _LITERALS):
        raise JSONBodyError(msg, pos, _document_then_more(data))
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:  # the first thing wrong once the literals are allowed
        raise JSONBodyError(exc.msg, exc.pos, _document_then_more(data)) from None
    except _Refused as exc:
        raise JSONBodyError(str(exc)) from None
    except (ValueError, RecursionError):  # not UTF-8, an integer of thousands of digits, nested too deep
        raise JSONBodyError(msg, pos, _document_then_more(data)) from None
    if _SURROGATE_ESCAPE.search(text) and not _valid_text(value):
        raise JSONBodyError("a string holds a lone surrogate (\\ud800-\\udfff), which is not valid Unicode")
    return value


def _document_then_more(data: bytes) -> bool:
    """Whether ``data`` starts with a whole JSON document and holds more after it (binary data, say). Read on
    the error path only."""
    text = data.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip())
    try:
        _, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return False
    return bool(text[end:].strip())


class _Refused(ValueError):
    """A number the standard library reads but orjson refuses."""


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"number {text[:20]} is infinity when parsed as double")
    return value


def _int(text: str) -> int | float:
    value = int(text)
    return value if value in _INT_RANGE else _float(text)  # beyond 64 bits, orjson gives a float


_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_CONSTANTS.__getitem__)


def _valid_text(value: Any) -> bool:
    """Whether every string in ``value`` (keys included) is valid Unicode: no lone surrogate."""
    stack = [value]
    try:
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                item.encode("utf-8")
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
    except UnicodeEncodeError:
        return False
    return True
