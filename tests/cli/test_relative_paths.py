"""Path arguments spelled relatively (``dir``, ``./dir``, ``../x/dir``, ``dir/``, ``.``, ``a/../dir``, a file
name), run from another directory than the files' (issue 12, item 13).

Every command that takes a path gets the same file or directory spelled in many ways (hypothesis draws the
spelling and the working directory) and must do the same thing as with the absolute path: import, predict,
predict-sample, evaluate --data, build contexts, serve --spec and model package directories as refs. Relative
paths inside a spec file are relative to the spec file's directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.cli import cli

EXAMPLES = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Tree:
    """root/registry (model lgb), root/inputs (model files, data), root/deploy (specs), root/work/a/b (a cwd)."""

    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def package(self) -> Path:
        return self.registry / "models" / "lgb" / "versions" / "1.0.0"

    @property
    def elsewhere(self) -> Path:
        return self.root / "work" / "a" / "b"


def _mlflow_dir(directory: Path, booster: lgb.Booster, example: pd.DataFrame) -> None:
    directory.mkdir()
    booster.save_model(str(directory / "model.lgb"))
    (directory / "input_example.json").write_bytes(orjson.dumps(
        {"columns": list(example.columns), "data": example.to_numpy().tolist()}))
    (directory / "MLmodel").write_text(yaml.safe_dump({
        "artifact_path": "model", "mlflow_version": "3.17.2", "run_id": "0a1b2c3d4e5f",
        "utc_time_created": "2026-11-22 03:02:56.459093",
        "flavors": {"lightgbm": {"data": "model.lgb", "model_class": "lightgbm.basic.Booster"},
                    "python_function": {"data": "model.lgb", "loader_module": "mlflow.lightgbm"}},
        "saved_input_example_info": {"artifact_path": "input_example.json", "type": "dataframe"}}))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    t = Tree(tmp_path_factory.mktemp("tree"))
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = (X["a"] + X["b"] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(X, y), 5)
    shipml.save_model(booster, "lgb", sample=X, target=y, registry=t.registry)
    t.inputs.mkdir()
    booster.save_model(str(t.inputs / "model.txt"))
    _mlflow_dir(t.inputs / "mlflow_lgb", booster, X.head(3))
    X.to_csv(t.inputs / "sample.csv", index=False)
    X.assign(label=y).to_csv(t.inputs / "labelled.csv", index=False)
    (t.root / "deploy").mkdir()
    (t.root / "deploy" / "shipml.yaml").write_text(yaml.safe_dump(
        {"registry": "../registry", "endpoints": [{"name": "lgb", "models": ["lgb"]}]}))
    (t.root / "deploy" / "package.yaml").write_text(yaml.safe_dump(
        {"endpoints": [{"name": "pkg", "models": ["../registry/models/lgb/versions/1.0.0"]}]}))
    t.elsewhere.mkdir(parents=True)
    return t


@st.composite
def spelled(draw: st.DrawFn, target: Path, tree: Tree, *, must_exist: bool = True) -> tuple[Path, str]:
    """(a working directory, a relative spelling of ``target`` from it): from a directory elsewhere in the tree,
    from the target's own directory, or (a directory) from inside it; with ``./`` prefixes, ``x/..`` detours
    through directories that exist, and trailing slashes on directories."""
    cwds = [tree.elsewhere, target.parent] + ([target] if target.is_dir() else [])
    cwd = draw(st.sampled_from(cwds))
    parts = list(Path(os.path.relpath(target, cwd)).parts) or ["."]
    # detours through existing directories: insert "sub/.." before part i when cwd/parts[:i]/sub is a directory
    out: list[str] = []
    here = cwd
    for part in parts:
        subdirs = sorted(p.name for p in here.iterdir() if p.is_dir()) if here.is_dir() else []
        if subdirs and draw(st.booleans()):
            out += [draw(st.sampled_from(subdirs)), ".."]
        if draw(st.integers(0, 4)) == 0:
            out.append(".")
        out.append(part)
        here = (here / part).resolve() if part != "." else here
    text = "/".join(out)
    if draw(st.booleans()) and not text.startswith("."):
        text = "./" + text
    if target.is_dir() and draw(st.booleans()):
        text += "/"
    if must_exist:
        assert (cwd / text).resolve() == target.resolve(), (cwd, text, target)
    return cwd, text


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def shipml_json(cwd: Path, *args: str, warning: str | None = None) -> dict[str, object]:
    """``shipml ARGS --json`` run in ``cwd``: its JSON, after checking the exit code and, when given, that
    stderr holds a warning line containing ``warning``."""
    with working_directory(cwd):
        result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, f"shipml {' '.join(args)} (in {cwd}): {result.output}"
    if warning is not None:
        assert any(line.startswith("warning: ") and warning in line for line in result.stderr.splitlines()), \
            result.stderr
    out = orjson.loads(result.stdout)
    assert isinstance(out, dict)
    return out


def relative(cwd: Path, target: Path) -> str:
    return os.path.relpath(target, cwd)


# -- import -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@EXAMPLES
@given(data=st.data())
def test_import_a_model_file_spelled_relatively(tree: Tree, tmp_path: Path, data: st.DataObject) -> None:
    cwd, model = data.draw(spelled(tree.inputs / "model.txt", tree))
    sample = relative(cwd, tree.inputs / "sample.csv")
    registry = relative(cwd, tmp_path / "reg")
    out = shipml_json(cwd, "import", model, "--name", "imported", "--sample", sample, "--registry", registry)
    assert out["tags"]["imported_from"] == "model.txt"  # type: ignore[index]
    assert Path(str(out["path"])).is_relative_to(tmp_path / "reg")


@pytest.mark.slow
@EXAMPLES
@given(data=st.data())
def test_import_an_mlflow_directory_spelled_relatively(tree: Tree, tmp_path: Path, data: st.DataObject) -> None:
    cwd, directory = data.draw(spelled(tree.inputs / "mlflow_lgb", tree))
    registry = relative(cwd, tmp_path / "reg")
    out = shipml_json(cwd, "import", directory, "--name", "from-mlflow", "--registry", registry, warning="3 rows")
    assert out["tags"]["imported_from"] == "mlflow_lgb/model.lgb"  # type: ignore[index]


@pytest.mark.parametrize("spelling", ["mlflow_lgb", "./mlflow_lgb", "mlflow_lgb/", "../inputs/mlflow_lgb", "."])
def test_import_an_mlflow_directory_named_as_users_type_it(tree: Tree, tmp_path: Path, spelling: str) -> None:
    cwd = tree.inputs / "mlflow_lgb" if spelling == "." else tree.inputs
    out = shipml_json(cwd, "import", spelling, "--name", "m", "--registry", str(tmp_path / "reg"), warning="3 rows")
    assert out["ref"] == "m:1.0.0"
    assert out["tags"]["imported_from"] == "mlflow_lgb/model.lgb"  # type: ignore[index]


# -- predict, predict-sample, evaluate, show ---------------------------------------------------------------
@pytest.mark.slow
@EXAMPLES
@given(data=st.data())
def test_predict_with_a_package_directory_and_files_spelled_relatively(tree: Tree, data: st.DataObject) -> None:
    cwd, package = data.draw(spelled(tree.package, tree))
    source = data.draw(st.sampled_from([relative(cwd, tree.inputs / "sample.csv"),
                                        relative(cwd, tree.inputs) + "/./sample.csv"]))
    output = data.draw(st.sampled_from(["out.csv", "./out.csv", "x/../out.csv"]))
    if cwd.is_relative_to(tree.package):  # a package holds only its recorded files: nothing is written into it
        with working_directory(cwd):
            result = CliRunner().invoke(cli, ["predict", package, source, "-o", output, "--workers", "1", "-q"])
        assert result.exit_code == 1 and "inside the model package" in result.output, result.output
        assert sorted(p.name for p in cwd.iterdir()) == ["golden.json", "model", "profile.json", "shipml.json"]
        return
    (cwd / "x").mkdir(exist_ok=True)
    try:
        out = shipml_json(cwd, "predict", package, source, "-o", output, "--workers", "1", "-q")
        assert out["output"] == str(cwd / "out.csv")
        assert pd.read_csv(cwd / "out.csv").shape == (300, 1)
    finally:
        (cwd / "out.csv").unlink(missing_ok=True)
        shutil.rmtree(cwd / "x", ignore_errors=True)


@EXAMPLES
@given(data=st.data())
def test_predict_sample_and_show_with_relative_spellings(tree: Tree, data: st.DataObject) -> None:
    cwd, package = data.draw(spelled(tree.package, tree))
    rows = shipml_json(cwd, "predict-sample", package, relative(cwd, tree.inputs / "sample.csv"), "--limit", "4")
    assert rows["model"] == "lgb:1.0.0" and rows["rows"] == 4
    card = shipml_json(cwd, "show", package)
    assert card["manifest"]["name"] == "lgb"  # type: ignore[index]


@EXAMPLES
@given(data=st.data())
def test_evaluate_data_and_registry_spelled_relatively(tree: Tree, data: st.DataObject) -> None:
    cwd, labelled = data.draw(spelled(tree.inputs / "labelled.csv", tree))
    registry = relative(cwd, tree.registry)
    out = shipml_json(cwd, "evaluate", "lgb:1.0.0", "--data", labelled, "--target", "label", "--registry", registry)
    assert out["rows"] == 300 and out["data"] == "labelled.csv"


# -- build contexts, serve --spec ---------------------------------------------------------------------------
@pytest.mark.slow
@EXAMPLES
@given(data=st.data())
def test_build_context_from_a_spec_or_a_package_spelled_relatively(tree: Tree, tmp_path: Path,
                                                                    data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["spec", "package"]))
    target = tree.root / "deploy" / "shipml.yaml" if kind == "spec" else tree.package
    cwd, spelling = data.draw(spelled(target, tree))
    context = tmp_path / "ctx"
    shutil.rmtree(context, ignore_errors=True)
    out = shipml_json(cwd, "build", spelling, "--context-only", relative(cwd, context) + "/")
    assert out["context"] == str(context)
    assert [m["ref"] for m in out["models"]] == ["lgb:1.0.0"]  # type: ignore[union-attr, index]
    assert (context / "Dockerfile").is_file()


@EXAMPLES
@given(data=st.data())
def test_serve_spec_paths_are_relative_to_the_spec_file(tree: Tree, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["shipml.yaml", "package.yaml"]))
    cwd, spelling = data.draw(spelled(tree.root / "deploy" / name, tree))
    spec = shipml_json(cwd, "serve", "--spec", spelling, "--check")
    if name == "shipml.yaml":
        assert spec["registry"] == str(tree.registry)
    else:
        assert spec["endpoints"][0]["models"] == [str(tree.package)]  # type: ignore[index]


@EXAMPLES
@given(data=st.data())
def test_serve_a_package_directory_spelled_relatively(tree: Tree, data: st.DataObject) -> None:
    """The endpoint is named after the package's model, whatever the spelling (``.`` and ``..`` included)."""
    cwd, package = data.draw(spelled(tree.package, tree))
    spec = shipml_json(cwd, "serve", package, "--check")
    assert spec["endpoints"] == [{"name": "lgb", "models": [str(tree.package)]}]


def test_serve_two_packages_of_one_model(tree: Tree, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tree.package, copy)
    spec = shipml_json(tree.root, "serve", relative(tree.root, tree.package), str(copy), "--check")
    assert [e["name"] for e in spec["endpoints"]] == ["lgb", "lgb-1.0.0"]  # type: ignore[union-attr, index]
