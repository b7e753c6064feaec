"""Property: no edit of a package directory makes shipml run a planted pickle without trust.

hypothesis edits a real package (a scikit-learn model saved by shipml): manifest fields (runtime name, API
version, info, trust, artefact list, description), planted / removed / renamed files, pickles under the names the
pickle and pyfunc runtimes read, a skops file asking for a function, symbolic links to files and directories
outside. Then the package is loaded as a directory (``load_model(path)``), imported (``shipml import DIR``
without ``--trust``), and loaded as the registry would load it with the digest of the manifest it stored. Every
outcome is a one-line ShipmlError or a load that reproduces the golden sample, and the pickle's marker (a
directory its ``__reduce__`` creates) never appears.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import shipml
from shipml.errors import ShipmlError
from shipml.package.loaded import LoadedModel, load_package
from shipml.package.manifest import MANIFEST, manifest_digest

pytestmark = pytest.mark.slow


class Marker:
    """Unpickling this creates the marker directory: proof that a pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real package directory (LogisticRegression via skops) and its manifest's digest."""
    root = tmp_path_factory.mktemp("base")
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    mv = shipml.save_model(LogisticRegression().fit(X, y), "base", sample=X, registry=root / "reg")
    package = root / "pkg"
    shutil.copytree(mv.path, package)
    return package, manifest_digest((package / MANIFEST).read_bytes())


# -- the edits ----------------------------------------------------------------------------------------------
Edit = Callable[[Path, Path, dict[str, Any]], None]  # (package, outside, manifest) -> None

PICKLE_NAMES = ["model/model.pkl", "model/model.skops", "model/extra.pkl", "golden.json", "model/code/x.pkl",
                "model/artifacts/w.pkl"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _marker_pickle(outside: Path) -> bytes:
    return pickle.dumps(Marker(outside / "marker"))


def _entry(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _write(package: Path, relative: str, data: bytes) -> None:
    path = package / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.write_bytes(data)


def plant_pickle(name: str, listed: bool) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        data = _marker_pickle(outside)
        _write(package, name, data)
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("path") != name]
        if listed:
            manifest["artifacts"].append(_entry(name, data))
    return edit


def plant_pyfunc(listed: bool) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        spec = orjson.dumps({"mode": "cloudpickle", "module": "x", "class": "Y", "classes": None})
        data = _marker_pickle(outside)
        _write(package, "model/pyfunc.json", spec)
        _write(package, "model/model.pkl", data)
        if listed:
            manifest["artifacts"] += [_entry("model/pyfunc.json", spec), _entry("model/model.pkl", data)]
    return edit


def plant_skops_function(listed: bool) -> Edit:
    """A skops file whose FunctionTransformer holds os.mkdir: loading needs trust for posix.mkdir."""
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        model = make_pipeline(FunctionTransformer(os.mkdir))
        data = sio.dumps(model)
        _write(package, "model/model.skops", data)
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("path") != "model/model.skops"]
        if listed:
            manifest["artifacts"].append(_entry("model/model.skops", data))
        manifest["trust"] = {"required": True, "types": sio.get_untrusted_types(data=data), "granted_by": "x",
                             "granted_at": "now"}
    return edit


def symlink(name: str, kind: str, listed: bool) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        data = _marker_pickle(outside)
        target = outside / f"link-target-{kind}"
        if kind == "dir":
            target.mkdir(exist_ok=True)
            for child in ("model.pkl", "model.skops"):
                (target / child).write_bytes(data)
        else:
            target.write_bytes(data)
        path = package / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target, target_is_directory=kind == "dir")
        if listed and kind == "file":
            manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("path") != name]
            manifest["artifacts"].append(_entry(name, data))
    return edit


def remove(name: str) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        path = package / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return edit


