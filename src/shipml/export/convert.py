"""A registered model converted to ONNX: scikit-learn with skl2onnx, LightGBM and XGBoost with onnxmltools.

Numbers go in as 32-bit floats (what the converters' tree and linear operators compute in), strings as string
tensors. A model that takes columns by name (a ColumnTransformer) or any string column gets one ``[n, 1]`` input
per signature column, named after it; any other model one ``[n, k]`` matrix named ``input``, columns in signature
order. What cannot be converted is refused before any converter runs where shipml can tell (a step no converter
knows, a FunctionTransformer with a function, datetime inputs, pandas categoricals), and otherwise with the
converter's reason on one line, naming the step it was converting.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shipml._optional import import_optional
from shipml.errors import UnsupportedModelError
from shipml.package.loaded import LoadedModel, one_line

#: The ONNX operator sets the bundle targets: onnxmltools converts trees up to opset 15; onnxruntime >= 1.17 runs it.
TARGET_OPSET = 15
ML_OPSET = 3
MATRIX_INPUT = "input"
FAMILIES = ("sklearn", "lightgbm", "xgboost")


@dataclass
class Converted:
    """The ONNX model and how the runner feeds it and reads it (``spec`` goes into signature.json)."""

    model: Any  # onnx.ModelProto
    family: str
    spec: dict[str, Any] = field(default_factory=dict)


def refuse(what: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"cannot export {what} to ONNX: {why}")


def convert(model: LoadedModel) -> Converted:
    """``model`` (loaded from the registry) as ONNX, with the feeding plan; UnsupportedModelError naming the
    step and estimator that cannot be converted."""
    runtime = model.manifest.runtime.name
    datetimes = [c.name for c in model.signature.inputs if c.dtype == "datetime"]
    if datetimes:
        raise refuse(model.ref, f"datetime inputs {datetimes} have no ONNX tensor type; give the model numbers")
    if runtime not in FAMILIES:
        raise refuse(model.ref, f"its runtime is {runtime!r}; shipml exports {', '.join(FAMILIES)} models"
                     + (" (a pyfunc model is Python code, which ONNX cannot hold)" if runtime == "pyfunc" else ""))
    if model.signature.outputs.task not in ("classification", "regression"):
        raise refuse(model.ref, f"its task is {model.signature.outputs.task!r}; shipml exports classifiers"
                     " and regressors")
    if runtime == "sklearn":
        return _sklearn(model)
    if runtime == "lightgbm":
        return _lightgbm(model)
    return _xgboost(model)


# -- scikit-learn ---------------------------------------------------------------------------------------------
def steps(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every estimator inside ``estimator`` with its path (``pre/cat/onehot``), itself first."""
    yield path or type(estimator).__name__, estimator
    prefix = f"{path}/" if path else ""
    children: list[tuple[str, Any]] = []
    if hasattr(estimator, "steps"):  # Pipeline
        children = [(str(name), step) for name, step in estimator.steps]
    elif hasattr(estimator, "transformers_"):  # fitted ColumnTransformer
        children = [(str(name), t) for name, t, _ in estimator.transformers_]
    elif hasattr(estimator, "transformer_list"):  # FeatureUnion
        children = [(str(name), t) for name, t in estimator.transformer_list]
    for name, child in children:
        if isinstance(child, str):  # "drop" / "passthrough"
            continue
        yield from steps(child, prefix + name)


def _supported_sklearn() -> set[type]:
    """The classes skl2onnx converts (its registry, which onnxmltools and users extend), and the containers its
    parser takes apart."""
    supported = import_optional("skl2onnx._supported_operators", "export")
    pipeline = import_optional("sklearn.pipeline", "sklearn")
    return {*supported.sklearn_operator_name_map, pipeline.Pipeline, pipeline.FeatureUnion}


def _check_steps(estimator: Any, ref: str) -> dict[int, tuple[str, Any]]:
    """Every step by object id (its path and itself); refuses the first step no converter knows."""
    known = _supported_sklearn()
    paths: dict[int, tuple[str, Any]] = {}
    for path, step in steps(estimator):
        paths[id(step)] = (path, step)
        name = type(step).__name__
        if type(step) not in known:
            raise refuse(ref, f"step {path!r} is a {name} ({type(step).__module__}), which skl2onnx has no"
                         " converter for")
        if name == "FunctionTransformer" and getattr(step, "func", None) is not None:
            func = getattr(step.func, "__qualname__", repr(step.func))
            raise refuse(ref, f"step {path!r} is a FunctionTransformer calling {func}: Python code cannot be"
                         " converted to ONNX")
    return paths


def _uses_names(estimator: Any) -> bool:
    return any(hasattr(step, "transformers_") for _, step in steps(estimator))


def _failing_step(exc: BaseException, paths: dict[int, tuple[str, Any]]) -> tuple[str, Any] | None:
    """The step the converter was converting when it raised: the innermost frame holding one of ours."""
    tb: types.TracebackType | None = exc.__traceback__
    found: tuple[str, Any] | None = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            raw = getattr(value, "raw_operator", value)
            known = paths.get(id(raw))
            if known is not None and known[1] is raw:
                found = known
        tb = tb.tb_next
    return found


