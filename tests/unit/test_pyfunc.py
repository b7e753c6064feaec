"""Custom Python models (``PythonModel``): saved with their source and files, loaded from the package's own
code in fresh processes where the original module cannot be imported. Real files, real subprocesses."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import shipml
from shipml import runtimes
from shipml.errors import UnsafeModelError, UnsupportedModelError
from shipml.runtimes.pyfunc import PythonModel

MODEL_SOURCE = '''
from pathlib import Path

import numpy as np
import pandas as pd

import featurize
from shipml.runtimes.pyfunc import PythonModel


class Scorer(PythonModel):
    def load(self, artifacts: Path) -> None:
        self.weights = np.loadtxt(artifacts / "weights")
        self.bias = float((artifacts / "config" / "bias.txt").read_text())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return featurize.features(X) @ self.weights + self.bias
'''
FEATURIZE_SOURCE = '''
import numpy as np


def features(X):
    return np.column_stack([X["a"].to_numpy(dtype=float), X["b"].to_numpy(dtype=float) ** 2])
'''
DECOY_SOURCE = 'raise RuntimeError("the decoy module on sys.path was imported")\n'

LOAD_SCRIPT = '''
import json, sys
import pandas as pd
import shipml

model = shipml.load_model(sys.argv[1], registry=sys.argv[2])
X = pd.read_parquet(sys.argv[3])
module = sys.modules.get(sys.argv[4])
print(json.dumps({"predictions": model.predict(X).tolist(),
                  "module_file": getattr(module, "__file__", None),
                  "runtime": model.manifest.runtime.name}))
'''


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})


@pytest.fixture
def forget_modules() -> Iterator[list[str]]:
    """Names of modules a test imports from tmp_path, removed from sys.modules afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def _artifacts(directory: Path) -> dict[str, str]:
    """The scorer's files, laid out in ``directory`` as ``load`` will find them in the package."""
    directory.mkdir(parents=True)
    np.savetxt(directory / "weights", [1.5, -2.0])
    _write(directory / "config" / "bias.txt", "0.25")
    return {"weights": str(directory / "weights"), "config": str(directory / "config")}


def _run_load(ref: str, registry: Path, X: pd.DataFrame, module: str, cwd: Path,
              pythonpath: Path | None = None) -> dict[str, object]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    sample = cwd / "sample.parquet"
    X.to_parquet(sample)
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, ref, str(registry), str(sample), module],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_pyfunc_without_trust_is_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    class Constant(PythonModel):
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.zeros(len(X))

    with pytest.raises(UnsafeModelError, match=r"trusted=True") as info:
        shipml.save_model(Constant(), "m", sample=frame, registry=tmp_path / "reg")
    assert info.value.unsafe_types == [f"{__name__}.{Constant.__qualname__}"]
    assert not (tmp_path / "reg" / "models").exists()


def test_detection_picks_pyfunc_for_a_python_model() -> None:
    class Constant(PythonModel):
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.zeros(len(X))

    assert runtimes.detect(Constant(), trusted=True).name == "pyfunc"
    assert runtimes.detect(Constant(), trusted=False).name == "pyfunc"  # its save then asks for trust


def test_round_trip_in_a_fresh_process_without_the_original_module(
        tmp_path: Path, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]) -> None:
    src = tmp_path / "project"
    _write(src / "scoring_model.py", MODEL_SOURCE)
    _write(src / "featurize.py", FEATURIZE_SOURCE)
    forget_modules += ["scoring_model", "featurize"]
    monkeypatch.syspath_prepend(str(src))
    module = importlib.import_module("scoring_model")
    model = module.Scorer()
    artifacts = _artifacts(tmp_path / "files")
    model.load(tmp_path / "files")
    expected = model.predict(frame)

    registry = tmp_path / "reg"
    mv = shipml.save_model(model, "scorer", sample=frame, trusted=True, registry=registry,
                           runtime_options={"artifacts": artifacts, "code_paths": [str(src / "featurize.py")]})
    manifest = mv.manifest
    assert manifest.runtime.name == "pyfunc"
    assert manifest.runtime.info["mode"] == "source"
    assert manifest.trust.required
    assert manifest.trust.types == ["scoring_model.Scorer"]
    spec = json.loads((mv.path / "model" / "pyfunc.json").read_text())
    assert (spec["module"], spec["class"]) == ("scoring_model", "Scorer")
    stored = {a.path for a in manifest.artifacts}
    assert {"model/code/scoring_model.py", "model/code/featurize.py", "model/artifacts/weights",
            "model/artifacts/config/bias.txt"} <= stored

    # A fresh process, elsewhere, with a decoy module of the same name first on sys.path.
    decoy = _write(tmp_path / "decoy" / "scoring_model.py", DECOY_SOURCE).parent
    result = _run_load(mv.ref, registry, frame, "scoring_model", tmp_path / "elsewhere", pythonpath=decoy)
    assert result["runtime"] == "pyfunc"
    np.testing.assert_allclose(np.asarray(result["predictions"]), expected, rtol=1e-12)
    assert str(result["module_file"]).startswith(str(mv.path / "model" / "code"))
    assert not list(mv.path.rglob("__pycache__"))  # nothing written into the immutable package