def rename(src: str, dst: str) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        if (package / src).is_file():
            (package / dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(package / src, package / dst)
            for a in manifest["artifacts"]:
                if a.get("path") == src:
                    a["path"] = dst
    return edit


def set_field(path: tuple[str, ...], value: Any) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        node: Any = manifest
        for key in path[:-1]:
            if not isinstance(node, dict):
                return
            node = node.setdefault(key, {})
        if isinstance(node, dict):
            node[path[-1]] = value
    return edit


def artefact_list(change: str, path: str) -> Edit:
    def edit(package: Path, outside: Path, manifest: dict[str, Any]) -> None:
        arts = manifest["artifacts"]
        if change == "drop":
            manifest["artifacts"] = [a for a in arts if a.get("path") != path]
        elif change == "duplicate" and arts:
            arts.append(dict(arts[0]))
        elif change == "add-wrong-hash":
            arts.append({"path": path, "sha256": "0" * 64, "size": 1})
        elif change == "clear":
            manifest["artifacts"] = []
        elif change == "rehash" and (package / path).is_file() and not (package / path).is_symlink():
            data = (package / path).read_bytes()
            manifest["artifacts"] = [a for a in arts if a.get("path") != path] + [_entry(path, data)]
    return edit


names = st.sampled_from(["model/model.skops", "model/model.pkl", "golden.json", "profile.json", "model",
                         "model/pyfunc.json", "../outside", "/etc/passwd", "model/../golden.json", "."])
edits: st.SearchStrategy[Edit] = st.one_of(
    st.builds(plant_pickle, st.sampled_from(PICKLE_NAMES), st.booleans()),
    st.builds(plant_pyfunc, st.booleans()),
    st.builds(plant_skops_function, st.booleans()),
    st.builds(symlink, st.sampled_from(["model/model.pkl", "model/model.skops", "model", "golden.json",
                                        "model/sub/link"]), st.sampled_from(["file", "dir"]), st.booleans()),
    st.builds(remove, st.sampled_from(["model/model.skops", "golden.json", "profile.json", "model", MANIFEST])),
    st.builds(rename, st.sampled_from(["model/model.skops", "golden.json"]),
              st.sampled_from(["model/model.pkl", "model/other.skops", "model/code/model.skops"])),
    st.builds(set_field, st.just(("runtime", "name")),
              st.sampled_from(["pickle", "pyfunc", "sklearn", "lightgbm", "xgboost", "onnx", "nope", ""])),
    st.builds(set_field, st.just(("runtime", "api_version")), st.sampled_from([1, 2, -1, "1"])),
    st.builds(set_field, st.just(("runtime", "info")), json_values),
    st.builds(set_field, st.just(("runtime", "info", "trusted_types")),
              st.lists(st.sampled_from(["builtins.eval", "posix.system", "posix.mkdir", "__main__.Marker"]))),
    st.builds(set_field, st.just(("trust",)), st.fixed_dictionaries({
        "required": st.booleans(), "types": st.lists(st.sampled_from(["*", "builtins.eval", "pickle"]), max_size=2),
        "granted_by": st.none() | st.just("root"), "granted_at": st.none()})),
    st.builds(set_field, st.just(("description",)), st.text(max_size=20)),
    st.builds(artefact_list, st.sampled_from(["drop", "duplicate", "add-wrong-hash", "clear", "rehash"]), names),
)


def _apply(package: Path, outside: Path, chosen: list[Edit]) -> None:
    path = package / MANIFEST
    manifest: dict[str, Any] = orjson.loads(path.read_bytes()) if path.is_file() else {}
    for edit in chosen:
        try:
            edit(package, outside, manifest)
        except OSError:  # not applicable after an earlier edit (e.g. a path under what is now a link to a file)
            continue
    if manifest and not (package / MANIFEST).is_symlink() and (package / MANIFEST).exists():
        path.write_bytes(orjson.dumps(manifest))


def _settles(action: Callable[[], Any]) -> Any:
    """The action's result, or None after a one-line ShipmlError; any other exception fails the property."""
    message: str | None = None
    try:
        return action()
    except ShipmlError as exc:
        message = str(exc)
    assert message and "\n" not in message, message
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(edits, min_size=1, max_size=4))
def test_no_edit_runs_a_planted_pickle(base: tuple[Path, str], chosen: list[Edit]) -> None:
    source, digest = base
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        package, outside = work / "pkg", work / "outside"
        outside.mkdir()
        shutil.copytree(source, package)
        _apply(package, outside, chosen)

        loaded = _settles(lambda: shipml.load_model(package))
        if loaded is not None:  # it loaded, so its golden sample reproduced; check it again for the record
            assert isinstance(loaded, LoadedModel)
            loaded.verify_golden()
        assert not (outside / "marker").exists()

        version = _settles(lambda: shipml.Registry(work / "reg").add_package(package, "imported"))
        if version is not None:
            _settles(lambda: load_package(version.path, manifest_sha256=manifest_digest(
                (version.path / MANIFEST).read_bytes())).verify_golden())
        assert not (outside / "marker").exists()

        sealed = _settles(lambda: load_package(package, manifest_sha256=digest))
        if sealed is not None:  # only when no edit changed anything that is checked
            sealed.verify_golden()
        assert not (outside / "marker").exists()
