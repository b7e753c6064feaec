"""`shipml predict-sample`: a quick, in-process look at what a model predicts for the first rows of a file."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click
import numpy as np

from shipml.api import load_model
from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.errors import SchemaError
from shipml.evaluation.data import read_table, string_columns
from shipml.package.signature import to_jsonable

_WARNINGS_SHOWN = 5


def register(group: click.Group) -> None:
    group.add_command(predict_sample)


@click.command("predict-sample")
@click.argument("ref")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--proba", is_flag=True, help="Also show class probabilities (classifiers).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Predict on the first N rows only.")
@click.pass_obj
@handle_errors
def predict_sample(ctx: Context, ref: str, file: str, proba: bool, limit: int) -> None:
    """Predict with REF on the first rows of FILE (CSV, Parquet or JSON lines), in this process.
    Columns the model does not take are ignored; rows breaking the signature stop it with one error.
    For whole files use batch prediction, for a service `serve`."""
    model = load_model(ref, registry=ctx.registry())
    if proba and not model.has_proba:
        raise SchemaError(f"{model.ref} gives no probabilities (task: {model.signature.outputs.task})")
    frame = read_table(file, text_columns=string_columns([model.signature]), limit=limit)
    checked = model.check(frame, replace(model.policy, extra_columns="ignore"))
    checked.raise_for_errors()
    result = model.infer(checked.table, proba=proba)
    predictions = result.predictions.reshape(len(result.predictions), -1)[:, 0] \
        if result.predictions.ndim > 1 else result.predictions
    classes = [str(c) for c in model.classes or []]
    records: list[dict[str, Any]] = []
    for i, value in enumerate(predictions):
        record: dict[str, Any] = {"row": i, "prediction": to_jsonable(value)}
        if result.probabilities is not None:
            record["probabilities"] = dict(zip(classes, np.asarray(result.probabilities[i]).tolist(),
                                               strict=False))
        records.append(record)
    warnings = [p for p in checked.problems if p.severity == "warning"]
    ignored = [c for c in frame.columns if c not in set(model.signature.names)]
    if ctx.as_json:
        emit_json({"model": model.ref, "rows": len(records), "predictions": records,
                   "warnings": [p.to_dict() for p in warnings], "ignored_columns": ignored})
        return
    headers = ["row", "prediction"] + [f"p({c})" for c in classes if result.probabilities is not None]
    rows = [[r["row"], r["prediction"]] + [f"{p:.4f}" for p in r.get("probabilities", {}).values()]
            for r in records]
    click.echo(f"{model.ref}: {len(records)} row(s) of {file}")
    click.echo(table(headers, rows))
    if ignored:
        click.echo(f"ignored columns the model does not take: {', '.join(ignored)}", err=True)
    for p in warnings[:_WARNINGS_SHOWN]:
        click.echo(f"warning: {p}", err=True)
    if checked.n_warnings > _WARNINGS_SHOWN:
        click.echo(f"warning: ... {checked.n_warnings - _WARNINGS_SHOWN} more", err=True)
