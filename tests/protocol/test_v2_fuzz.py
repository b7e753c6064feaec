"""Any JSON a client puts in a v2 tensor (issue #12, item 1, the v2 side): the codec decodes it into 1-D columns
or refuses it with a ProtocolError (400) naming the tensor - never another exception. Decoding is per request,
before batching, so a refused tensor never reaches a batch."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.errors import ProtocolError
from shipml.package.signature import ColumnSpec, OutputSpec, Signature
from shipml.protocol import v2
from tests.json_strategies import json_values

SIGNATURE = Signature(inputs=[ColumnSpec(name="a", dtype="float", pandas_dtype="float64", nullable=True),
                              ColumnSpec(name="n", dtype="int", pandas_dtype="int64"),
                              ColumnSpec(name="s", dtype="string", pandas_dtype="object"),
                              ColumnSpec(name="b", dtype="bool", pandas_dtype="bool")],
                      input_kind="dataframe", outputs=OutputSpec(task="regression"))

tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["a", "n", "s", "b", "input-0"]),
    "datatype": st.sampled_from(sorted(v2.DATATYPES)),
    "shape": st.lists(st.integers(0, 3), max_size=3),
    "data": json_values,
})


@settings(max_examples=500, deadline=None)
@given(tensors=st.lists(tensor, min_size=1, max_size=3))
def test_any_json_tensor_data_decodes_to_columns_or_a_400(tensors: list[dict[str, Any]]) -> None:
    body = json.dumps({"inputs": tensors}).encode()
    try:
        decoded = v2.decode_infer_request(body, None, SIGNATURE)
    except ProtocolError:  # status 400
        return
    columns = decoded.columns  # the single-matrix form is refused: not every input is numeric
    assert isinstance(columns, dict)
    assert all(v.ndim == 1 and len(v) == decoded.n_rows for v in columns.values())
