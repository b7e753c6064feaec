"""``shipml import``: bring a model file made elsewhere (pickle, skops, LightGBM, XGBoost, ONNX, an MLflow
model or a shipml package) into the registry."""

from __future__ import annotations

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
    pickle. The model is stored in a safe format when one exists, with the source file's sha256 in its tags.
    """
    mv = import_model(path, name, sample=sample, target=target, trusted=trust, registry=obj.registry(),
                      version=version, description=description)
    if obj.as_json:
        manifest = mv.manifest
        emit_json({"ref": mv.ref, "name": mv.name, "version": mv.version, "path": str(mv.path),
                   "runtime": manifest.runtime.name, "trusted": manifest.trust.required,
                   "tags": manifest.tags})
    else:
        click.echo(mv.ref)


def register(group: click.Group) -> None:
    group.add_command(import_command)