def test_loading_ignores_an_imported_module_of_the_same_name(
        tmp_path: Path, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]) -> None:
    src = tmp_path / "v1"
    _write(src / "samename.py", """
        import numpy as np
        from shipml.runtimes.pyfunc import PythonModel

        class Model(PythonModel):
            def predict(self, X):
                return np.full(len(X), 1.0)
    """)
    forget_modules.append("samename")
    monkeypatch.syspath_prepend(str(src))
    mv = shipml.save_model(importlib.import_module("samename").Model(), "m", sample=frame, trusted=True,
                           registry=tmp_path / "reg")
    # another module called samename is now the imported one
    sys.modules.pop("samename")
    other = _write(tmp_path / "v2" / "samename.py", """
        import numpy as np
        from shipml.runtimes.pyfunc import PythonModel

        class Model(PythonModel):
            def predict(self, X):
                return np.full(len(X), 2.0)
    """)
    monkeypatch.syspath_prepend(str(other.parent))
    importlib.invalidate_caches()
    imported = importlib.import_module("samename")
    assert imported.__file__ == str(other)

    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    np.testing.assert_array_equal(loaded.predict(frame), np.full(len(frame), 1.0))
    assert sys.modules["samename"] is imported  # the user's own module is back in place
    assert str(tmp_path / "reg") not in " ".join(sys.path)


def test_class_in_a_package_keeps_its_relative_imports(tmp_path: Path, frame: pd.DataFrame,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        forget_modules: list[str]) -> None:
    src = tmp_path / "project"
    _write(src / "mypkg" / "__init__.py", "")
    _write(src / "mypkg" / "helpers.py", "def double(v):\n    return v * 2.0\n")
    _write(src / "mypkg" / "models.py", """
        from shipml.runtimes.pyfunc import PythonModel

        from .helpers import double

        class Doubler(PythonModel):
            def predict(self, X):
                return double(X["a"].to_numpy())
    """)
    forget_modules += ["mypkg", "mypkg.helpers", "mypkg.models"]
    monkeypatch.syspath_prepend(str(src))
    model = importlib.import_module("mypkg.models").Doubler()
    mv = shipml.save_model(model, "doubler", sample=frame, trusted=True, registry=tmp_path / "reg")
    assert {"model/code/mypkg/__init__.py", "model/code/mypkg/helpers.py", "model/code/mypkg/models.py"} \
        <= {a.path for a in mv.manifest.artifacts}
    result = _run_load(mv.ref, tmp_path / "reg", frame, "mypkg.models", tmp_path / "elsewhere")
    np.testing.assert_allclose(np.asarray(result["predictions"]), frame["a"].to_numpy() * 2.0)


def test_class_defined_in_main_is_pickled_by_value(tmp_path: Path, frame: pd.DataFrame) -> None:
    script = _write(tmp_path / "notebook.py", """
        import sys
        from pathlib import Path

        import numpy as np
        import pandas as pd
        import shipml
        from shipml.runtimes.pyfunc import PythonModel

        class Offset(PythonModel):
            def load(self, artifacts: Path) -> None:
                self.offset = float((artifacts / "offset").read_text())

            def predict(self, X: pd.DataFrame) -> np.ndarray:
                return X["a"].to_numpy() + self.offset

        X = pd.read_parquet(sys.argv[2])
        Path(sys.argv[3]).write_text("3.5")
        mv = shipml.save_model(Offset(), "offset", sample=X, trusted=True, registry=sys.argv[1],
                               runtime_options={"artifacts": {"offset": sys.argv[3]}})
        print(mv.manifest.runtime.info["mode"])
    """)
    frame.to_parquet(tmp_path / "sample.parquet")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "reg"), str(tmp_path / "sample.parquet"),
                           str(tmp_path / "offset.txt")], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cloudpickle"
    script.unlink()
    result = _run_load("offset", tmp_path / "reg", frame, "__main__", tmp_path / "elsewhere")
    np.testing.assert_allclose(np.asarray(result["predictions"]), frame["a"].to_numpy() + 3.5)


def test_local_class_round_trips_in_process(tmp_path: Path, frame: pd.DataFrame) -> None:
    class Negate(PythonModel):
        classes = ["neg", "pos"]  # noqa: RUF012 - the documented way to declare a PythonModel's classes

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            p = (X["a"].to_numpy() > 0).astype(float)
            return np.column_stack([1.0 - p, p])

        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.where(X["a"].to_numpy() > 0, "pos", "neg")

    mv = shipml.save_model(Negate(), "neg", sample=frame, trusted=True, registry=tmp_path / "reg")
    assert mv.manifest.runtime.info["mode"] == "cloudpickle"
    loaded = shipml.load_model(mv.ref, registry=tmp_path / "reg")
    assert loaded.classes == ["neg", "pos"]
    assert loaded.signature.outputs.task == "classification"
    np.testing.assert_array_equal(loaded.predict(frame), Negate().predict(frame))


def test_constructor_with_arguments_is_refused(tmp_path: Path, frame: pd.DataFrame,
                                               monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]) -> None:
    _write(tmp_path / "src" / "needsargs.py", """
        from shipml.runtimes.pyfunc import PythonModel

        class Model(PythonModel):
            def __init__(self, k):
                self.k = k

            def predict(self, X):
                return X["a"].to_numpy() * self.k
    """)
    forget_modules.append("needsargs")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    model = importlib.import_module("needsargs").Model(2)
    with pytest.raises(UnsupportedModelError, match="without arguments"):
        shipml.save_model(model, "m", sample=frame, trusted=True, registry=tmp_path / "reg")


def test_unknown_runtime_option_and_bad_artifact_name(tmp_path: Path, frame: pd.DataFrame) -> None:
    class Constant(PythonModel):
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.zeros(len(X))

    with pytest.raises(UnsupportedModelError, match="code_path"):
        shipml.save_model(Constant(), "m", sample=frame, trusted=True, registry=tmp_path / "reg",
                          runtime_options={"code_path": []})
    (tmp_path / "w").write_text("1")
    with pytest.raises(UnsupportedModelError, match="plain file name"):
        shipml.save_model(Constant(), "m", sample=frame, trusted=True, registry=tmp_path / "reg",
                          runtime_options={"artifacts": {"../w": str(tmp_path / "w")}})
