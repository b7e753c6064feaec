"""A LightGBM model compiled to native code by lleaves: ~5x faster than ``Booster.predict`` on small batches.

Compiling takes seconds to minutes, so it happens once per model, CPU and compiler version, into a cache of
shared libraries (``compile_to_cache``, or ``python -m shipml.runtimes.lightgbm_compiled MODEL_TXT`` in a
separate, ``nice``d process): lleaves turns the trees into an object file with LLVM, and the system's C compiler
driver (``cc``) links it into a shared library. A server then loads the library with ctypes (``load_cached``:
fast, and without LLVM, which would add ~90 MB to the server's memory) and hands it to
``LightGBMLoaded.use_compiled``, which switches to it only when it predicts what the Booster predicts.

Loading a library runs its native code, so only files the current user wrote, in a directory only they can
write to, are loaded. The cache key covers the model text, the lleaves and llvmlite versions and the host CPU
(code compiled for another CPU may execute instructions this one lacks).

What lleaves compiles exactly: binary, multiclass, cross-entropy, regression (L2, L1, Huber, Fair, quantile, MAPE,
sqrt), Poisson, Gamma, Tweedie and ranking objectives; categorical splits; NaN and ``zero_as_missing`` (LightGBM
counts ``|x| <= 1e-35`` as zero and lleaves only 0.0, so those columns are flushed to 0.0 before predicting);
random-forest mode with one output. Refused: ``multiclassova``, custom objectives, linear trees, and random-forest
mode with several classes (lleaves averages only the first class), which lleaves would compile into wrong output.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shipml._optional import import_optional
from shipml.errors import DependencyError, SchemaError, ShipmlError, UnsupportedModelError

log = logging.getLogger("shipml.runtimes.lightgbm_compiled")

#: lleaves' compile options, spelled out so that the cache key covers them.
_COMPILE_OPTIONS: dict[str, Any] = {"fblocksize": 34, "fcodemodel": "large", "finline": True, "use_fp64": True}
_ENTRY = "forest_root"  # lleaves' entry point: void forest_root(double *rows, double *out, int32 start, int32 end)
_LINK_TIMEOUT_S = 600
_STALE_S = 3600.0  # a compile's work directory untouched this long belongs to a compile that died
_LLVMLITE_TOO_NEW = (0, 44)  # llvmlite 0.44 removed llvm.initialize(), which lleaves 1.3 calls
_ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold: |x| <= this is zero
_OBJECTIVES = frozenset({
    "binary", "multiclass", "cross_entropy", "xentropy", "cross_entropy_lambda", "xentlambda", "regression",
    "regression_l1", "huber", "fair", "quantile", "mape", "poisson", "gamma", "tweedie", "lambdarank", "rank_xendcg",
})


def _llvmlite_version() -> tuple[int, ...]:
    version = importlib.metadata.version("llvmlite")
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _lleaves() -> Any:
    """The lleaves module, or DependencyError when it or a compatible llvmlite is missing."""
    lleaves = import_optional("lleaves", "compiled")
    if _llvmlite_version() >= _LLVMLITE_TOO_NEW:
        raise DependencyError(f"lleaves needs llvmlite<0.44, this is {_versions()[1]}: pip install 'shipml[compiled]'")
    return lleaves


def _linker() -> str | None:
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def available() -> bool:
    """True when models can be compiled here: lleaves and an llvmlite it works with are installed, and a C
    compiler driver to link with. Imports neither (LLVM is only ever loaded by the compiling process)."""
    try:
        if importlib.util.find_spec("lleaves") is None or importlib.util.find_spec("llvmlite") is None:
            return False
        return _llvmlite_version() < _LLVMLITE_TOO_NEW and _linker() is not None
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return False


def _versions() -> tuple[str, str]:
    return importlib.metadata.version("lleaves"), importlib.metadata.version("llvmlite")


def compiler_facts() -> dict[str, str]:
    """What a compiled library depends on besides the model: lleaves and llvmlite versions, and the host CPU."""
    lleaves, llvmlite = _versions()
    return {"lleaves": lleaves, "llvmlite": llvmlite, "machine": platform.machine(), "cpu": _host_cpu()}


def _host_cpu() -> str:
    """This CPU's model and instruction-set flags, as the OS reports them (no LLVM needed)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    first = text.split("\n\n", 1)[0]
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU implementer", "CPU part")
    return "\n".join(line for line in first.splitlines() if line.split(":", 1)[0].strip() in wanted)


def cache_dir() -> Path:
    """``$SHIPML_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/shipml/compiled`` (default ``~/.cache``); created 0700."""
    configured = os.environ.get("SHIPML_COMPILE_CACHE")
    if configured:
        return _created(Path(configured))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative paths
    return _created(base / "shipml" / "compiled")


