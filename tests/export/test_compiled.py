"""The compiled-library export of a LightGBM model, called from a C program built here with the machine's C
compiler: it prints the registered model's outputs for the golden sample."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from shipml.errors import UnsupportedModelError
from shipml.export.compiled import ATOL, export_compiled

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

/* reads n, then n rows of SHIPML_NUM_FEATURES numbers ("nan" for missing) from stdin; prints each output */
int main(void) {
    int n;
    if (scanf("%d", &n) != 1) return 2;
    double *rows = malloc(sizeof(double) * (size_t)n * SHIPML_NUM_FEATURES);
    double *out = malloc(sizeof(double) * (size_t)n * SHIPML_NUM_OUTPUTS);
    for (int i = 0; i < n * SHIPML_NUM_FEATURES; i++) {
        char word[64];
        if (scanf("%63s", word) != 1) return 3;
        rows[i] = strtod(word, NULL);
    }
    shipml_predict(rows, out, n);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < SHIPML_NUM_OUTPUTS; j++) printf("%s%.17g", j ? " " : "", out[i * SHIPML_NUM_OUTPUTS + j]);
        printf("\n");
    }
    free(rows);
    free(out);
    return 0;
}
"""


def _build(directory: Path, tmp_path: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc is not None, "the machine's C compiler"
    (tmp_path / "main.c").write_text(PROGRAM)
    program = tmp_path / "predict"
    built = subprocess.run([gcc, "-O2", "-Wall", "-Werror", "-I", str(directory), str(tmp_path / "main.c"),
                            str(directory / "model.so"), f"-Wl,-rpath,{directory}", "-lm", "-o", str(program)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    return program


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lgb_binary", "lgb_multiclass", "lgb_regressor"])
def test_a_c_program_gives_the_registered_models_outputs(family_registry: shipml.Registry, tmp_path: Path,
                                                         name: str) -> None:
    model = family_registry.load(name)
    result = export_compiled(model, tmp_path / "lib", rows=500)
    assert result.max_diff <= ATOL and result.size_bytes > 0
    assert sorted(p.name for p in result.directory.iterdir()) == [
        "golden.json", "manifest.json", "model.h", "model.json", "model.so"]
    program = _build(result.directory, tmp_path)
    golden = model.golden()
    X = np.array([[np.nan if v is None else v for v in row] for row in zip(*golden["inputs"].values(), strict=True)],
                 dtype=np.float64)
    stdin = f"{len(X)}\n" + "\n".join(" ".join(repr(float(v)) for v in row) for row in X) + "\n"
    ran = subprocess.run([str(program)], input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    got = np.array([[float(v) for v in line.split()] for line in ran.stdout.splitlines()])
    if golden.get("probabilities") is not None:
        proba = np.asarray(golden["probabilities"], dtype=np.float64)
        want = proba[:, 1:] if proba.shape[1] == 2 else proba
        labels = np.asarray(model.classes, dtype=object)[np.argmax(proba, axis=1)]
        assert labels.tolist() == golden["predictions"]
    else:
        want = np.asarray(golden["predictions"], dtype=np.float64).reshape(-1, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"golden.json", "model.h", "model.json", "model.so"}


@pytest.mark.slow
def test_the_cli_exports_a_library(family_registry: shipml.Registry, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--registry", str(family_registry.root), "export", "lgb_binary",
                                      "--format", "compiled", "-o", str(tmp_path / "lib"), "--rows", "200"])
    assert result.exit_code == 0, result.output
    assert "compiled library" in result.output and "model.h" in result.output
    assert (tmp_path / "lib" / "model.so").is_file()


def test_only_lightgbm_compiles(family_registry: shipml.Registry, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="its runtime is 'xgboost'; the compiler"):
        export_compiled(family_registry.load("xgb_binary"), tmp_path / "lib")
    assert not (tmp_path / "lib").exists()
    result = CliRunner().invoke(cli, ["--registry", str(family_registry.root), "export", "lgb_binary",
                                      "--format", "compiled", "--quantize", "int8", "-o", str(tmp_path / "lib")])
    assert result.exit_code == 1 and "--quantize applies to --format onnx" in result.output
