"""A LightGBM model as a native shared library with a C header, for devices that run no Python at all.

The library is the one the server already builds (lleaves, ``shipml.runtimes.lightgbm_compiled``): the trees
compiled to machine code for this CPU, computing in 64-bit floats. It is exported only when it gives the
registered model's outputs on the golden sample and on rows drawn across every input's range (within
:data:`ATOL`; both compute in doubles). The directory::

    model.so       the library: void forest_root(double *rows, double *out, int32_t start, int32_t end)
    model.h        the C header: sizes, feature order, class order, and shipml_predict(), which does what
                   LightGBM does before the trees (zero-as-missing) and zeroes the output the trees add into
    model.json     signature, classes and what each output is
    golden.json    golden rows (row-major, NaN for missing) and the outputs they must give
    manifest.json  source model, parity, and the sha256 of every other file

The library runs on CPUs with this machine's instruction set (its flags are recorded in model.json).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shipml.errors import UnsupportedModelError
from shipml.export.bundle import check_destination
from shipml.export.parity import DRAWN_ROWS, ParityError, drawn_records, golden_records
from shipml.export.runner import sha256_bytes
from shipml.package.loaded import PERMISSIVE, LoadedModel
from shipml.package.manifest import MODEL_DIR

ATOL = 1e-9
SHOWN_ROWS = 10


@dataclass
class CompiledResult:
    directory: Path
    size_bytes: int
    rows_compared: int
    max_diff: float
    num_outputs: int

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "family": "lightgbm", "size_bytes": self.size_bytes,
                "parity": {"rows": self.rows_compared, "max_diff": self.max_diff, "atol": ATOL},
                "num_outputs": self.num_outputs}


def _matrix(model: LoadedModel, records: list[dict[str, Any]]) -> np.ndarray:
    columns = {c.name: [r[c.name] for r in records] for c in model.signature.inputs}
    checked = model.check(columns, PERMISSIVE)
    checked.raise_for_errors()
    return np.ascontiguousarray(checked.table.matrix(), dtype=np.float64)


def _expected(model: LoadedModel, X: np.ndarray) -> np.ndarray:
    """What the library must write per row: P(class 1) for a binary model, each class's probability for a
    multiclass one, the value for a regressor, from the registered model itself."""
    result = model.infer(_table(model, X), proba=model.has_proba)
    if result.probabilities is None:
        return np.asarray(result.predictions, dtype=np.float64).reshape(len(X), -1)
    proba = np.asarray(result.probabilities, dtype=np.float64)
    return proba[:, 1:] if proba.shape[1] == 2 else proba


def _table(model: LoadedModel, X: np.ndarray) -> Any:
    from shipml.package.validation import Table

    return Table.from_matrix(X, model.signature.names)


def _header(model: LoadedModel, num_feature: int, outputs: int, zero_missing: tuple[int, ...]) -> str:
    guard = "SHIPML_MODEL_H"
    names = ", ".join(model.signature.names)
    classes = model.classes
    if classes is None:
        meaning = "the predicted value"
    elif outputs == 1:
        meaning = f"the probability of class {classes[1]!r} (class {classes[0]!r}: 1 - it)"
    else:
        meaning = "each class's probability, in class order: " + ", ".join(map(repr, classes))
    zero = ", ".join(map(str, zero_missing))
    flush = "" if not zero_missing else f"""
    static const int zero_missing[] = {{{zero}}};
    for (int32_t i = 0; i < n; i++) {{
        for (size_t j = 0; j < sizeof zero_missing / sizeof zero_missing[0]; j++) {{
            double *v = &rows[(size_t)i * SHIPML_NUM_FEATURES + zero_missing[j]];
            if (fabs(*v) <= SHIPML_ZERO_THRESHOLD) *v = 0.0;  /* LightGBM counts |x| <= 1e-35 as zero */
        }}
    }}"""
    return f"""/* {model.ref}: a LightGBM model compiled to native code by lleaves (shipml export --format compiled).
 *
 * Inputs per row, in this order ({num_feature} doubles, NaN for a missing value): {names}
 * Outputs per row ({outputs} double(s)): {meaning}
 * Link with model.so and -lm. The library was compiled for this CPU's instruction set (see model.json).
 */
#ifndef {guard}
#define {guard}

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define SHIPML_NUM_FEATURES {num_feature}
#define SHIPML_NUM_OUTPUTS {outputs}
#define SHIPML_ZERO_THRESHOLD 1.0000000180025095e-35

/* The trees: add each row's raw scores into out and apply the objective's transform (rows [start, end)). */
void forest_root(double *rows, double *out, int32_t start, int32_t end);

/* Predict n rows: rows is row-major [n * SHIPML_NUM_FEATURES] (values LightGBM treats as zero are set to 0.0
 * in place), out receives [n * SHIPML_NUM_OUTPUTS]. */
