"""Build a model package in a directory: artefacts in a safe format, golden sample, reference profile, and the
manifest describing them. The registry gives it a version and moves it into place atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from shipml import runtimes
from shipml.errors import SchemaError, ShipmlError, UnsafeModelError
from shipml.package import environment
from shipml.package.admit import trust_record
from shipml.package.artefacts import fresh, measure
from shipml.package.lineage import build_lineage
from shipml.package.loaded import PERMISSIVE, LoadedModel, Prediction
from shipml.package.manifest import (
    GOLDEN,
    MODEL_DIR,
    PROFILE,
    Artifact,
    GoldenInfo,
    ImportedFrom,
    Manifest,
    RuntimeInfo,
)
from shipml.package.profile import build_profile, categorical_profile, numeric_profile
from shipml.package.signature import Signature, as_frame, infer_inputs, infer_outputs, to_jsonable
from shipml.package.validation import check
from shipml.runtimes.base import Grant, SaveContext

GOLDEN_ROWS = 100
PLACEHOLDER_VERSION = "0.0.0"

#: The distribution whose major version must match at load time, per runtime.
FRAMEWORKS = {"sklearn": "scikit-learn", "lightgbm": "lightgbm", "xgboost": "xgboost", "onnx": "onnxruntime"}


@dataclass
class BuildOptions:
    target: Any = None
    trusted: bool = False
    metrics: dict[str, float] | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    runtime: str | None = None
    golden_rows: int = GOLDEN_ROWS
    rtol: float = 1e-5
    atol: float = 1e-6
    runtime_options: dict[str, Any] = field(default_factory=dict)
    imported_from: ImportedFrom | None = None  # set by shipml import: the lineage names the source, not the caller


def build_package(model: Any, directory: Path, name: str, sample: Any, options: BuildOptions) -> Manifest:
    """Write the package for ``model`` into ``directory`` (which must exist and be empty) and return its
    manifest (version still the placeholder; see :func:`write_manifest`)."""
    runtime = runtimes.get(options.runtime) if options.runtime else runtimes.detect(model, trusted=options.trusted)
    if runtime.name == "pickle" and not options.trusted:
        raise UnsafeModelError("the pickle runtime runs code when loading; pass trusted=True to use it")
    frame, input_kind = as_frame(sample)
    target = _check_target(options.target, len(frame))
    inputs = infer_inputs(frame)
    model_dir = directory / MODEL_DIR
    model_dir.mkdir()
    saved = runtime.save(model, model_dir, SaveContext(frame, input_kind, options.trusted, options.runtime_options))
    # Trust follows from the runtime and the bytes it wrote, not from what the runtime or the caller says.
    files = fresh(directory, name).model_view()
    need = runtime.trust_needed(files, sealed=True)
    if need.required and not options.trusted:
        raise UnsafeModelError(f"the model {need.describe()}. Pass trusted=True (CLI: --trust) if you trust it.",
                               list(need.types))
    loaded = runtime.load(files, saved.info, Grant(everything=options.trusted, sealed=True))

    # Run the saved-and-reloaded model on the whole sample: outputs spec, prediction profile, golden outputs.
    provisional = Signature(inputs=inputs, input_kind=input_kind,
                            outputs=infer_outputs(np.zeros(1), None, None, "other"))
    checked = check(frame, provisional, PERMISSIVE)
    X = checked.table.matrix() if loaded.input_format == "matrix" else checked.table.frame(provisional)
    try:
        predictions = np.asarray(loaded.predict(X))
        probabilities = loaded.predict_proba(X)
    except ShipmlError:
        raise
    except Exception as exc:
        raise SchemaError(f"the model failed to predict on its own sample after saving: "
                          f"{type(exc).__name__}: {exc}") from exc
    if len(predictions) != len(frame):
        raise SchemaError(f"the model returned {len(predictions)} predictions for {len(frame)} sample rows")
    classes = loaded.classes if probabilities is not None else None
    outputs = infer_outputs(predictions, probabilities, classes, saved.task)
    signature = Signature(inputs=inputs, input_kind=input_kind, outputs=outputs)

    rows = _golden_rows(len(frame), options.golden_rows)
    golden = {
        "inputs": {c.name: [to_jsonable(v) for v in frame[c.name].iloc[rows]] for c in inputs},
        "predictions": [to_jsonable(v) for v in _first_output(predictions)[rows]],
        "probabilities": probabilities[rows].tolist() if probabilities is not None else None,
    }
    (directory / GOLDEN).write_bytes(orjson.dumps(golden, option=orjson.OPT_SERIALIZE_NUMPY))
    profile = build_profile(frame, signature, predictions, probabilities)
    if target is not None:
        profile["target"] = (numeric_profile(target.to_numpy(dtype=np.float64, na_value=np.nan))
                             if outputs.task == "regression" else categorical_profile(target.to_numpy()))
    (directory / PROFILE).write_bytes(orjson.dumps(profile, option=orjson.OPT_INDENT_2))

    from shipml import __version__

    trust = trust_record(need, saved.trusted_types)
    manifest = Manifest(
        name=name,
        version=PLACEHOLDER_VERSION,
        description=options.description,
        tags={str(k): str(v) for k, v in (options.tags or {}).items()},
        runtime=RuntimeInfo(name=runtime.name, api_version=runtime.api_version, info=saved.info),
        artifacts=artifacts(directory),
        signature=signature,
        trust=trust,
        environment=environment.capture(saved.requirements, FRAMEWORKS.get(runtime.name)),
        golden=GoldenInfo(rows=len(rows), rtol=options.rtol, atol=options.atol),
        metrics={str(k): float(v) for k, v in (options.metrics or {}).items()},
        lineage=build_lineage(sample, options.target, len(frame), __version__, options.imported_from),
    )
    # Prove now, not at deploy time, that the package reproduces itself.
    LoadedModel(directory, manifest, loaded, []).verify_golden()
    return manifest


def artifacts(directory: Path) -> list[Artifact]:
    """Every file of the package but the manifest, with its sha256."""
    return measure(directory)


def _golden_rows(n: int, limit: int) -> np.ndarray:
    """Up to ``limit`` rows spread evenly over the sample (deterministic)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, max(limit, 1))).astype(int))


def _first_output(predictions: np.ndarray) -> np.ndarray:
    return predictions.reshape(len(predictions), -1)[:, 0] if predictions.ndim > 1 else predictions


def _check_target(target: Any, n: int) -> pd.Series | None:
    if target is None:
        return None
    series = target.iloc[:, 0] if isinstance(target, pd.DataFrame) else pd.Series(np.asarray(target).reshape(-1))
    if len(series) != n:
        raise SchemaError(f"target has {len(series)} rows but sample has {n}")
    return series.reset_index(drop=True)


__all__ = ["BuildOptions", "Prediction", "artifacts", "build_package"]
