"""``shipml.import_model`` and ``shipml import``: real files in tmp_path, real pickles, no mocks.

The MLflow model directories are written by hand in the layout MLflow 3.17 writes (``MLmodel`` YAML, the
flavor's data file, ``input_example.json``); the layouts were checked against directories written by
``mlflow.lightgbm.save_model`` and ``mlflow.sklearn.save_model`` outside this project's environment.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
import xgboost as xgb
import yaml
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.cli import cli
from shipml.errors import SchemaError, UnsafeModelError, UnsupportedModelError
from shipml.package.importer import file_format, import_model, pickle_imports, sniff
from shipml.package.loaded import sha256_file

SHIPML = Path(sys.executable).parent / "shipml"


class Evil:
    """Unpickling this creates the canary file: proof that a pickle ran code."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.canary), "w"))


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = ((X["a"] + 0.5 * X["b"]) > 0).astype(int).to_numpy()
    return X, y


@pytest.fixture
def sample_csv(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> Path:
    X, y = data
    path = tmp_path / "sample.csv"
    X.assign(label=y).to_csv(path, index=False)
    return path


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def _evil(path: Path, canary: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(Evil(canary), protocol=protocol))
    return path


def _invoke(registry: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--registry", str(registry), "import", *args])


# -- malicious pickles are never loaded --------------------------------------------------------------------
@pytest.mark.parametrize("file_name", ["evil.pkl", "model.txt", "model.onnx", "model.joblib"])
def test_cli_refuses_a_malicious_pickle(tmp_path: Path, sample_csv: Path, canary: Path, file_name: str) -> None:
    evil = _evil(tmp_path / file_name, canary)
    result = _invoke(tmp_path / "reg", str(evil), "--name", "m", "--sample", str(sample_csv))
    assert result.exit_code == 1
    assert file_name in result.output
    assert "pickle" in result.output
    assert "builtins.open" in result.output or "io.open" in result.output  # what it would have imported
    assert not canary.exists()
    assert not (tmp_path / "reg" / "models").exists()


@pytest.mark.parametrize("file_name", ["model.txt", "model.onnx", "model.json"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_renamed_pickle_is_refused_even_with_trust(tmp_path: Path, sample_csv: Path, canary: Path,
                                                     file_name: str, protocol: int) -> None:
    evil = _evil(tmp_path / file_name, canary, protocol)
    assert sniff(evil) == "pickle"
    result = _invoke(tmp_path / "reg", str(evil), "--name", "m", "--sample", str(sample_csv), "--trust")
    assert result.exit_code == 1
    assert file_name in result.output
    assert "rename it to .pkl" in result.output
    assert not canary.exists()


def test_real_subprocess_refuses_a_malicious_pickle(tmp_path: Path, sample_csv: Path, canary: Path) -> None:
    for name in ("evil.pkl", "model.onnx"):
        evil = _evil(tmp_path / name, canary)
        proc = subprocess.run(
            [str(SHIPML), "--registry", str(tmp_path / "reg"), "import", str(evil), "--name", "m",
             "--sample", str(sample_csv)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "SHIPML_HOME": str(tmp_path / "home")},
        )
        assert proc.returncode == 1, proc.stderr
        assert name in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not canary.exists()


def test_library_names_what_the_pickle_imports(tmp_path: Path, canary: Path) -> None:
    evil = _evil(tmp_path / "evil.pkl", canary)
    with pytest.raises(UnsafeModelError, match=r"evil\.pkl") as info:
        import_model(evil, "m", sample=pd.DataFrame({"a": [1.0]}), registry=tmp_path / "reg")
    assert any(t.endswith(".open") for t in info.value.unsafe_types)
    assert pickle_imports(evil) == info.value.unsafe_types
    assert not canary.exists()


def test_compressed_joblib_is_sniffed_as_pickle(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    for compress in ("zlib", "gzip", "bz2", "xz", "lzma"):
        path = tmp_path / f"model.{compress}.bin"
        joblib.dump(model, path, compress=(compress, 3))
        assert sniff(path) == "pickle", compress


# -- trusted pickles, skops ----------------------------------------------------------------------------------
def test_trusted_joblib_sklearn_model_imports_into_skops(tmp_path: Path, sample_csv: Path,
                                                         data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    refused = _invoke(tmp_path / "reg", str(path), "--name", "churn", "--sample", str(sample_csv),
                      "--target", "label")
    assert refused.exit_code == 1
    assert "model.joblib" in refused.output
    assert "--trust" in refused.output

    result = _invoke(tmp_path / "reg", str(path), "--name", "churn", "--sample", str(sample_csv),
                     "--target", "label", "--trust", "--description", "from a joblib")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "churn:1.0.0"
    loaded = shipml.load_model("churn", registry=tmp_path / "reg")
    manifest = loaded.manifest
    assert manifest.runtime.name == "sklearn"  # stored in the safe format, not as a pickle
    assert not manifest.trust.required
    assert manifest.signature.names == ["a", "b", "c"]  # the target column left the features
    assert manifest.description == "from a joblib"
    assert manifest.tags["imported_from"] == "model.joblib"
    assert manifest.tags["imported_sha256"] == sha256_file(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-9)


def test_skops_with_a_non_sklearn_type_needs_trust(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(X, y)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    assert file_format(path) == "skops"
    with pytest.raises(UnsafeModelError, match=r"model\.skops.*lightgbm") as info:
        import_model(path, "m", sample=X, registry=tmp_path / "reg")
    assert any(t.startswith("lightgbm.") for t in info.value.unsafe_types)

    mv = import_model(path, "m", sample=X, target=y, trusted=True, registry=tmp_path / "reg")
    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    assert loaded.manifest.runtime.name == "lightgbm"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_skops_with_sklearn_types_only_needs_no_trust(tmp_path: Path,
                                                      data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    mv = import_model(path, "m", sample=X, registry=tmp_path / "reg")
    np.testing.assert_array_equal(shipml.load_model(mv.ref, registry=tmp_path / "reg").predict(X), model.predict(X))


def test_skops_file_with_trees_needs_trust(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    """skops refuses trees from a file of unknown origin (crafted node indices make scikit-learn read out of
    bounds); so does the import, until the user trusts the file."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = data
    model = RandomForestClassifier(n_estimators=4, random_state=0).fit(X, y)
    path = tmp_path / "forest.skops"
    sio.dump(model, path)
    with pytest.raises(UnsafeModelError, match=r"forest\.skops.*sklearn\.tree\._tree\.Tree"):
        import_model(path, "m", sample=X, registry=tmp_path / "reg")
    mv = import_model(path, "m", sample=X, trusted=True, registry=tmp_path / "reg")
    assert not mv.manifest.trust.required  # stored as a file shipml wrote: sealed by the registry from now on
    assert mv.manifest.tags["imported_sha256"] == sha256_file(path)


# -- native formats ------------------------------------------------------------------------------------------
def test_lightgbm_text_and_xgboost_json_import_without_trust(tmp_path: Path,
                                                             data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(X, y), 5)
    lgb_path = tmp_path / "booster.txt"
    booster.save_model(str(lgb_path))
    xgb_model = xgb.XGBRegressor(n_estimators=5, max_depth=3).fit(X, X["a"] * 2.0)
    xgb_path = tmp_path / "model.json"
    xgb_model.save_model(str(xgb_path))
    ubj_path = tmp_path / "model.ubj"
    xgb_model.save_model(str(ubj_path))
    assert [sniff(p) for p in (lgb_path, xgb_path, ubj_path)] == ["lightgbm", "xgboost", "xgboost"]

    reg = tmp_path / "reg"
    lgb_loaded = shipml.load_model(import_model(lgb_path, "lgb", sample=X, registry=reg).ref, registry=reg)
    np.testing.assert_array_equal(lgb_loaded.predict(X), (booster.predict(X) > 0.5).astype(int))
    for path in (xgb_path, ubj_path):
        mv = import_model(path, f"xgb-{path.suffix[1:]}", sample=X, registry=reg)
        assert mv.manifest.runtime.name == "xgboost"
        loaded = shipml.load_model(mv.ref, registry=reg)
        np.testing.assert_allclose(loaded.predict(X), xgb_model.predict(X), rtol=1e-6)


def test_unknown_content_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a model\n")
    with pytest.raises(UnsupportedModelError, match=r"notes\.txt"):
        import_model(path, "m", sample=pd.DataFrame({"a": [1.0]}), registry=tmp_path / "reg")


def test_content_contradicting_a_safe_name_is_refused(tmp_path: Path,
                                                      data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 3)
    path = tmp_path / "model.onnx"
    booster.save_model(str(path))
    with pytest.raises(UnsupportedModelError, match=r"model\.onnx is a LightGBM text model"):
        import_model(path, "m", sample=X, registry=tmp_path / "reg")


# -- MLflow models ---------------------------------------------------------------------------------------------
def _mlmodel(directory: Path, flavors: dict[str, Any], example: pd.DataFrame | None = None) -> None:
    spec: dict[str, Any] = {"flavors": flavors, "mlflow_version": "3.17.2", "model_id": None,
                            "utc_time_created": "2026-11-22 03:02:56.459093"}
    if example is not None:
        spec["saved_input_example_info"] = {"artifact_path": "input_example.json", "pandas_orient": "split",
                                            "serving_input_path": "serving_input_example.json",
                                            "type": "dataframe"}
        (directory / "input_example.json").write_bytes(orjson.dumps(
            {"columns": list(example.columns), "data": example.to_numpy().tolist()}))
    (directory / "MLmodel").write_text(yaml.safe_dump(spec), encoding="utf-8")


def _pyfunc_flavor(loader: str, data: str) -> dict[str, Any]:
    return {"data": data, "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
            "loader_module": loader, "python_version": "3.11.7"}


def test_mlflow_lightgbm_booster_imports_without_trust(tmp_path: Path,
                                                       data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, _ = data
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, X["a"] * 2.0), 5)
    directory = tmp_path / "mlflow-lgb"
    directory.mkdir()
    booster.save_model(str(directory / "model.lgb"))
    _mlmodel(directory, {
        "lightgbm": {"code": None, "data": "model.lgb", "lgb_version": lgb.__version__,
                     "model_class": "lightgbm.basic.Booster", "serialization_format": "skops"},
        "python_function": _pyfunc_flavor("mlflow.lightgbm", "model.lgb"),
    }, example=X.head(20))

    with pytest.warns(UserWarning, match="input example's 20 rows"):  # the sample: the input example
        mv = import_model(directory, "lgb", sample=None, registry=tmp_path / "reg")
    manifest = mv.manifest
    assert manifest.runtime.name == "lightgbm"
    assert not manifest.trust.required
    assert manifest.tags["imported_from"] == "mlflow-lgb/model.lgb"
    assert manifest.tags["imported_format"] == "mlflow/lightgbm/lightgbm"
    assert manifest.tags["imported_sha256"] == sha256_file(directory / "model.lgb")
    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    np.testing.assert_allclose(loaded.predict(X), booster.predict(X), rtol=1e-9)


def test_mlflow_lightgbm_sklearn_api_in_skops_imports_without_trust(
        tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(X, y)
    directory = tmp_path / "mlflow-lgb-skops"
    directory.mkdir()
    sio.dump(model, directory / "model.skops")
    _mlmodel(directory, {
        "lightgbm": {"code": None, "data": "model.skops", "model_class": "lightgbm.sklearn.LGBMClassifier",
                     "serialization_format": "skops",
                     "skops_trusted_types": ["lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster"]},
        "python_function": _pyfunc_flavor("mlflow.lightgbm", "model.skops"),
    })
    mv = import_model(directory, "lgb", sample=X, registry=tmp_path / "reg")
    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_mlflow_sklearn_pickle_needs_trust(tmp_path: Path, sample_csv: Path,
                                           data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    directory = tmp_path / "mlflow-sklearn"
    directory.mkdir()
    (directory / "model.pkl").write_bytes(cloudpickle.dumps(model))
    _mlmodel(directory, {
        "python_function": {**_pyfunc_flavor("mlflow.sklearn", "model.pkl"), "model_path": "model.pkl",
                            "predict_fn": "predict"},
        "sklearn": {"code": None, "pickled_model": "model.pkl", "serialization_format": "cloudpickle",
                    "sklearn_version": "1.9.1", "skops_trusted_types": None},
    })
    refused = _invoke(tmp_path / "reg", str(directory), "--name", "clf", "--sample", str(sample_csv),
                      "--target", "label")
    assert refused.exit_code == 1
    assert "model.pkl is a pickle" in refused.output

    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "reg"), "--json", "import", str(directory),
                                      "--name", "clf", "--sample", str(sample_csv), "--target", "label",
                                      "--trust"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)
    assert out["ref"] == "clf:1.0.0"
    assert out["runtime"] == "sklearn"
    assert out["tags"]["imported_format"] == "mlflow/sklearn/pickle"
    loaded = shipml.load_model("clf", registry=tmp_path / "reg")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_mlflow_unsupported_flavor_names_the_flavors(tmp_path: Path) -> None:
    directory = tmp_path / "mlflow-torch"
    directory.mkdir()
    _mlmodel(directory, {"pytorch": {"model_data": "data", "pytorch_version": "2.3.0"},
                         "python_function": _pyfunc_flavor("mlflow.pytorch", "data")})
    with pytest.raises(UnsupportedModelError, match=r"python_function, pytorch"):
        import_model(directory, "m", sample=pd.DataFrame({"a": [1.0]}), registry=tmp_path / "reg")


def test_mlflow_flavor_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "mlflow-escape"
    directory.mkdir()
    (tmp_path / "outside.lgb").write_text("tree\nversion=v4\n")
    _mlmodel(directory, {"lightgbm": {"data": "../outside.lgb"}})
    with pytest.raises(shipml.ManifestError, match="outside"):
        import_model(directory, "m", sample=pd.DataFrame({"a": [1.0]}), registry=tmp_path / "reg")


# -- shipml packages, samples ----------------------------------------------------------------------------------
def test_shipml_package_directory_is_added(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    model = LogisticRegression().fit(X, y)
    source = shipml.save_model(model, "orig", sample=X, registry=tmp_path / "one")
    mv = import_model(source.path, "copy", sample=None, registry=tmp_path / "two", version="2.0.0",
                      tags={"team": "risk"})
    assert mv.ref == "copy:2.0.0"
    assert mv.manifest.tags["team"] == "risk"
    assert mv.manifest.tags["imported_format"] == "shipml"
    np.testing.assert_array_equal(shipml.load_model(mv.ref, registry=tmp_path / "two").predict(X),
                                  model.predict(X))


def test_trusted_package_needs_trust_to_import(tmp_path: Path) -> None:
    from tests.contract.custom_model import ThresholdModel

    X = np.random.default_rng(1).normal(size=(50, 2))
    source = shipml.save_model(ThresholdModel(0.0), "orig", sample=X, trusted=True, registry=tmp_path / "one")
    with pytest.raises(UnsafeModelError, match="--trust"):
        import_model(source.path, "copy", sample=None, registry=tmp_path / "two")
    assert import_model(source.path, "copy", sample=None, trusted=True, registry=tmp_path / "two").ref \
        == "copy:1.0.0"


def test_parquet_sample_and_missing_sample(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, y), 3)
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    with pytest.raises(SchemaError, match="sample"):
        import_model(path, "m", sample=None, registry=tmp_path / "reg")
    with pytest.raises(SchemaError, match="nope"):
        import_model(path, "m", sample=X, target="nope", registry=tmp_path / "reg")
    parquet = tmp_path / "sample.parquet"
    X.assign(label=y).to_parquet(parquet)
    mv = import_model(path, "m", sample=parquet, target="label", registry=tmp_path / "reg")
    assert mv.manifest.signature.names == ["a", "b", "c"]


def test_cli_import_has_help() -> None:
    result = CliRunner().invoke(cli, ["import", "--help"])
    assert result.exit_code == 0
    assert "--trust" in result.output


def test_onnx_file_imports_without_trust(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    X, y = data
    X32 = X.astype(np.float32)
    model = LogisticRegression().fit(X32.to_numpy(), y)
    path = tmp_path / "model.onnx"
    path.write_bytes(skl2onnx.to_onnx(model, X32.to_numpy()[:1], options={"zipmap": False}).SerializeToString())
    assert sniff(path) == "onnx"
    mv = import_model(path, "onx", sample=X32, registry=tmp_path / "reg")
    assert mv.manifest.runtime.name == "onnx"
    assert not mv.manifest.trust.required
    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    np.testing.assert_array_equal(loaded.predict(X32), model.predict(X32.to_numpy()))
