"""``shipml predict``: batch prediction over files (see :func:`shipml.jobs.predict_file`)."""

from __future__ import annotations

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.jobs import DEFAULT_BATCH_SIZE, DEFAULT_PART_ROWS, predict_file

FORMATS = click.Choice(["parquet", "csv", "jsonl"])


@click.command("predict")
@click.argument("ref")
@click.argument("input", nargs=-1, required=True)
@click.option("-o", "--output", required=True, metavar="PATH",
              help="Output file: Parquet unless it ends in .csv or .jsonl (or --output-format says).")
@click.option("--keep-columns", default="", metavar="COL,...", help="Input columns copied to the output (ids).")
@click.option("--proba", is_flag=True, help="Add one proba_<class> column per class.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Rows per model call.")
@click.option("--part-rows", type=click.IntRange(min=1), default=DEFAULT_PART_ROWS, show_default=True,
              help="Rows per part: the unit of work and of resuming.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes on this machine (default: its CPUs); actors / workers for ray and dask.")
@click.option("--engine", type=click.Choice(["local", "ray", "dask"]), default="local", show_default=True,
              help="Where parts are scored.")
@click.option("--address", default=None, metavar="ADDR", help="An existing Ray or Dask cluster.")
@click.option("--rejects", default=None, metavar="PATH",
              help="Rejected rows with their reason (default: OUTPUT's name + .rejects); written only when a row"
              " is rejected.")
@click.option("--input-format", type=FORMATS, default=None, help="Input format (default: from the extension).")
@click.option("--output-format", type=FORMATS, default=None, help="Output format (default: from the extension).")
@click.option("--log", "log_dir", default=None, metavar="DIR",
              help="Log every scored row to this prediction-log directory (request id: the job's id).")
@click.option("--trust", is_flag=True, help="Allow a model whose format can run code when loaded.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary (errors still go to stderr).")
@click.pass_obj
@handle_errors
def predict(obj: Context, ref: str, input: tuple[str, ...], output: str, keep_columns: str, proba: bool,
            batch_size: int, part_rows: int, workers: int | None, engine: str, address: str | None,
            rejects: str | None, input_format: str | None, output_format: str | None, log_dir: str | None,
            trust: bool, quiet: bool) -> None:
    """Score INPUT (CSV, Parquet or JSON-lines files, a directory or a glob) with model REF.

    Memory stays flat whatever the input size. Rows that break the model's signature go to the rejects file
    with their reason. A killed run, started again with the same arguments, resumes where it stopped.
    """
    report = predict_file(
        ref, list(input), output, registry=obj.registry(),
        keep_columns=[c.strip() for c in keep_columns.split(",") if c.strip()], proba=proba,
        batch_size=batch_size, part_rows=part_rows, workers=workers, engine=engine,  # type: ignore[arg-type]
        address=address, rejects=rejects, input_format=input_format, output_format=output_format,
        trusted=True if trust else None, quiet=quiet, log=log_dir,
    )
    if obj.as_json:
        emit_json(report.to_dict())
    elif not quiet:
        click.echo(report.summary())


def register(group: click.Group) -> None:
    group.add_command(predict)
