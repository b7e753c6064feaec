"""The compiled LightGBM predictor (lleaves): same predictions as the Booster, a cache it can trust, and a
runtime that switches to it only when it is proven equal. Tiny real models, compiled for real."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from shipml.errors import ShipmlError, UnsupportedModelError
from shipml.package.artefacts import fresh
from shipml.runtimes import lightgbm_compiled as lc
from shipml.runtimes.base import Grant
from shipml.runtimes.lightgbm import RUNTIME, LightGBMLoaded

N_FEATURES = 4


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test compiles into its own cache, never the user's."""
    monkeypatch.setenv("SHIPML_COMPILE_CACHE", str(tmp_path / "compiled"))
    return tmp_path / "compiled"


def _features(rng: np.random.Generator, n: int, nan: float = 0.0, zero: float = 0.0) -> np.ndarray:
    X = rng.normal(size=(n, N_FEATURES))
    X[rng.random(X.shape) < zero] = 0.0
    X[rng.random(X.shape) < nan] = np.nan
    return X


def _train(directory: Path, name: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray, rounds: int = 30,
           **dataset: Any) -> Path:
    booster = lgb.train({"num_leaves": 7, "verbose": -1, **params}, lgb.Dataset(X, y, **dataset), rounds)
    path = directory / f"{name}.txt"
    booster.save_model(str(path))
    return path


def _binary_with_missing(d: Path) -> Path:
    rng = np.random.default_rng(0)
    X = _features(rng, 600, nan=0.15)
    y = (np.nan_to_num(X[:, 0], nan=1.0) + X[:, 1] > 0).astype(int)  # NaN in x0 carries signal
    return _train(d, "binary", {"objective": "binary"}, X, y)


def _multiclass(d: Path) -> Path:
    rng = np.random.default_rng(1)
    X = _features(rng, 600, nan=0.05)
    y = (X[:, 0] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    return _train(d, "multiclass", {"objective": "multiclass", "num_class": 3}, X, y, rounds=20)


def _regression(d: Path) -> Path:
    rng = np.random.default_rng(2)
    X = _features(rng, 600)
    return _train(d, "regression", {"objective": "regression"}, X, 3 * X[:, 0] + X[:, 3] ** 2)


def _zero_as_missing(d: Path) -> Path:
    rng = np.random.default_rng(3)
    X = _features(rng, 600, zero=0.25)
    y = ((X[:, 0] > 0.1) | (X[:, 1] == 0)).astype(int)
    return _train(d, "zero", {"objective": "binary", "zero_as_missing": True}, X, y)


def _categorical(d: Path) -> Path:
    rng = np.random.default_rng(4)
    X = _features(rng, 600, nan=0.05)
    X[:, 3] = rng.integers(0, 8, len(X))
    y = ((X[:, 3] == 2) | (X[:, 3] == 5) | (X[:, 0] > 1)).astype(int)
    return _train(d, "categorical", {"objective": "binary"}, X, y, categorical_feature=[3])


SPECIALS = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, 1e-35, 2e-35, 1e6, -1e6, np.inf, -np.inf, -1.0, 7.9, 31.0,
                     32.0, 1e10])


def _queries(seed: int = 9) -> np.ndarray:
    """Rows a server may see: NaN, zeros, tiny values, out-of-range values, infinities, odd categories."""
    rng = np.random.default_rng(seed)
    X = _features(rng, 400, nan=0.15, zero=0.1) * 3
    X[: len(SPECIALS)] = SPECIALS[:, None]
    sprinkled = rng.random(X.shape) < 0.05
    X[sprinkled] = rng.choice(SPECIALS, size=int(sprinkled.sum()))
    return X


@pytest.mark.parametrize("make", [_binary_with_missing, _multiclass, _regression, _zero_as_missing, _categorical],
                         ids=lambda f: f.__name__.strip("_"))
