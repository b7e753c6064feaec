"""The lineage of an imported model names its source, not shipml's command line (issue 12, item 16).

MLflow model directories are written here in the layout MLflow writes (``MLmodel`` YAML with ``run_id``,
``artifact_path``, ``utc_time_created``, ``mlflow_version``, the flavor's data file, ``input_example.json``);
mlflow itself is not installed. ``shipml import`` runs as a real subprocess too: the old lineage recorded the
``shipml`` console script (or click's frame) as the training code, and the git commit of shipml's checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.cli import cli
from shipml.package.importer import SampleWarning, import_model
from shipml.package.loaded import sha256_file

SHIPML = Path(sys.executable).parent / "shipml"
RUN_ID = "5f0e4b7a9c2d4e1f8a6b3c0d9e8f7a6b"
CREATED = "2026-11-22 03:02:56.459093"


def data(n: int = 200, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    return X, ((X["a"] + 0.5 * X["b"]) > 0).astype(int).to_numpy()


def mlflow_dir(directory: Path, flavor: str, data_file: str, example_rows: int | None, *,
               extra: dict[str, Any] | None = None) -> Path:
    X, y = data()
    directory.mkdir(parents=True)
    if flavor == "lightgbm":
        lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(X, y), 5).save_model(
            str(directory / data_file))
        conf: dict[str, Any] = {"data": data_file, "model_class": "lightgbm.basic.Booster", "code": None}
    else:
        sio.dump(LogisticRegression().fit(X, y), directory / data_file)
        conf = {"pickled_model": data_file, "serialization_format": "skops", "code": None}
    spec: dict[str, Any] = {
        "artifact_path": "model", "flavors": {flavor: conf, "python_function": {
            "data": data_file, "loader_module": f"mlflow.{flavor}", "env": {"virtualenv": "python_env.yaml"}}},
        "mlflow_version": "3.17.2", "model_size_bytes": 4096, "model_uuid": "e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5",
        "run_id": RUN_ID, "utc_time_created": CREATED, **(extra or {})}
    if example_rows is not None:
        example = X.head(example_rows)
        (directory / "input_example.json").write_bytes(orjson.dumps(
            {"columns": list(example.columns), "data": example.to_numpy().tolist()}))
        spec["saved_input_example_info"] = {"artifact_path": "input_example.json", "type": "dataframe",
                                            "pandas_orient": "split"}
    (directory / "MLmodel").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return directory


def manifest_of(registry: Path, ref: str) -> shipml.ModelVersion:
    return shipml.Registry(registry).get(ref)


@pytest.mark.parametrize(("flavor", "data_file", "fmt"), [
    ("lightgbm", "model.lgb", "mlflow/lightgbm/lightgbm"),
    ("sklearn", "model.skops", "mlflow/sklearn/skops"),
])
def test_mlflow_lineage_records_the_run_not_shipml(tmp_path: Path, flavor: str, data_file: str, fmt: str) -> None:
    directory = mlflow_dir(tmp_path / "exported" / "model", flavor, data_file, None)
    X, _ = data()
    mv = import_model(directory, "m", sample=X, registry=tmp_path / "reg")
    lineage = mv.manifest.lineage
    assert lineage.code_file is None  # never this test file, click's, nor the shipml script
    assert (lineage.git_commit, lineage.git_dirty, lineage.git_repo) == (None, None, None)
    source = lineage.imported_from
    assert source is not None
    assert (source.path, source.file, source.format) == (str(directory), data_file, fmt)
    assert source.sha256 == sha256_file(directory / data_file) == mv.manifest.tags["imported_sha256"]
    assert source.mlflow is not None
    assert source.mlflow.model_dump() == {
        "flavor": flavor, "run_id": RUN_ID, "artifact_path": "model",
        "model_uuid": "e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5", "model_id": None, "utc_time_created": CREATED,
        "mlflow_version": "3.17.2"}
    assert lineage.sample_rows == 200


def test_a_model_file_import_records_the_file(tmp_path: Path) -> None:
    X, y = data()
    path = tmp_path / "model.txt"
    lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 3).save_model(str(path))
    mv = import_model(path, "m", sample=X, registry=tmp_path / "reg")
    source = mv.manifest.lineage.imported_from
    assert source is not None and source.mlflow is None
    assert (source.path, source.file, source.format, source.sha256) == (str(path), "model.txt", "lightgbm",
                                                                        sha256_file(path))
    assert mv.manifest.lineage.code_file is None and mv.manifest.lineage.git_commit is None


def test_a_saved_model_still_records_its_training_code(tmp_path: Path) -> None:
    X, y = data()
    mv = shipml.save_model(LogisticRegression().fit(X, y), "m", sample=X, registry=tmp_path / "reg")
    assert mv.manifest.lineage.code_file == str(Path(__file__).resolve())
    assert mv.manifest.lineage.imported_from is None


def test_subprocess_import_records_no_shipml_checkout(tmp_path: Path) -> None:
    """The real command line: the lineage holds the MLflow run, not the console script nor shipml's commit."""
    directory = mlflow_dir(tmp_path / "mlruns" / "model", "lightgbm", "model.lgb", 3)
    done = subprocess.run([str(SHIPML), "--registry", str(tmp_path / "reg"), "import", str(directory), "--name",
                           "m", "--json"], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "SHIPML_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    lineage = manifest_of(tmp_path / "reg", "m:1.0.0").manifest.lineage
    assert lineage.code_file is None and lineage.git_commit is None and lineage.git_repo is None
    assert lineage.imported_from is not None and lineage.imported_from.mlflow is not None
    assert lineage.imported_from.mlflow.run_id == RUN_ID
    out = orjson.loads(done.stdout)
    assert out["imported_from"]["mlflow"]["run_id"] == RUN_ID
    assert out["warnings"] and "3 rows" in out["warnings"][0]
    assert any(line.startswith("warning: ") and "3 rows" in line and "--sample" in line
               for line in done.stderr.splitlines())


# -- the input example as a sample -------------------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 25))
def test_a_signature_from_the_input_example_warns_naming_its_rows(tmp_path_factory: pytest.TempPathFactory,
                                                                   rows: int) -> None:
    root = tmp_path_factory.mktemp("example")
    directory = mlflow_dir(root / "model", "lightgbm", "model.lgb", rows)
    plural = "row" if rows == 1 else "rows"
    with pytest.warns(SampleWarning, match=rf"input example's {rows} {plural}\b.*--sample"):
        mv = import_model(directory, "m", sample=None, registry=root / "reg")
    assert mv.manifest.lineage.sample_rows == rows
    # what the warning says: typical rows fall outside the ranges taken from the example
    X, _ = data(500, seed=9)
    report = shipml.load_model(mv.ref, registry=root / "reg").validate(X)
    assert any(p.rule == "out_of_range" for p in report)


def test_a_sample_given_means_no_warning(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    directory = mlflow_dir(tmp_path / "model", "lightgbm", "model.lgb", 3)
    X, _ = data()
    import_model(directory, "m", sample=X, registry=tmp_path / "reg")
    assert not [w for w in recwarn if issubclass(w.category, SampleWarning)]
    result = CliRunner().invoke(cli, ["import", str(directory), "--name", "n", "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 0, result.output
    assert "warning: model: no --sample" in result.stderr and "3 rows" in result.stderr


def test_model_card_shows_the_source(tmp_path: Path) -> None:
    directory = mlflow_dir(tmp_path / "model", "lightgbm", "model.lgb", None)
    X, _ = data()
    import_model(directory, "m", sample=X, registry=tmp_path / "reg")
    card = CliRunner().invoke(cli, ["show", "m:1.0.0", "--registry", str(tmp_path / "reg")])
    assert card.exit_code == 0, card.output
    assert f"imported from   {directory} (model.lgb, mlflow/lightgbm/lightgbm)" in card.stdout
    assert f"mlflow run      {RUN_ID}" in card.stdout
    assert f"mlflow created  {CREATED}" in card.stdout
    assert "git commit" not in card.stdout and "  code " not in card.stdout