def _run_converter(ref: str, paths: dict[int, tuple[str, Any]], root: Any, convert_fn: Any, tool: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_fn()
    except Exception as exc:  # converters raise anything: translate at the boundary, never a traceback
        step = _failing_step(exc, paths)
        where = f"step {step[0]!r} ({type(step[1]).__name__})" if step else f"the model ({type(root).__name__})"
        raise refuse(ref, f"{tool} failed on {where}: {one_line(exc)}") from None


def _sklearn(model: LoadedModel) -> Converted:
    estimator = getattr(model.runtime_model, "model", None)
    if estimator is None:
        raise refuse(model.ref, "its sklearn runtime holds no estimator")
    paths = _check_steps(estimator, model.ref)
    skl2onnx = import_optional("skl2onnx", "export")
    types_ = import_optional("skl2onnx.common.data_types", "export")
    columns = model.signature.inputs
    by_column = _uses_names(estimator) or any(c.dtype == "string" for c in columns)
    if by_column:
        initial = [(c.name, types_.StringTensorType([None, 1]) if c.dtype == "string"
                    else types_.FloatTensorType([None, 1])) for c in columns]
    else:
        initial = [(MATRIX_INPUT, types_.FloatTensorType([None, len(columns)]))]
    classifier = model.signature.outputs.task == "classification"
    options = {"zipmap": False} if classifier else None
    onnx_model = _run_converter(model.ref, paths, estimator, lambda: skl2onnx.convert_sklearn(
        estimator, initial_types=initial, options=options, target_opset={"": TARGET_OPSET, "ai.onnx.ml": ML_OPSET}),
        "skl2onnx")
    outputs = [o.name for o in onnx_model.graph.output]
    if classifier:
        if len(outputs) < 2:
            raise refuse(model.ref, f"skl2onnx gave outputs {outputs}, not labels and probabilities")
        out = {"label": outputs[0], "probabilities": outputs[1], "labels_from": "onnx"}
    else:
        out = {"value": outputs[0]}
    return Converted(onnx_model, "sklearn", _spec(model, by_column, initial, out))


def _spec(model: LoadedModel, by_column: bool, initial: list[tuple[str, Any]], outputs: dict[str, Any]) \
        -> dict[str, Any]:
    """How records feed the model (``layout``, ``inputs``) and how its outputs read (``outputs``)."""
    def onnx_type(t: Any) -> str:
        return "tensor(string)" if type(t).__name__ == "StringTensorType" else "tensor(float)"

    inputs = [{"name": name, "type": onnx_type(t), **({"column": name} if by_column else {})}
              for name, t in initial]
    signature = model.signature
    return {
        "layout": "columns" if by_column else "matrix",
        "inputs": inputs,
        "null_string": "nan",  # skl2onnx's OneHotEncoder names a NaN category "nan"
        "columns": [{"name": c.name, "dtype": c.dtype, "nullable": c.nullable, "min": c.min, "max": c.max,
                     "categories": c.categories} for c in signature.inputs],
        "outputs": {"task": signature.outputs.task, "classes": signature.outputs.classes,
                    "labels_from": "argmax", **outputs},
    }


# -- LightGBM and XGBoost ------------------------------------------------------------------------------------
def _matrix_only(model: LoadedModel, family: str) -> None:
    text = [c.name for c in model.signature.inputs if c.dtype == "string"]
    if text or model.runtime_model.input_format != "matrix":
        raise refuse(model.ref, f"this {family} model takes pandas categorical columns {text or ''}; the ONNX"
                     " converters take numeric matrices only (encode categories as numbers)")


def _tree_outputs(model: LoadedModel, onnx_model: Any, ref: str) -> dict[str, Any]:
    outputs = [o.name for o in onnx_model.graph.output]
    if model.signature.outputs.task == "classification":
        if not model.signature.outputs.probabilities or len(outputs) < 2:
            raise refuse(ref, "only classifiers that give probabilities can be exported")
        return {"probabilities": outputs[1]}  # labels: the classes in order of the probabilities' argmax
    return {"value": outputs[0]}


def _trees(model: LoadedModel, family: str, booster: Any, run: Any) -> Converted:
    """A LightGBM or XGBoost booster converted by onnxmltools (``run(booster, initial_types)``)."""
    types_ = import_optional("onnxmltools.convert.common.data_types", "export")
    initial = [(MATRIX_INPUT, types_.FloatTensorType([None, len(model.signature.inputs)]))]
    onnx_model = _run_converter(model.ref, {id(booster): ("booster", booster)}, booster,
                                lambda: run(booster, initial), "onnxmltools")
    outputs = _tree_outputs(model, onnx_model, model.ref)
    return Converted(onnx_model, family.lower(), _spec(model, False, initial, outputs))


def _lightgbm(model: LoadedModel) -> Converted:
    _matrix_only(model, "LightGBM")
    booster = model.runtime_model.booster  # type: ignore[attr-defined]
    objective = str(model.manifest.runtime.info.get("objective", ""))
    if objective.startswith(("lambdarank", "rank_xendcg")):
        raise refuse(model.ref, f"LightGBM objective {objective!r} ranks; shipml exports classifiers and"
                     " regressors")
    onnxmltools = import_optional("onnxmltools", "export")
    return _trees(model, "LightGBM", booster, lambda b, initial: onnxmltools.convert_lightgbm(
        b, initial_types=initial, zipmap=False, target_opset=TARGET_OPSET))


def _xgboost(model: LoadedModel) -> Converted:
    _matrix_only(model, "XGBoost")
    booster = model.runtime_model.booster  # type: ignore[attr-defined]
    info = model.manifest.runtime.info
    objective = str(info.get("objective", ""))
    if model.signature.outputs.task == "classification" and objective not in ("binary:logistic", "multi:softprob"):
        raise refuse(model.ref, f"XGBoost objective {objective!r} gives no probabilities to export")
    start, end = (int(v) for v in info.get("iteration_range", (0, 0)))
    if end:  # the registered model predicts with its best iteration: export exactly those trees
        booster = booster[start:end]
    onnxmltools = import_optional("onnxmltools", "export")
    return _trees(model, "XGBoost", booster, lambda b, initial: onnxmltools.convert_xgboost(
        b, initial_types=initial, target_opset=TARGET_OPSET))