def test_compiled_predicts_what_the_booster_predicts(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    model_file = make(tmp_path)
    lc.compile_to_cache(model_file)
    compiled = lc.load_cached(model_file)
    assert compiled is not None
    booster = lgb.Booster(model_file=str(model_file))
    X = _queries()
    expected, got = booster.predict(X), compiled.predict(X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(compiled.predict(X[:1]), booster.predict(X[:1]), rtol=1e-9, atol=1e-12)
    assert compiled.num_feature == N_FEATURES


def test_zero_as_missing_model_gets_tiny_values_right(tmp_path: Path) -> None:
    """LightGBM counts |x| <= 1e-35 as zero (missing); lleaves alone would only count 0.0."""
    model_file = _zero_as_missing(tmp_path)
    lc.compile_to_cache(model_file)
    compiled = lc.load_cached(model_file)
    assert compiled is not None
    tiny = np.array([0.0, 1e-36, -1e-36, 1e-300, 1e-35, 2e-35, np.nan])
    X = np.column_stack([tiny] * N_FEATURES)
    before = X.copy()
    np.testing.assert_allclose(compiled.predict(X), lgb.Booster(model_file=str(model_file)).predict(X), rtol=1e-9)
    np.testing.assert_array_equal(X, before)  # the caller's rows stay as they were


def test_the_cache_is_reused_private_and_written_atomically(tmp_path: Path, cache: Path) -> None:
    model_file = _binary_with_missing(tmp_path)
    dead, live = cache / ".compiling-dead", cache / ".compiling-live"  # a killed compile's, a running one's
    cache.mkdir(mode=0o700)
    for work in (dead, live):
        work.mkdir(mode=0o700)
        (work / "model.txt").write_text("tree")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    obj = lc.compile_to_cache(model_file)
    assert obj.parent == cache
    assert obj.name == f"{lc.cache_key(model_file.read_bytes())}.so"
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert obj.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in cache.iterdir()) == [live.name, obj.name]  # no temp files of its own left
    shutil.rmtree(live)
    before = obj.stat()
    assert lc.compile_to_cache(model_file) == obj  # compiled already: kept
    assert lc.load_cached(model_file) is not None
    assert lc.load_cached(model_file) is not None
    after = obj.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in cache.iterdir()) == [obj.name]


def test_load_cached_never_compiles(tmp_path: Path, cache: Path) -> None:
    model_file = _regression(tmp_path)
    assert lc.load_cached(model_file) is None
    assert list(cache.iterdir()) == []


def test_the_key_follows_the_model_text(tmp_path: Path) -> None:
    first, second = _binary_with_missing(tmp_path), _regression(tmp_path)
    text = first.read_bytes()
    assert lc.cache_key(text) == lc.cache_key(text)
    assert lc.cache_key(text) != lc.cache_key(text.replace(b"sigmoid:1", b"sigmoid:2"))
    assert lc.cache_key(text) != lc.cache_key(second.read_bytes())
    lc.compile_to_cache(first)
    assert lc.load_cached(second) is None


