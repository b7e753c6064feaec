"""``shipml export`` on the command line, and an exported model.onnx imported back and served by a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from tests.e2e.server_process import start
from tests.export.models import mixed_frame


def test_export_prints_parity_size_and_latency(family_registry: shipml.Registry, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["--registry", str(family_registry.root), "export", "lgb_multiclass",
                                      "--format", "onnx", "-o", str(out), "--rows", "500"])
    assert result.exit_code == 0, result.output
    assert f"exported lgb_multiclass:1.0.0 (lightgbm) to {out}" in result.output
    assert re.search(r"parity: 600 rows \(100 golden, 500 drawn .*\), 0 differ beyond proba_atol=1e-05", result.output)
    size = sum(p.stat().st_size for p in out.iterdir())
    assert f"bundle size: {size / 1024:.1f} KiB ({size} bytes)" in result.output
    assert re.search(r"runner latency: \d+\.\d us per row", result.output)


def test_export_refuses_a_taken_directory(family_registry: shipml.Registry, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    result = CliRunner().invoke(cli, ["--registry", str(family_registry.root), "export", "lgb_binary",
                                      "-o", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "is not an empty directory" in result.output
    assert (tmp_path / "taken" / "x").read_text() == "keep"


@pytest.mark.slow
def test_an_exported_model_imports_and_serves_like_any_other(family_registry: shipml.Registry,
                                                             bundles: dict[str, Path], tmp_path: Path) -> None:
    """The ONNX file of a mixed-input pipeline, imported with a sample, served by `shipml serve` on 127.0.0.1:
    its answers are the registered pipeline's."""
    original = family_registry.load("sk_logistic_mixed")
    sample = mixed_frame(200, seed=3).dropna(subset=["state"])  # a CSV cannot say which empty cell is a null text
    sample.to_csv(tmp_path / "sample.csv", index=False)
    registry = tmp_path / "served"
    result = CliRunner().invoke(cli, ["--registry", str(registry), "import", str(bundles["sk_logistic_mixed"] /
                                      "model.onnx"), "--name", "clf", "--sample", str(tmp_path / "sample.csv")])
    assert result.exit_code == 0, result.output
    imported = shipml.load_model("clf", registry=registry)
    assert imported.manifest.runtime.name == "onnx" and imported.classes == ["churn", "stay"]
    rows = mixed_frame(50, seed=9).dropna(subset=["state"])
    records = json.loads(rows.to_json(orient="records"))
    server = start(registry, tmp_path)
    try:
        body = httpx.post(server.url + "/predict", json={"instances": records}, timeout=10).json()
    finally:
        server.stop()
    assert body["predictions"] == original.predict(rows).tolist()
    np.testing.assert_allclose(body["probabilities"], original.predict_proba(rows), atol=1e-5)