def _created(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def cache_key(model_text: bytes) -> str:
    """sha256 over the model text, the compiler (lleaves, llvmlite, options) and the host CPU."""
    digest = hashlib.sha256(model_text)
    for part in (*_versions(), repr(sorted(_COMPILE_OPTIONS.items())), platform.machine(), _host_cpu()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Facts:
    """What shipml reads from the model text itself (lleaves re-reads the file, and must agree)."""

    num_feature: int
    num_class: int
    zero_missing_columns: tuple[int, ...]


def _inspect(text: str, name: str) -> _Facts:
    """The facts of a LightGBM text model, or UnsupportedModelError when lleaves cannot compile it exactly."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[0] != "tree" or not lines[1].startswith("version="):
        raise UnsupportedModelError(f"{name} is not a LightGBM text model")
    header = dict(line.partition("=")[::2] for line in lines[: lines.index("") if "" in lines else len(lines)])
    try:
        num_feature, num_class = int(header["max_feature_idx"]) + 1, int(header["num_class"])
    except (KeyError, ValueError) as exc:
        raise UnsupportedModelError(f"{name} is not a LightGBM text model: no valid {exc}") from exc
    objective = header.get("objective", "").split(" ")[0]
    if not objective:
        raise UnsupportedModelError(f"{name} has no objective (trained with a custom one): lleaves needs it")
    if objective not in _OBJECTIVES:
        raise UnsupportedModelError(f"lleaves cannot compile objective {objective!r} ({name})")
    if "average_output" in header and num_class > 1:
        raise UnsupportedModelError(f"lleaves averages only the first class of a multiclass random forest ({name})")
    if "\nis_linear=1\n" in text:
        raise UnsupportedModelError(f"lleaves ignores the leaf models of linear trees ({name})")
    try:
        zero_missing = _zero_missing_columns(lines)
    except ValueError as exc:
        raise UnsupportedModelError(f"{name} has a malformed tree: {exc}") from exc
    return _Facts(num_feature, num_class, zero_missing)


def _zero_missing_columns(lines: list[str]) -> tuple[int, ...]:
    """The features split with missing type "zero" (``zero_as_missing``)."""
    columns: set[int] = set()
    features: list[str] = []
    for line in lines:
        if line.startswith("split_feature="):
            features = line[len("split_feature="):].split()
        elif line.startswith("decision_type="):
            types = line[len("decision_type="):].split()
            # bit 0: categorical; bits 2-3: missing type, 1 = zero
            columns.update(int(f) for f, t in zip(features, types, strict=True) if int(t) & 0b1101 == 0b0100)
        elif line == "end of trees":
            break
    return tuple(sorted(columns))


class CompiledLightGBM:
    """A compiled LightGBM model: ``predict`` returns what ``Booster.predict`` returns, in the calling thread
    (ctypes releases the GIL for the call)."""

    def __init__(self, library: ctypes.CDLL, facts: _Facts, path: Path) -> None:
        self._library = library  # keeps the library loaded
        self._entry = getattr(library, _ENTRY)
        self._entry.restype = None
        self._entry.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
        self._zero_missing = list(facts.zero_missing_columns)
        self.num_feature = facts.num_feature
        self.num_class = facts.num_class
        self.zero_missing_columns = facts.zero_missing_columns
        self.path = path

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of class 1 (n,) for binary, (n, k) for multiclass, values (n,) for regression."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_feature:
            raise SchemaError(f"input has shape {X.shape}, the model takes (rows, {self.num_feature})")
        n = X.shape[0]
        if n >= 2**31 - 1:  # the row range is passed as int32
            raise SchemaError(f"{n} rows in one call; at most {2**31 - 2}")
        if self._zero_missing:
            X = X.copy()
            part = X[:, self._zero_missing]
            X[:, self._zero_missing] = np.where(np.abs(part) <= _ZERO_THRESHOLD, 0.0, part)
        out = np.zeros(n if self.num_class == 1 else (n, self.num_class))  # the trees add into it
        if n:
            self._entry(X.ctypes.data, out.ctypes.data, 0, n)
        return out


def _read(model_file: Path) -> tuple[bytes, _Facts]:
    text = model_file.read_bytes()
    return text, _inspect(text.decode("utf-8", errors="replace"), model_file.name)


def _unsafe(st: os.stat_result, what: str) -> str | None:
    """Why a file or directory with this stat must not be trusted, or None."""
    if st.st_uid != os.getuid():
        return f"{what} belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _trust_problem(directory: Path, obj: Path) -> str | None:
    """Why ``obj`` must not be loaded. A directory only we can write to means nobody else can swap the file
    between this check and lleaves reading it."""
    dir_stat = directory.stat()
    if not stat.S_ISDIR(dir_stat.st_mode):
        return f"cache {directory} is not a directory"
    obj_stat = obj.lstat()
    if not stat.S_ISREG(obj_stat.st_mode):
        return f"{obj} is not a regular file"
    return _unsafe(dir_stat, f"cache directory {directory}") or _unsafe(obj_stat, str(obj))


def compile_to_cache(model_file: Path, *, cache: Path | None = None) -> Path:
    """Compile ``model_file`` into the cache (``<cache_key>.so``, mode 0600, written atomically) and return the
    library's path; one already there and trusted is kept. Takes seconds to minutes, much of it holding the GIL
    (lleaves builds the LLVM IR in Python): a server runs ``python -m shipml.runtimes.lightgbm_compiled``."""
    lleaves = _lleaves()
    linker = _linker()
    if linker is None:
        raise DependencyError("no C compiler driver (cc, gcc or clang) to link the compiled model with")
    model_file = Path(model_file)
    text, _ = _read(model_file)
    directory = _created(cache) if cache is not None else cache_dir()
    problem = _unsafe(directory.stat(), f"cache directory {directory}")
    if problem:
        raise ShipmlError(f"will not compile into {directory}: {problem}")
    target = directory / f"{cache_key(text)}.so"
    if target.exists() and _trust_problem(directory, target) is None:
        return target
    _sweep(directory)
    work = Path(tempfile.mkdtemp(prefix=".compiling-", dir=directory))  # 0700, same filesystem as target
    try:
        # compile the bytes that were hashed, not whatever the file holds by now
        (work / "model.txt").write_bytes(text)
        obj, library = work / "model.o", work / "model.so"
        try:
            lleaves.Model(model_file=str(work / "model.txt")).compile(cache=str(obj), **_COMPILE_OPTIONS)
        except Exception as exc:  # lleaves raises ValueError, AssertionError, RuntimeError at will
            reason = f"{type(exc).__name__}: {exc}"
            raise UnsupportedModelError(f"lleaves cannot compile {model_file.name}: {reason}") from exc
        if not obj.is_file():
            raise ShipmlError(f"lleaves wrote no object file for {model_file.name}")
        linked = subprocess.run([linker, "-shared", "-o", str(library), str(obj), "-lm"], capture_output=True,
                                text=True, timeout=_LINK_TIMEOUT_S, check=False)
        if linked.returncode != 0 or not library.is_file():
            why = (linked.stderr.strip().splitlines() or [f"exit code {linked.returncode}"])[-1]
            raise ShipmlError(f"linking the compiled {model_file.name} failed: {why[:300]}")
        library.chmod(0o600)
        os.replace(library, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _sweep(directory: Path, older_than_s: float = _STALE_S) -> None:
    """Remove the work directories of compiles that died (a killed process leaves its ``.compiling-*``
    behind): ours, not symlinks, untouched for ``older_than_s``. A live compile writes into its own within
    seconds to minutes."""
    cutoff = time.time() - older_than_s
    for entry in directory.glob(".compiling-*"):
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mtime < cutoff:
            log.info("removing %s, left by a compile that did not finish", entry)
            shutil.rmtree(entry, ignore_errors=True)


def load_cached(model_file: Path, *, cache: Path | None = None) -> CompiledLightGBM | None:
    """The compiled ``model_file`` when the cache holds a trusted library for it, else None (an untrusted one
    is logged). Never compiles, never loads LLVM; UnsupportedModelError when lleaves cannot compile this model."""
    model_file = Path(model_file)
    text, facts = _read(model_file)
    directory = _created(cache) if cache is not None else cache_dir()
    path = directory / f"{cache_key(text)}.so"
    if not path.exists():
        return None
    problem = _trust_problem(directory, path)
    if problem:
        log.warning("not loading compiled model %s: %s", path, problem)
        return None
    try:
        library = ctypes.CDLL(str(path))
        return CompiledLightGBM(library, facts, path)
    except (OSError, AttributeError) as exc:  # not a library, or not one of ours
        log.warning("not loading compiled model %s: %s", path, exc)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shipml.runtimes.lightgbm_compiled",
        description="Compile a LightGBM text model with lleaves into shipml's cache and print the library's path.")
    parser.add_argument("model_txt", type=Path, help="the model in LightGBM's text format")
    args = parser.parse_args(argv)
    try:
        print(compile_to_cache(args.model_txt))
    except (ShipmlError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
