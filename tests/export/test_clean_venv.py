"""The bundle on a machine that never had the training libraries: a fresh venv holding only onnxruntime and
numpy (and what they need), no shipml, pandas or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

import shipml
from shipml.export.parity import drawn_records, registered_outputs

FORBIDDEN = ("shipml", "pandas", "sklearn", "lightgbm", "xgboost", "onnx", "skl2onnx", "onnxmltools")


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only onnxruntime and numpy, created once per session (pip may use its cache)."""
    root = tmp_path_factory.mktemp("clean-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = root / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "onnxruntime", "numpy"], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"could not install onnxruntime and numpy into a fresh venv: {done.stderr[-2000:]}")
    return python


def _run(python: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # -I: isolated (no PYTHONPATH, no user site), so nothing of this test's environment leaks in
    return subprocess.run([str(python), "-I", *args], input=stdin, capture_output=True, text=True, timeout=120,
                          check=False, cwd="/")


@pytest.mark.slow
def test_the_venv_holds_no_training_library(clean_python: Path) -> None:
    probe = "import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in %r}))"
    found = json.loads(_run(clean_python, "-c", probe % (FORBIDDEN,)).stdout)
    assert found == dict.fromkeys(FORBIDDEN, False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sk_logistic_mixed", "sk_boosting_regressor", "lgb_multiclass", "xgb_binary"])
def test_the_bundle_runs_there_and_answers_as_the_registered_model(
        clean_python: Path, family_registry: shipml.Registry, bundles: dict[str, Path], tmp_path: Path,
        name: str) -> None:
    model = family_registry.load(name)
    records = drawn_records(model.signature.inputs, rows=300, seed=11)
    (tmp_path / "in.json").write_text(json.dumps(records))
    done = _run(clean_python, str(bundles[name] / "predict.py"), str(tmp_path / "in.json"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    labels, proba = registered_outputs(model, records)
    predictions = [r["prediction"] for r in rows]
    if proba is None:
        np.testing.assert_allclose(predictions, labels.astype(float), rtol=1e-5,
                                   atol=bundles_scale(bundles[name]) * 1e-5 + 1e-5)
    else:
        assert predictions == labels.tolist()
        classes = [str(c) for c in model.classes or []]
        np.testing.assert_allclose([[r["probabilities"][c] for c in classes] for r in rows], proba, atol=1e-5)
    check = _run(clean_python, str(bundles[name] / "predict.py"), "--check")
    assert check.returncode == 0 and check.stdout.startswith(f"ok: {model.ref} verified")


@pytest.mark.slow
def test_bad_input_there_is_one_line_not_a_traceback(clean_python: Path, bundles: dict[str, Path]) -> None:
    done = _run(clean_python, str(bundles["lgb_binary"] / "predict.py"), stdin='{"f0": "x"}')
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: record 0: missing field(s) 'f1'") and "Traceback" not in done.stderr


def bundles_scale(bundle: Path) -> float:
    return float(json.loads((bundle / "golden.json").read_text())["tolerance"].get("value_scale", 0.0))
