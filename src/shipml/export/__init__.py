"""Edge export: a registered model as an ONNX bundle that runs with onnxruntime and numpy alone, its parity with
the registered model proved (:func:`export_onnx`); and a LightGBM model as a native library with a C header
(:func:`export_compiled`)."""

from __future__ import annotations

from shipml.export.bundle import ExportResult, Quantize, export_onnx, json_schema
from shipml.export.compiled import CompiledResult, export_compiled
from shipml.export.parity import TOLERANCE, ParityError, ParityReport

__all__ = [
    "TOLERANCE",
    "CompiledResult",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "Quantize",
    "export_compiled",
    "export_onnx",
    "json_schema",
]
