"""``shipml import``: bring a model file made elsewhere (pickle, skops, LightGBM, XGBoost, ONNX, an MLflow
model or a shipml package) into the registry."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.package.importer import import_model


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Model name to store it under.")
@click.option("--sample", "sample", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV or Parquet file of typical inputs (optional for an MLflow model with an input"
              " example).")
@click.option("--target", help="Column of the sample holding the labels (dropped from the inputs).")
@click.option("--trust", is_flag=True,
              help="Allow formats that run code when loaded (pickle, joblib, unknown skops types).")
@click.option("--version", "version", help="Version to create (default: the next minor version).")
@click.option("--description", help="What this model is.")
@click.pass_obj
@handle_errors
def import_command(obj: Context, *, path: Path, name: str, sample: Path | None, target: str | None,
                   trust: bool, version: str | None, description: str | None) -> None:
    """Import the model at PATH as a new version of --name; anything that can run code needs --trust.

    The format is read from the file's content as well as its name: a pickle renamed model.onnx is still a
    pickle. The model is stored in a safe format when one exists, with the source file's sha256 in its tags and
    the source (for an MLflow model: its run, artifact path, creation time and MLflow version) in its lineage.
    Without --sample, an MLflow model's input example gives the signature: a few rows whose ranges most real rows
    fall outside (a warning says so); give --sample with typical training rows.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        mv = import_model(path, name, sample=sample, target=target, trusted=trust, registry=obj.registry(),
                          version=version, description=description)
    notes = [str(w.message) for w in caught]
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    if obj.as_json:
        manifest = mv.manifest
        emit_json({"ref": mv.ref, "name": mv.name, "version": mv.version, "path": str(mv.path),
                   "runtime": manifest.runtime.name, "trusted": manifest.trust.required,
                   "tags": manifest.tags, "warnings": notes,
                   "imported_from": manifest.lineage.imported_from.model_dump(mode="json")
                   if manifest.lineage.imported_from is not None else None})
    else:
        click.echo(mv.ref)


def register(group: click.Group) -> None:
    group.add_command(import_command)