static inline void shipml_predict(double *rows, double *out, int32_t n) {{
    for (size_t i = 0; i < (size_t)n * SHIPML_NUM_OUTPUTS; i++) out[i] = 0.0;{flush}
    forest_root(rows, out, 0, n);
}}

#endif /* {guard} */
"""


def export_compiled(model: LoadedModel, out: str | Path, *, rows: int = DRAWN_ROWS) -> CompiledResult:
    """Compile ``model`` (a LightGBM model on numeric inputs), prove its outputs equal the registered model's,
    and write the library, its header and its golden sample to ``out`` (a new or empty directory)."""
    from shipml.runtimes import lightgbm_compiled as lc
    from shipml.runtimes.lightgbm import FILE

    out = Path(out)
    check_destination(out)
    if model.manifest.runtime.name != "lightgbm":
        raise UnsupportedModelError(f"cannot export {model.ref} as a compiled library: its runtime is"
                                    f" {model.manifest.runtime.name!r}; the compiler (lleaves) takes LightGBM models")
    if model.runtime_model.input_format != "matrix":
        raise UnsupportedModelError(f"cannot export {model.ref} as a compiled library: it takes pandas categorical"
                                    " columns; the library takes a numeric matrix")
    if not lc.available():
        raise UnsupportedModelError("compiling needs lleaves, llvmlite<0.44 and a C compiler:"
                                    " pip install 'shipml[compiled]'")
    model_file = model.path / MODEL_DIR / FILE
    with tempfile.TemporaryDirectory(prefix="shipml-compile-") as cache_dir:
        cache = Path(cache_dir)
        cache.chmod(0o700)
        library_path = lc.compile_to_cache(model_file, cache=cache)
        compiled = lc.load_cached(model_file, cache=cache)
        if compiled is None:
            raise UnsupportedModelError(f"the compiled library of {model.ref} could not be loaded")
        golden = golden_records(model)
        X = _matrix(model, golden + drawn_records(model.signature.inputs, rows))
        want = _expected(model, X)
        got = compiled.predict(X).reshape(len(X), -1)
        _prove(model, X, want, got, len(golden))
        outputs = got.shape[1]
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            target = work / "bundle"
            target.mkdir()
            shutil.copyfile(library_path, target / "model.so")
            (target / "model.so").chmod(0o644)
            (target / "model.h").write_text(_header(model, compiled.num_feature, outputs,
                                                    compiled.zero_missing_columns), encoding="utf-8")
            gx = X[: len(golden)]
            (target / "golden.json").write_text(json.dumps({
                "rows": [[None if np.isnan(v) else float(v) for v in row] for row in gx],
                "outputs": want[: len(golden)].tolist(), "atol": ATOL}), encoding="utf-8")
            (target / "model.json").write_text(json.dumps({
                "source": model.ref, "features": model.signature.names, "classes": model.classes,
                "task": model.signature.outputs.task, "num_outputs": outputs,
                "objective": model.manifest.runtime.info.get("objective"),
                "zero_missing_columns": list(compiled.zero_missing_columns),
                "compiled_for": lc.compiler_facts(),
            }, indent=1), encoding="utf-8")
            diff = float(np.nanmax(np.abs(got - want))) if got.size else 0.0
            hashes = {p.name: sha256_bytes(p.read_bytes()) for p in sorted(target.iterdir())}
            (target / "manifest.json").write_text(json.dumps({
                "format": "shipml-compiled-library", "source": model.ref,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "parity": {"golden_rows": len(golden), "drawn_rows": rows, "max_diff": diff, "atol": ATOL},
                "files": hashes}, indent=1), encoding="utf-8")
            if out.exists():
                out.rmdir()
            os.replace(target, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir())
    return CompiledResult(out, size, len(X), diff, outputs)


def _prove(model: LoadedModel, X: np.ndarray, want: np.ndarray, got: np.ndarray, golden_rows: int) -> None:
    if got.shape != want.shape:
        raise ParityError(f"the compiled {model.ref} gives {got.shape[1]} output(s) per row, the model"
                          f" {want.shape[1]}; export refused")
    bad = np.flatnonzero(~np.isclose(got, want, rtol=0, atol=ATOL, equal_nan=True).all(axis=1))
    if len(bad):
        rows = [{"row": int(i), "source": "golden" if i < golden_rows else "drawn",
                 "record": dict(zip(model.signature.names, X[i].tolist(), strict=True)),
                 "registered": want[i].tolist(), "exported": got[i].tolist()} for i in bad[:SHOWN_ROWS]]
        raise ParityError(f"the compiled {model.ref} differs from it on {len(bad)} of {len(X)} rows (atol {ATOL});"
                          f" export refused. First: {rows[0]}", rows)
