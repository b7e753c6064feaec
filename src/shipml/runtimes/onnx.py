"""ONNX models (``onnx.ModelProto``): checked with onnx.checker, saved as ``model.onnx``, run by onnxruntime
on CPU.

Inputs: one 2-D numeric tensor takes the whole signature as a matrix; otherwise each input is one signature
column, fed from a DataFrame (skl2onnx's per-column inputs, string tensors included). Outputs: the first is
the prediction (labels for a classifier); a second one, when the first gives labels, is the class
probabilities, as a tensor or as skl2onnx's ZipMap (a list of dicts per row). A ZipMap is cut off the graph
when the session is built, so probabilities come back as one (n, k) tensor without a Python loop over rows;
the file on disk stays the user's model, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from shipml._optional import import_optional
from shipml.errors import SchemaError, UnsupportedModelError
from shipml.runtimes.base import (
    NOTHING_NEEDED,
    Grant,
    InputFormat,
    ModelFiles,
    SaveContext,
    Saved,
    TrustNeed,
    is_instance_of,
)

FILE = "model.onnx"

#: onnxruntime type string -> numpy dtype to feed it.
FEED_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": object,
}
MATRIX_TYPES = ("tensor(float)", "tensor(double)", "tensor(int64)")
LABEL_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(string)", "tensor(bool)")
PROBA_TYPES = ("tensor(float)", "tensor(double)")


def _onnx() -> Any:
    return import_optional("onnx", "onnx")


def _ort() -> Any:
    return import_optional("onnxruntime", "onnx")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _session(data: bytes, threads: int) -> Any:
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # serving is parallel across requests, not inside one
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _zipmap_node(graph: Any, output: str) -> Any:
    """The ZipMap node producing graph output ``output``, if nothing else reads that output."""
    node = next((n for n in graph.node if n.op_type == "ZipMap" and output in n.output), None)
    if node is None or any(output in n.input for n in graph.node):
        raise UnsupportedModelError(f"ONNX output {output!r} is a sequence of maps not made by a ZipMap;"
                                    " shipml reads probabilities from a tensor or a ZipMap")
    return node


def _zipmap_classes(node: Any) -> list[Any]:
    for attribute in node.attribute:
        if attribute.name == "classlabels_int64s":
            return [int(c) for c in attribute.ints]
        if attribute.name == "classlabels_strings":
            return [c.decode() for c in attribute.strings]
    raise UnsupportedModelError("the model's ZipMap names no class labels")


def _without_zipmap(data: bytes, output: str) -> tuple[bytes, str]:
    """The model with the ZipMap behind ``output`` removed, and the name of the (n, k) tensor it read."""
    onnx = _onnx()
    model = onnx.load_from_string(data)
    graph = model.graph
    node = _zipmap_node(graph, output)
    tensor = str(node.input[0])
    outputs = list(graph.output)
    position = [o.name for o in outputs].index(output)
    replacement = [onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)]
    if tensor in {o.name for o in outputs}:
        replacement = []
    del graph.output[:]
    graph.output.extend(outputs[:position] + replacement + outputs[position + 1:])
    graph.node.remove(node)
    return model.SerializeToString(), tensor


def _flat(out: Any) -> np.ndarray:
    array = np.asarray(out)
    return array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array


def _column(values: pd.Series, dtype: Any, rank: int | None) -> np.ndarray:
    array = values.to_numpy(dtype=dtype)
    return array if rank == 1 else array.reshape(-1, 1)


class OnnxLoaded:
    def __init__(self, session: Any, info: dict[str, Any]) -> None:
        self.session = session
        self.input_format: InputFormat = info["input_format"]
        self.classes: list[Any] | None = info.get("classes")
        self._inputs = [(str(i["name"]), FEED_TYPES[i["type"]], i["rank"]) for i in info["inputs"]]
        self._label: str = info["label_output"]
        self._proba: str | None = info.get("proba_output")

    def _feed(self, X: Any) -> dict[str, np.ndarray]:
        if self.input_format == "matrix":
            name, dtype, _ = self._inputs[0]
            return {name: np.asarray(X, dtype=dtype)}
        return {name: _column(X[name], dtype, rank) for name, dtype, rank in self._inputs}

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        labels, proba = self.session.run([self._label, self._proba], self._feed(X))
        return _flat(labels), np.asarray(proba, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        return _flat(self.session.run([self._label], self._feed(X))[0])

    def predict_proba(self, X: Any) -> np.ndarray | None:
        if self._proba is None:
            return None
        return self.predict_with_proba(X)[1]


def _input_plan(session: Any, sample: pd.DataFrame) -> tuple[InputFormat, list[dict[str, Any]]]:
    """How the signature's columns feed the model's inputs, checked against the sample."""
    columns = [str(c) for c in sample.columns]
    inputs = [{"name": i.name, "type": i.type, "rank": len(i.shape) if i.shape is not None else None,
               "shape": list(i.shape or [])} for i in session.get_inputs()]
    unknown = [i["type"] for i in inputs if i["type"] not in FEED_TYPES]
    if unknown:
        raise UnsupportedModelError(f"ONNX input types {unknown} are not supported"
                                    f" (supported: {', '.join(FEED_TYPES)})")
    if len(inputs) == 1 and inputs[0]["type"] in MATRIX_TYPES and inputs[0]["rank"] == 2:
        width = inputs[0]["shape"][1]
        if isinstance(width, int) and width != len(columns):
            raise SchemaError(f"sample has {len(columns)} columns, the ONNX input {inputs[0]['name']!r}"
                              f" takes {width}")
        text = [c for c in columns if not (pd.api.types.is_numeric_dtype(sample[c])
                                           or pd.api.types.is_bool_dtype(sample[c]))]
        if text:
            raise SchemaError(f"the ONNX model takes one numeric matrix, but sample columns {text}"
                              " are not numeric")
        return "matrix", [{k: i[k] for k in ("name", "type", "rank")} for i in inputs]
    names = [i["name"] for i in inputs]
    if sorted(names) != sorted(columns):
        raise SchemaError(f"the ONNX model's inputs {names} must be named after the sample's columns"
                          f" {columns} (one input per column), or be one 2-D numeric tensor")
    wide = [i["name"] for i in inputs if i["rank"] not in (1, 2) or (
        i["rank"] == 2 and isinstance(i["shape"][1], int) and i["shape"][1] != 1)]
    if wide:
        raise SchemaError(f"ONNX inputs {wide} take more than one column each; shipml feeds one column"
                          " per input, shaped [n] or [n, 1]")
    return "frame", [{k: i[k] for k in ("name", "type", "rank")} for i in inputs]


def _derived_classes(labels: np.ndarray, proba: np.ndarray) -> list[Any]:
    """The class of each probability column, read off the labels the model gives on the sample: the label
    of the rows where that column wins, when that is unambiguous; else the sorted labels; else 0..k-1."""
    k = proba.shape[1]
    uniques = pd.unique(labels)
    if len(uniques) != k:
        return list(range(k))
    winners = np.argmax(proba, axis=1)
    per_column = [pd.unique(labels[winners == j]) for j in range(k)]
    if all(len(p) == 1 for p in per_column):
        return [_plain(p[0]) for p in per_column]
    return [_plain(u) for u in sorted(uniques)]


class OnnxRuntime:
    name: ClassVar[str] = "onnx"
    api_version: ClassVar[int] = 1

    def handles(self, model: Any) -> bool:
        return is_instance_of(model, "onnx", "ModelProto")

    def save(self, model: Any, directory: Path, context: SaveContext) -> Saved:
        onnx = _onnx()
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise UnsupportedModelError("the ONNX model keeps tensors in external files; load them into the"
                                        " model (onnx.load(..., load_external_data=True)) before saving")
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise UnsupportedModelError(f"the ONNX model fails onnx.checker: {exc}") from exc
        data: bytes = model.SerializeToString()
        outputs = list(model.graph.output)
        if not outputs:
            raise UnsupportedModelError("the ONNX model has no outputs")
        info: dict[str, Any] = {"label_output": outputs[0].name, "proba_output": None, "zipmap": None,
                                "intra_op_num_threads": int(context.options.get("intra_op_num_threads", 1))}
        classes: list[Any] | None = None
        served = data
        if len(outputs) > 1 and outputs[1].type.WhichOneof("value") == "sequence_type":
            classes = _zipmap_classes(_zipmap_node(model.graph, outputs[1].name))
            served, info["proba_output"] = _without_zipmap(data, outputs[1].name)
            info["zipmap"] = outputs[1].name
        try:
            session = _session(served, info["intra_op_num_threads"])
        except Exception as exc:  # onnxruntime's own errors: translate them at the boundary
            raise UnsupportedModelError(f"onnxruntime cannot load the model: {type(exc).__name__}: {exc}") \
                from exc
        types = {o.name: o.type for o in session.get_outputs()}
        label_type = types[info["label_output"]]
        if info["proba_output"] is None and len(outputs) > 1 and label_type in LABEL_TYPES:
            second = next(o for o in session.get_outputs() if o.name == outputs[1].name)
            if second.type in PROBA_TYPES and len(second.shape or []) == 2:
                info["proba_output"] = second.name
        info["input_format"], info["inputs"] = _input_plan(session, context.sample)
        if info["proba_output"] is not None:
            loaded = OnnxLoaded(session, info)
            sample = context.sample.to_numpy(dtype=np.float64) if info["input_format"] == "matrix" \
                else context.sample
            try:
                labels, proba = loaded.predict_with_proba(sample)
            except Exception as exc:  # onnxruntime's own errors: translate them at the boundary
                raise SchemaError(f"the ONNX model failed on its sample: {type(exc).__name__}: {exc}") \
                    from exc
            classes = self._classes(classes, context.options.get("classes"), labels, proba)
        info["classes"] = classes
        (directory / FILE).write_bytes(data)
        task: Literal["classification", "regression"] | None = "classification" \
            if info["proba_output"] is not None else "regression" if label_type in PROBA_TYPES else None
        return Saved(files=[FILE], requirements=["onnx", "onnxruntime"], info=info, task=task)

    @staticmethod
    def _classes(zipmap: list[Any] | None, given: Any, labels: np.ndarray, proba: np.ndarray) -> list[Any]:
        k = proba.shape[1] if proba.ndim == 2 else 0
        if zipmap is not None:
            chosen = zipmap
        elif given is not None:
            chosen = [_plain(c) for c in given]
        else:
            chosen = _derived_classes(labels, proba)
        if len(chosen) != k:
            raise SchemaError(f"the model gives {k} probability columns but {len(chosen)} classes: {chosen}")
        return chosen

    def trust_needed(self, files: ModelFiles, *, sealed: bool) -> TrustNeed:
        return NOTHING_NEEDED  # a graph of standard operators run by onnxruntime (no custom-op library is loaded)

    def load(self, files: ModelFiles, info: dict[str, Any], grant: Grant) -> OnnxLoaded:
        data = files.read_bytes(FILE)
        if info.get("zipmap"):
            data, _ = _without_zipmap(data, info["zipmap"])
        return OnnxLoaded(_session(data, int(info.get("intra_op_num_threads", 1))), info)


RUNTIME = OnnxRuntime()