def test_a_library_others_may_write_is_not_loaded(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    model_file = _binary_with_missing(tmp_path)
    obj = lc.compile_to_cache(model_file)
    obj.chmod(0o666)
    with caplog.at_level(logging.WARNING, "shipml.runtimes.lightgbm_compiled"):
        assert lc.load_cached(model_file) is None
    assert obj.name in caplog.text and "writable by others" in caplog.text
    assert lc.compile_to_cache(model_file) == obj  # an untrusted library is compiled afresh
    assert obj.stat().st_mode & 0o777 == 0o600
    assert lc.load_cached(model_file) is not None


def test_a_symlinked_library_is_not_loaded(tmp_path: Path) -> None:
    model_file = _binary_with_missing(tmp_path)
    obj = lc.compile_to_cache(model_file)
    elsewhere = tmp_path / "elsewhere.so"
    obj.rename(elsewhere)
    obj.symlink_to(elsewhere)
    assert lc.load_cached(model_file) is None


def test_a_cache_directory_others_may_write_is_not_used(tmp_path: Path, cache: Path) -> None:
    model_file = _binary_with_missing(tmp_path)
    lc.compile_to_cache(model_file)
    cache.chmod(0o777)
    try:
        assert lc.load_cached(model_file) is None
        with pytest.raises(ShipmlError, match="writable by others"):
            lc.compile_to_cache(model_file)
    finally:
        cache.chmod(0o700)


def test_an_explicit_cache_directory(tmp_path: Path) -> None:
    model_file = _regression(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "cache"
    obj = lc.compile_to_cache(model_file, cache=elsewhere)
    assert obj.parent == elsewhere
    assert lc.load_cached(model_file) is None  # not in the default cache
    assert lc.load_cached(model_file, cache=elsewhere) is not None


@pytest.mark.parametrize(("params", "reason"), [
    ({"objective": "multiclassova", "num_class": 3}, "objective 'multiclassova'"),
    ({"objective": "regression", "linear_tree": True}, "linear trees"),
    ({"objective": "multiclass", "num_class": 3, "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.5},
     "multiclass random forest"),
], ids=["multiclassova", "linear-tree", "multiclass-rf"])
def test_models_lleaves_gets_wrong_are_refused(tmp_path: Path, cache: Path, params: dict[str, Any],
                                              reason: str) -> None:
    X = _features(np.random.default_rng(5), 300)
    model_file = _train(tmp_path, "m", params, X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5), rounds=5)
    with pytest.raises(UnsupportedModelError, match=reason):
        lc.compile_to_cache(model_file)
    with pytest.raises(UnsupportedModelError, match=reason):
        lc.load_cached(model_file)
    assert list(cache.glob("*")) == []


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a model\n")
    with pytest.raises(UnsupportedModelError, match=r"notes\.txt is not a LightGBM text model"):
        lc.compile_to_cache(path)


def _runtime(directory: Path, model_file: Path, info: dict[str, Any]) -> LightGBMLoaded:
    (directory / "model").mkdir(parents=True)
    (directory / "model" / "model.txt").write_bytes(model_file.read_bytes())
    return RUNTIME.load(fresh(directory, "test").model_view(),
                        {"objective": "binary", "pandas_categorical": False, **info}, Grant())


def test_the_runtime_switches_only_to_an_equal_compiled_model(tmp_path: Path) -> None:
    model_file = _binary_with_missing(tmp_path)
    loaded = _runtime(tmp_path / "pkg", model_file, {"kind": "classifier", "classes": [0, 1]})
    X = _queries(seed=11)
    before = loaded.predict_proba(X)
    assert before is not None
    assert not loaded.compiled

    other_file = _zero_as_missing(tmp_path)  # same width, other trees
    lc.compile_to_cache(other_file)
    other = lc.load_cached(other_file)
    assert other is not None
    assert not loaded.use_compiled(other, X)
    assert not loaded.compiled
    np.testing.assert_array_equal(loaded.predict_proba(X), before)  # still the Booster, bit for bit

    lc.compile_to_cache(model_file)
    compiled = lc.load_cached(model_file)
    assert compiled is not None
    assert not loaded.use_compiled(compiled, X[:0])  # no rows prove nothing
    assert loaded.use_compiled(compiled, X)
    assert loaded.compiled
    np.testing.assert_allclose(loaded.predict_proba(X), before, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(loaded.predict(X), before.argmax(axis=1))
    assert loaded.booster is not None


def test_the_runtime_refuses_a_compiled_model_for_frame_input(tmp_path: Path) -> None:
    model_file = _regression(tmp_path)
    loaded = _runtime(tmp_path / "pkg", model_file, {"kind": "regressor", "pandas_categorical": True})
    lc.compile_to_cache(model_file)
    compiled = lc.load_cached(model_file)
    assert compiled is not None
    assert not loaded.use_compiled(compiled, _queries())
    assert not loaded.compiled


def _entry_point(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipml.runtimes.lightgbm_compiled", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_entry_point_compiles_and_prints_the_library_path(tmp_path: Path, cache: Path) -> None:
    model_file = _regression(tmp_path)
    done = _entry_point(str(model_file))
    assert done.returncode == 0, done.stderr
    obj = Path(done.stdout.strip())
    assert obj.parent == cache and obj.is_file()
    assert lc.load_cached(model_file) is not None  # what the subprocess wrote, this process loads


LOAD_WITHOUT_LLVM = """
import sys
import time
import numpy as np
from pathlib import Path
from shipml.runtimes import lightgbm_compiled as lc
assert lc.available()
compiled = lc.load_cached(Path(sys.argv[1]))
assert compiled is not None
compiled.predict(np.zeros((3, compiled.num_feature)))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("llvmlite", "lleaves", "pandas")))
"""


def test_loading_and_predicting_never_import_llvm(tmp_path: Path, cache: Path) -> None:
    """A server loads the library with ctypes: LLVM (~90 MB resident) and lleaves stay in the compiling process."""
    model_file = _regression(tmp_path)
    lc.compile_to_cache(model_file)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_LLVM, str(model_file)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_entry_point_fails_with_one_line(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a model\n")
    done = _entry_point(str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: notes.txt is not a LightGBM text model")
    assert _entry_point(str(tmp_path / "missing.txt")).returncode == 1
