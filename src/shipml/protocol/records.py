"""A numeric model's records read straight from a request body.

The body of most prediction requests is ``{"instances": [{name: number, ...}, ...]}`` with exactly the model's
input names. Parsed as JSON, each record is a dict, then a tuple of its values in the signature's order
(``columns.record_rows``): two Python objects per record and a hash lookup per value, ~1.4x the parse itself.
A :class:`RecordsDecoder`, made once per model from its input names, has msgspec decode such a body into one
typed row per record instead, and gives the rows as tuples of floats: half the time for 100 records, and still
less for one.

It reads only bodies that are plainly that: one top-level key, ``instances``; every record an object with every
input name once and no other; every value a JSON number within a double's range. Anything else - other keys,
value rows, columns, nulls, booleans, strings, NaN literals, malformed JSON - gives None, and the caller reads
the body the general way (``json_body.loads``), which accepts or refuses it and names every problem as before.
What it accepts, the general way accepts too and reads as the same numbers (tests/unit/test_records_decoder.py
holds the two to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["DecodedRecords", "RecordsDecoder"]


class DecodedRecords:
    """Records that held exactly ``names``, each value a number: one tuple of floats per record, in ``names``
    order. A runner whose inputs are ``names`` takes the rows as they are; any other gets :meth:`records`."""

    __slots__ = ("names", "rows")

    def __init__(self, names: tuple[str, ...], rows: list[tuple[float, ...]]) -> None:
        self.names = names
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict[str, float]]:
        """The records as the JSON parser would have given them."""
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in self.rows]


class RecordsDecoder:
    """Decodes ``{"instances": [records]}`` for a model whose inputs are ``names`` (all numeric)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        fields = [f"c{i}" for i in range(len(self.names))]  # any input name, identifier or not, via rename
        row = msgspec.defstruct("Row", [(field, float) for field in fields], rename=dict(zip(fields, self.names,
                                strict=True)), forbid_unknown_fields=True, gc=False)
        body = msgspec.defstruct("Body", [("instances", list[row])],  # type: ignore[valid-type]
                                 forbid_unknown_fields=True, gc=False)
        self._decode = msgspec.json.Decoder(body).decode
        self._astuple = msgspec.structs.astuple

    def decode(self, body: bytes) -> DecodedRecords | None:
        """The body's records, or None when the body is not plainly records of this model's inputs."""
        try:
            decoded: Any = self._decode(body)
        except (msgspec.DecodeError, RecursionError, MemoryError):  # ValidationError is a DecodeError
            return None
        return DecodedRecords(self.names, list(map(self._astuple, decoded.instances)))
