"""Trust follows from the runtime and the artefact bytes, never from a manifest nobody sealed.

Real packages saved into tmp_path, real pickles whose ``__reduce__`` creates a marker file: the marker never
appears unless the user trusted the package.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.cli import cli
from shipml.errors import IntegrityError, ShipmlError, UnsafeModelError
from shipml.package.loaded import load_package
from shipml.package.manifest import MANIFEST, manifest_digest


class Marker:
    """Unpickling this creates the marker file: proof that a pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = (X["a"] - X["b"] > 0).astype(int).to_numpy()
    return X, y


@pytest.fixture
def package(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> Path:
    """A real, safe package directory (scikit-learn via skops), outside any registry."""
    X, y = data
    mv = shipml.save_model(LogisticRegression().fit(X, y), "safe", sample=X, registry=tmp_path / "origin")
    target = tmp_path / "pkg"
    shutil.copytree(mv.path, target)
    return target


def _manifest(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((directory / MANIFEST).read_bytes())
    return data


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def plant_pickle(directory: Path, marker: Path, *, listed: bool = False) -> None:
    """The attack of issue #12: runtime pickle, trust not required, the artefact entry gone, a pickle at the
    pickle runtime's fixed file name. ``listed``: the attacker also lists the pickle, with its right sha256."""
    manifest = _manifest(directory)
    manifest["runtime"] = {"name": "pickle", "api_version": 1,
                           "info": {"input_format": "frame", "classes": [0, 1], "class": "x.Y"}}
    manifest["trust"] = {"required": False, "types": [], "granted_by": None, "granted_at": None}
    manifest["artifacts"] = [a for a in manifest["artifacts"] if not a["path"].startswith("model/")]
    (directory / "model" / "model.skops").unlink()
    data = pickle.dumps(Marker(marker))
    (directory / "model" / "model.pkl").write_bytes(data)
    if listed:
        manifest["artifacts"].append({"path": "model/model.pkl", "sha256": hashlib.sha256(data).hexdigest(),
                                      "size": len(data)})
    _write_manifest(directory, manifest)


# -- the attack of issue #12 --------------------------------------------------------------------------------
@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "listed"])
def test_cli_import_of_a_planted_pickle_without_trust_is_refused(tmp_path: Path, package: Path, marker: Path,
                                                                  listed: bool) -> None:
    plant_pickle(package, marker, listed=listed)
    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "reg"), "import", str(package), "--name", "x"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1  # one line
    assert ("--trust" if listed else "lists no file under model/") in result.output
    assert not marker.exists()
    assert not (tmp_path / "reg" / "models" / "x").exists()


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "listed"])
def test_load_model_of_a_planted_pickle_does_not_run_it(package: Path, marker: Path, listed: bool) -> None:
    plant_pickle(package, marker, listed=listed)
    with pytest.raises(ShipmlError) as caught:
        shipml.load_model(package)
    if listed:
        assert isinstance(caught.value, UnsafeModelError)
        assert "pickle" in str(caught.value)
        assert "trusted=True" in str(caught.value)
    assert not marker.exists()


def test_a_registry_version_edited_in_place_never_runs_a_planted_pickle(
        tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray], marker: Path) -> None:
    X, y = data
    reg = shipml.Registry(tmp_path / "reg")
    mv = shipml.save_model(LogisticRegression().fit(X, y), "m", sample=X, registry=reg)
    digest = manifest_digest((mv.path / MANIFEST).read_bytes())
    plant_pickle(mv.path, marker, listed=True)
    with pytest.raises(ShipmlError):
        shipml.load_model("m", registry=reg)
    with pytest.raises(IntegrityError):  # what the registry checks once it records the digest
        load_package(mv.path, manifest_sha256=digest)
    assert not marker.exists()


def test_the_pickle_runs_with_trust(package: Path, marker: Path) -> None:
    """The marker proves the attack file is live: with trust given, it does run (then fails to predict)."""
    plant_pickle(package, marker, listed=True)
    with pytest.raises(ShipmlError):
        shipml.load_model(package, trusted=True)
    assert marker.exists()


def test_trusted_false_refuses_even_an_authenticated_package(tmp_path: Path) -> None:
    from tests.contract.custom_model import ThresholdModel

    X = np.random.default_rng(1).normal(size=(50, 2))
    mv = shipml.save_model(ThresholdModel(0.0), "t", sample=X, trusted=True, registry=tmp_path / "reg")
    digest = manifest_digest((mv.path / MANIFEST).read_bytes())
    with pytest.raises(UnsafeModelError, match="pickle"):
        load_package(mv.path, manifest_sha256=digest, trusted=False)
    assert load_package(mv.path, manifest_sha256=digest).manifest.trust.required


