"""``shipml export``: a registered model as an edge bundle (ONNX, run by onnxruntime and numpy alone), its parity
with the registered model proved before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shipml.api import load_model
from shipml.cli._common import Context, emit_json, handle_errors


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _parity_line(parity: dict[str, Any]) -> str:
    rows = parity["golden_rows"] + parity["drawn_rows"]
    tol = ", ".join(f"{k}={v:g}" for k, v in parity["tolerance"].items())
    worst = [f"max probability difference {parity['max_proba_diff']:.2g}" if parity["max_proba_diff"] is not None
             else "", f"max value difference {parity['max_value_diff']:.2g}" if parity["max_value_diff"] is not None
             else "", f"labels agree on {parity['label_agreement']:.2%}" if parity["label_agreement"] is not None
             else ""]
    return (f"{rows} rows ({parity['golden_rows']} golden, {parity['drawn_rows']} drawn across every input's range),"
            f" {parity['rows_differing']} differ beyond {tol}; " + ", ".join(w for w in worst if w))


@click.command("export")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["onnx", "compiled"]), default="onnx", show_default=True,
              help="onnx: model.onnx with a runner needing only onnxruntime and numpy; compiled: a LightGBM"
              " model as a native library (model.so) with a C header (model.h).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory to create (must not exist, or be empty).")
@click.option("--quantize", type=click.Choice(["int8", "float16"]),
              help="Quantise the ONNX model with onnxruntime; its parity is measured and reported, not required.")
@click.option("--rows", type=click.IntRange(1, 1_000_000), default=3000, show_default=True,
              help="Rows drawn across the inputs' ranges for the parity proof (besides the golden sample).")
@click.pass_obj
@handle_errors
def export_command(obj: Context, *, ref: str, fmt: str, output: Path, quantize: str | None, rows: int) -> None:
    """Export REF as an edge bundle in OUTPUT, after proving that the exported model's outputs equal REF's on the
    golden sample and on rows drawn across every input's range (labels exactly, probabilities within 1e-5).

    A model that cannot be converted is refused with the step and estimator that stop it; an export whose
    outputs differ is refused with the rows that differ. Prints the bundle's size and its runner's per-row
    latency."""
    from shipml.errors import ShipmlError
    from shipml.export import export_compiled, export_onnx

    if fmt == "compiled" and quantize is not None:
        raise ShipmlError("--quantize applies to --format onnx; a compiled library computes in doubles")
    model = load_model(ref, registry=obj.registry())
    if fmt == "compiled":
        compiled = export_compiled(model, output, rows=rows)
        if obj.as_json:
            emit_json({"ref": model.ref, "format": fmt, **compiled.to_dict()})
            return
        click.echo(f"exported {model.ref} as a compiled library to {compiled.directory} (model.so, model.h)")
        click.echo(f"parity: {compiled.rows_compared} rows, max difference {compiled.max_diff:.2g}"
                   f" (atol {compiled.to_dict()['parity']['atol']:g})")
        click.echo(f"bundle size: {_size(compiled.size_bytes)} ({compiled.size_bytes} bytes)")
        return
    result = export_onnx(model, output, quantize=quantize, rows=rows)  # type: ignore[arg-type]
    if obj.as_json:
        emit_json({"ref": model.ref, "format": fmt, **result.to_dict()})
        return
    click.echo(f"exported {model.ref} ({result.family}) to {result.directory}")
    click.echo(f"parity: {_parity_line(result.parity.to_dict())}")
    if result.quantized_parity is not None:
        click.echo(f"{quantize} parity (reported, not required): {_parity_line(result.quantized_parity.to_dict())}")
    click.echo(f"bundle size: {_size(result.size_bytes)} ({result.size_bytes} bytes)")
    click.echo(f"runner latency: {result.us_per_row:.1f} us per row (single-row predictions)")
    click.echo(f"run it: python {result.directory / 'predict.py'} RECORDS.json")


def register(group: click.Group) -> None:
    group.add_command(export_command)
