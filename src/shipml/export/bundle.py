"""The edge bundle: a directory that predicts anywhere onnxruntime and numpy run, with its parity proved.

::

    model.onnx      the model; its metadata holds the signature (``shipml.signature``) and each input's
                    doc_string says which column it takes
    signature.json  JSON Schema of one input record; ``x-shipml`` says how records feed the model
    golden.json     golden records and the outputs they must give, with the tolerance
    predict.py      the runner (onnxruntime + numpy only): checks hashes and the golden sample, then predicts
    manifest.json   source model, parity report, and the sha256 of every other file

The directory is written beside its destination and renamed into place once complete, so a failed export
leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shipml._optional import import_optional
from shipml.errors import ConflictError, UnsupportedModelError
from shipml.export import runner
from shipml.export.convert import Converted, convert
from shipml.export.parity import (
    TOLERANCE,
    ParityReport,
    drawn_records,
    expected,
    golden_records,
    measure,
    prove,
    registered_outputs,
    with_scale,
)
from shipml.package.loaded import LoadedModel, one_line

Quantize = Literal["int8", "float16"]
BUNDLE_FORMAT = 1
RUNNER_REQUIRES = ["onnxruntime", "numpy"]
BENCH_CALLS = 300


@dataclass
class ExportResult:
    directory: Path
    family: str
    size_bytes: int
    us_per_row: float
    parity: ParityReport
    quantize: Quantize | None = None
    quantized_parity: ParityReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "family": self.family, "size_bytes": self.size_bytes,
                "us_per_row": round(self.us_per_row, 1), "parity": self.parity.to_dict(), "quantize": self.quantize,
                "quantized_parity": self.quantized_parity.to_dict() if self.quantized_parity else None}


def json_schema(model: LoadedModel) -> dict[str, Any]:
    """JSON Schema (2020-12) of one input record: every column required, nothing else allowed."""
    properties: dict[str, Any] = {}
    for c in model.signature.inputs:
        kind = {"int": "integer", "float": "number", "bool": "boolean", "string": "string"}[c.dtype]
        prop: dict[str, Any] = {"type": [kind, "null"] if c.nullable else kind}
        if c.dtype == "string" and c.categories is not None:
            prop["enum"] = [*c.categories, *([None] if c.nullable else [])]
        if isinstance(c.min, int | float) and isinstance(c.max, int | float):
            prop["description"] = f"training range [{c.min:g}, {c.max:g}] (values outside it are accepted)"
        properties[c.name] = prop
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"input record of {model.ref}",
            "type": "object", "properties": properties, "required": model.signature.names,
            "additionalProperties": False}


def _with_metadata(converted: Converted, model: LoadedModel) -> bytes:
    """The model with the signature in its metadata and on each input; serialised."""
    onnx_model = converted.model
    spec = converted.spec
    columns = {c["name"]: c for c in spec["columns"]}
    for graph_input in onnx_model.graph.input:
        column = columns.get(graph_input.name)
        if column is not None:
            graph_input.doc_string = json.dumps(column)
        elif spec["layout"] == "matrix":
            graph_input.doc_string = json.dumps({"columns": [c["name"] for c in spec["columns"]]})
    props = {"shipml.signature": json.dumps(spec["columns"]), "shipml.source": model.ref,
             "shipml.outputs": json.dumps(spec["outputs"])}
    del onnx_model.metadata_props[:]
    for key, value in props.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.producer_name = "shipml"
    data: bytes = onnx_model.SerializeToString()
    return data


def quantized(data: bytes, how: Quantize, work: Path) -> bytes:
    """``data`` quantised by onnxruntime: int8 weights (dynamic quantisation of MatMul/Gemm) or float16."""
    onnx = import_optional("onnx", "export")
    muted = logging.root.manager.disable
    logging.disable(logging.WARNING)  # onnxruntime's quantiser advises on the root logger at every call
    try:
        if how == "int8":
            quantization = import_optional("onnxruntime.quantization", "export")
            source, target = work / "float.onnx", work / "int8.onnx"
            source.write_bytes(data)
            quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8)
            return target.read_bytes()
        float16 = import_optional("onnxruntime.transformers.float16", "export")
        model = float16.convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True)
        result: bytes = model.SerializeToString()
        return result
    except Exception as exc:  # the quantisers' own errors: translated here
        raise UnsupportedModelError(f"onnxruntime cannot quantise this model to {how}: {one_line(exc)}") from exc
    finally:
        logging.disable(muted)


def _files(directory: Path, model_bytes: bytes, spec: dict[str, Any], schema: dict[str, Any],
           golden: dict[str, Any], manifest: dict[str, Any]) -> None:
    (directory / runner.MODEL).write_bytes(model_bytes)
    (directory / runner.SIGNATURE).write_text(json.dumps({**schema, "x-shipml": spec}, indent=1), encoding="utf-8")
    (directory / runner.GOLDEN).write_text(json.dumps(golden), encoding="utf-8")
    shutil.copyfile(Path(runner.__file__), directory / "predict.py")
    hashes = {p.name: runner.sha256_bytes(p.read_bytes()) for p in sorted(directory.iterdir())}
    (directory / runner.MANIFEST).write_text(json.dumps({**manifest, "files": hashes}, indent=1), encoding="utf-8")


def check_destination(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"{out} exists and is not an empty directory; choose a new one")


def export_onnx(model: LoadedModel, out: str | Path, *, quantize: Quantize | None = None,
                rows: int = 3000) -> ExportResult:
    """Convert ``model``, prove parity, and write the bundle to ``out`` (a new or empty directory).

    Refused (UnsupportedModelError) when it cannot be converted, naming the step and estimator; refused
    (ParityError, listing the rows) when the export's outputs differ from the model's. With ``quantize``, the
    float model must pass; the quantised one's parity is measured and reported, and its golden file states
    what the quantised model gives, so the runner checks the bundle it ships."""
    out = Path(out)
    check_destination(out)
    converted = convert(model)
    data = _with_metadata(converted, model)
    spec = converted.spec
    parity = prove(model, _predictor(data, spec), rows=rows)
    golden = golden_records(model)
    labels, proba = registered_outputs(model, golden)
    quantized_report: ParityReport | None = None
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if quantize is not None:
            data = quantized(data, quantize, work)
            predictor = _predictor(data, spec, f"quantised to {quantize}")
            records = golden + drawn_records(model.signature.inputs, rows)
            quantized_report = measure(model, predictor, records, len(golden))
            labels, proba = predictor.run(golden)  # the bundle's golden sample is what it ships
        want = expected(labels, proba)
        golden_doc = {"records": golden, "expected": want,
                      "tolerance": with_scale(TOLERANCE, want["predictions"], parity.task)}
        manifest = {"format": "shipml-edge-bundle", "format_version": BUNDLE_FORMAT, "source": model.ref,
                    "family": converted.family, "runtime": model.manifest.runtime.name,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "runner_requires": RUNNER_REQUIRES, "quantize": quantize, "parity": parity.to_dict(),
                    "quantized_parity": quantized_report.to_dict() if quantized_report else None}
        bundle_dir = work / "bundle"
        bundle_dir.mkdir()
        _files(bundle_dir, data, spec, json_schema(model), golden_doc, manifest)
        bundle = runner.Bundle(bundle_dir)  # the bundle as its users will: hashes, then the golden sample
        us_per_row = runner.bench(bundle, BENCH_CALLS)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(bundle_dir, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir())
    return ExportResult(out, converted.family, size, us_per_row, parity, quantize, quantized_report)


def _predictor(data: bytes, spec: dict[str, Any], what: str = "converted") -> runner.Predictor:
    try:
        return runner.Predictor(data, spec)
    except Exception as exc:  # onnxruntime refusing what the converter (or quantiser) made
        raise UnsupportedModelError(f"onnxruntime cannot run the model {what}: {one_line(exc)}") from exc

