"""Parity per family: the bundle's runner gives the registered model's outputs, checked here independently of
the export's own proof (other rows, another seed), and the export refuses when outputs differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shipml
from shipml.errors import ConflictError
from shipml.export import TOLERANCE, ParityError, export_onnx
from shipml.export.convert import convert
from shipml.export.parity import drawn_records, golden_records, prove, registered_outputs
from shipml.export.runner import Bundle, Predictor
from tests.export.models import FAMILIES


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_bundle_answers_as_the_registered_model(name: str, family_registry: shipml.Registry,
                                                    bundles: dict[str, Path]) -> None:
    model = family_registry.load(name)
    bundle = Bundle(bundles[name])
    records = golden_records(model) + drawn_records(model.signature.inputs, rows=1500, seed=7)
    labels, proba = registered_outputs(model, records)
    got = bundle.predict(records)
    predictions = [row["prediction"] for row in got]
    if model.signature.outputs.task == "regression":
        tolerance = bundle.golden["tolerance"]
        ref = labels.astype(float)
        assert tolerance["value_scale"] == pytest.approx(max(abs(v) for v in bundle.golden["expected"]["predictions"]))
        allowed = TOLERANCE["value_atol"] + TOLERANCE["value_rtol"] * np.maximum(np.abs(ref), tolerance["value_scale"])
        assert (np.abs(np.asarray(predictions) - ref) <= allowed).all()
    else:
        assert predictions == labels.tolist()
        assert proba is not None
        classes = [str(c) for c in model.classes or []]
        exported = np.array([[row["probabilities"][c] for c in classes] for row in got])
        np.testing.assert_allclose(exported, proba, rtol=0, atol=TOLERANCE["proba_atol"])
    # every category and every null the signature allows were among the rows compared
    for column in model.signature.inputs:
        seen = {r[column.name] for r in records}
        if column.categories is not None:
            assert set(column.categories) <= seen
        if column.nullable:
            assert None in seen


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_bundle_states_the_signature_twice(name: str, family_registry: shipml.Registry,
                                               bundles: dict[str, Path]) -> None:
    import onnx

    model = family_registry.load(name)
    schema = json.loads((bundles[name] / "signature.json").read_text())
    assert schema["required"] == model.signature.names and schema["additionalProperties"] is False
    onnx_model = onnx.load(str(bundles[name] / "model.onnx"))
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert [c["name"] for c in json.loads(meta["shipml.signature"])] == model.signature.names
    assert meta["shipml.source"] == model.ref
    assert all(i.doc_string for i in onnx_model.graph.input)
    manifest = json.loads((bundles[name] / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "signature.json", "golden.json", "predict.py"}
    assert manifest["parity"]["rows_differing"] == 0 and manifest["parity"]["drawn_rows"] == 1000


def test_an_export_that_differs_is_refused_with_the_rows(family_registry: shipml.Registry) -> None:
    """The ONNX model of another version stands in for a converter that got it wrong."""
    model = family_registry.load("sk_logistic_mixed")
    other = shipml.save_model(FAMILIES["sk_forest_mixed"]()[0], "sk_logistic_mixed",
                              sample=FAMILIES["sk_forest_mixed"]()[1], registry=family_registry)
    wrong = convert(family_registry.load(other.ref))
    predictor = Predictor(wrong.model.SerializeToString(), wrong.spec)
    with pytest.raises(ParityError, match=r"differs from it on \d+ of 3100 rows") as caught:
        prove(model, predictor, rows=3000)
    rows = caught.value.rows
    assert 0 < len(rows) <= 10
    first = rows[0]
    assert set(first) == {"row", "source", "record", "registered", "exported"}
    assert set(first["record"]) == set(model.signature.names)
    assert first["registered"] != first["exported"]


def test_the_destination_must_be_new_or_empty(family_registry: shipml.Registry, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not an empty directory"):
        export_onnx(family_registry.load("lgb_binary"), tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    result = export_onnx(family_registry.load("lgb_binary"), tmp_path / "empty", rows=200)
    assert result.directory == tmp_path / "empty" and (tmp_path / "empty" / "predict.py").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work directory left