def test_batch_scoring_of_a_trusted_model_works_with_trusted_true(tmp_path: Path) -> None:
    from shipml.jobs import predict_file
    from tests.contract.custom_model import ThresholdModel

    X = pd.DataFrame({"x": np.linspace(-1, 1, 40), "y": np.zeros(40)})
    shipml.save_model(ThresholdModel(0.0), "t", sample=X, trusted=True, registry=tmp_path / "reg")
    X.to_csv(tmp_path / "in.csv", index=False)
    report = predict_file("t", tmp_path / "in.csv", tmp_path / "out.csv", registry=tmp_path / "reg", trusted=True,
                          workers=1, quiet=True)
    assert report.rows_scored == 40
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["prediction"].tolist() == (X["x"] > 0).astype(int).tolist()


# -- what a package may hold ------------------------------------------------------------------------------------
def _refused(directory: Path, match: str) -> None:
    with pytest.raises(ShipmlError, match=match) as caught:
        shipml.load_model(directory)
    assert "\n" not in str(caught.value)


def test_a_file_no_entry_covers_is_refused(package: Path) -> None:
    (package / "model" / "notes.txt").write_text("planted")
    _refused(package, r"model/notes\.txt is in the package but no artefact entry covers it")


@pytest.mark.parametrize("where", ["model/model.skops", "golden.json", "model", "model/extra", "shipml.json"])
def test_a_symbolic_link_anywhere_is_refused(package: Path, tmp_path: Path, where: str) -> None:
    path = package / where
    outside = tmp_path / "outside"
    if path.exists():
        shutil.move(path, outside)
    else:
        outside.write_text("x")
    path.symlink_to(outside)
    _refused(package, "symbolic link|not a regular file")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside", "model/../golden.json", "model//model.skops",
                                 "./golden.json", "model\\model.skops", "shipml.json", ""])
def test_artefact_paths_must_be_plain_relative_paths(package: Path, bad: str) -> None:
    manifest = _manifest(package)
    manifest["artifacts"].append({"path": bad, "sha256": "0" * 64, "size": 0})
    _write_manifest(package, manifest)
    _refused(package, "plain relative path|lists itself")


def test_an_artefact_listed_twice_is_refused(package: Path) -> None:
    manifest = _manifest(package)
    manifest["artifacts"].append(manifest["artifacts"][0])
    _write_manifest(package, manifest)
    _refused(package, "listed twice")


def test_a_fifo_in_the_package_is_refused_without_blocking(package: Path) -> None:
    os.mkfifo(package / "model" / "pipe")
    _refused(package, "not a regular file")


def test_runtimes_refuse_what_their_grant_does_not_cover_even_called_directly(
        tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    """Defence in depth: load_package judges trust first, and each runtime's load checks its grant again."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from shipml import runtimes
    from shipml.package.artefacts import fresh
    from shipml.runtimes.base import Grant
    from tests.contract.custom_model import ThresholdModel

    X, y = data
    reg = tmp_path / "reg"
    skops_mv = shipml.save_model(make_pipeline(FunctionTransformer(np.negative), FunctionTransformer(abs),
                                               LogisticRegression()).fit(X, y), "s", sample=X, trusted=True,
                                 registry=reg)
    pickle_mv = shipml.save_model(ThresholdModel(0.0), "p", sample=X, trusted=True, registry=reg)
    for mv, name in ((skops_mv, "sklearn"), (pickle_mv, "pickle")):
        runtime = runtimes.get(name)
        info = mv.manifest.runtime.info
        with pytest.raises(UnsafeModelError):
            runtime.load(fresh(mv.path, mv.ref).model_view(), info, Grant(sealed=True))
        runtime.load(fresh(mv.path, mv.ref).model_view(), info, Grant(everything=True))
    need = runtimes.get("sklearn").trust_needed(fresh(skops_mv.path, "s").model_view(), sealed=True)
    assert need.types == ("builtins.abs",)
    granted = Grant(types=frozenset(need.types), sealed=True)
    runtimes.get("sklearn").load(fresh(skops_mv.path, "s").model_view(), {}, granted)


def test_a_batch_job_never_writes_into_the_package_it_scores(package: Path, data: tuple[pd.DataFrame, np.ndarray],
                                                             tmp_path: Path) -> None:
    from shipml.errors import ConflictError
    from shipml.jobs import predict_file

    X, _ = data
    X.to_csv(tmp_path / "in.csv", index=False)
    for output in (package / "out.csv", package / "model" / "out.parquet"):
        with pytest.raises(ConflictError, match="inside the model package"):
            predict_file(package, tmp_path / "in.csv", output, workers=1, quiet=True)
    assert sorted(p.name for p in package.iterdir()) == ["golden.json", "model", "profile.json", "shipml.json"]
    shipml.load_model(package)  # still exactly its recorded files
