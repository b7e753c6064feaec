"""``--quantize``: the float export must pass parity; the quantised one's parity is measured and reported, and the
bundle's golden sample is what the quantised model gives, so its runner checks the model it ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from shipml.errors import UnsupportedModelError
from shipml.export import export_onnx
from shipml.export.runner import Bundle


def test_int8_reports_parity_and_the_bundle_checks_itself(family_registry: shipml.Registry, tmp_path: Path) -> None:
    result = export_onnx(family_registry.load("lgb_binary"), tmp_path / "b", quantize="int8", rows=300)
    assert result.parity.n_differing == 0 and result.quantized_parity is not None
    report = result.quantized_parity.to_dict()
    assert report["golden_rows"] + report["drawn_rows"] == 400 and report["label_agreement"] is not None
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["quantize"] == "int8" and manifest["quantized_parity"] == report
    Bundle(tmp_path / "b")  # hashes and golden sample pass


def test_float16_parity_is_reported_not_required(family_registry: shipml.Registry, tmp_path: Path) -> None:
    """A logistic regression in float16 moves probabilities by ~1e-3: beyond the tolerance, and still exported."""
    result = export_onnx(family_registry.load("sk_logistic_matrix"), tmp_path / "b", quantize="float16", rows=300)
    assert result.parity.n_differing == 0
    assert result.quantized_parity is not None and result.quantized_parity.n_differing > 0
    assert result.quantized_parity.max_proba_diff is not None and result.quantized_parity.max_proba_diff > 1e-5
    bundle = Bundle(tmp_path / "b")
    assert bundle.golden["expected"]["probabilities"] != json.loads(
        json.dumps(family_registry.load("sk_logistic_matrix").golden()["probabilities"]))


def test_what_onnxruntime_cannot_quantise_is_refused_with_why(family_registry: shipml.Registry,
                                                              tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"^onnxruntime cannot (run the model quantised to float16|quanti)"):
        export_onnx(family_registry.load("sk_logistic_mixed"), tmp_path / "b", quantize="float16", rows=100)
    assert not (tmp_path / "b").exists()


def test_the_cli_prints_the_quantised_parity(family_registry: shipml.Registry, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--registry", str(family_registry.root), "export", "lgb_regressor",
                                      "--quantize", "int8", "-o", str(tmp_path / "b"), "--rows", "200"])
    assert result.exit_code == 0, result.output
    assert "int8 parity (reported, not required): 300 rows" in result.output
    assert "WARNING" not in result.output
