"""`shipml drift`: how far a data file (a batch job's input, a day of traffic) is from a model's training data."""

from __future__ import annotations

import math
from typing import Any

import click

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.monitoring.drift import FeatureDrift, PredictionDrift, counts_of_files, drift
from shipml.monitoring.reference import Reference
from shipml.registry.names import Ref


def register(group: click.Group) -> None:
    group.add_command(drift_command)


@click.command("drift")
@click.argument("ref")
@click.argument("data")
@click.option("--predict", is_flag=True,
              help="Also run the model on DATA and compare its predictions with those on the training data.")
@click.option("--top", type=click.IntRange(1, None), default=None, help="Show the N most drifted features only.")
@click.pass_obj
@handle_errors
def drift_command(ctx: Context, ref: str, data: str, predict: bool, top: int | None) -> None:
    """Compare DATA (CSV, Parquet or JSON lines; a file, directory or glob) with the training data of REF.

    Per input feature, most drifted first: PSI (< 0.1 stable, > 0.25 large shift), the binned Kolmogorov-Smirnov
    statistic (numbers), chi-squared and Cramér's V (categories), and the shares of nulls, of values outside the
    training range and of categories training never saw. Columns the model does not take are ignored."""
    model = None
    if predict:
        from shipml.api import load_model

        model = load_model(ref, registry=ctx.registry())
        reference = Reference.from_model(model)
    else:
        reference = _reference(ctx, ref)
    counts, unparsed = counts_of_files(reference, data, model=model)
    report = drift(reference, counts)
    if unparsed:
        click.echo(f"warning: {unparsed} line(s) of {data} could not be parsed and were skipped", err=True)
    if ctx.as_json:
        emit_json({**report.to_dict(), "data": data, "unparsed_rows": unparsed,
                   "features": [f.to_dict() for f in report.features[:top]]})
        return
    click.echo(f"{reference.model}:{reference.version}: {report.rows} row(s) of {data} against"
               f" {report.reference_rows} training row(s)")
    if not report.enough:
        click.echo("no rows to compare")
        return
    click.echo(table(["feature", "kind", "psi", "ks", "chi2", "cramers_v", "null (train -> now)", "out_of_range",
                      "unseen"], [_row(f) for f in report.features[:top]]))
    if top is not None and top < len(report.features):
        click.echo(f"... {len(report.features) - top} more feature(s)")
    if report.prediction is not None and predict:
        click.echo(_prediction_line(report.prediction))


def _reference(ctx: Context, ref: str) -> Reference:
    parsed = Ref.parse(ref)
    if parsed.path is not None:
        return Reference.from_package(parsed.path)
    registry = ctx.registry()
    version = registry.get(parsed)
    return Reference.from_package(registry.directory(version), version.manifest)


def _num(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _row(f: FeatureDrift) -> list[Any]:
    return [f.name, f.kind, _num(f.psi), _num(f.ks), _num(f.chi2, 1), _num(f.cramers_v),
            f"{_num(f.reference_null_share)} -> {_num(f.null_share)}", _num(f.out_of_range_share),
            _num(f.unseen_share)]


def _prediction_line(p: PredictionDrift) -> str:
    if p.kind == "numeric":
        return (f"prediction: psi {_num(p.psi)}, ks {_num(p.ks)}, mean {_num(p.mean, 4)} (training"
                f" {_num(p.reference_mean, 4)}) over {p.rows} predicted row(s)")
    shares = ", ".join(f"{label} {_num(p.shares.get(label, math.nan))} (training {_num(share)})"
                       for label, share in p.reference_shares.items())
    return f"prediction: psi {_num(p.psi)}, chi2 {_num(p.chi2, 1)}; shares {shares} over {p.rows} predicted row(s)"
